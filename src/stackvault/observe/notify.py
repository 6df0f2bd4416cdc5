"""Notifications when a job fails or ends with warnings, and a daily summary, to any apprise URL.

apprise speaks e-mail, webhooks and the chat services an operator already uses, from one URL each
(`[notify] urls`). Those URLs hold tokens and passwords, so nothing here prints, logs or stores one:
a target is named by its scheme and host alone, with apprise's own masking, and apprise's log lines
are kept from the process's logging and scrubbed of every part of the URL before they are quoted.
A target that is down never fails or holds up the job: each one is sent to on its own thread, and
whatever has not finished within `[notify] timeout` seconds is given up with one warning line.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from ..config import NotifySettings
from ..engine.repository import hostname
from ..errors import warn


class Event(StrEnum):
    """What a notification is about; `[notify] on` lists the ones wanted."""

    FAILURE = "failure"
    WARNING = "warning"
    SUMMARY = "summary"


FAILED_STATUSES = ("failed", "partial", "interrupted")


@dataclass
class Item:
    """One server, volume or disk of a job, as its report says it ended."""

    name: str
    status: str
    error: str = ""  # the error line, with its fix in parentheses
    consistency: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class JobEnd:
    job_id: str | None
    kind: str
    status: str
    items: list[Item] = field(default_factory=list)
    consistency: str | None = None
    message: str = ""

    @property
    def event(self) -> Event | None:
        if self.status in FAILED_STATUSES:
            return Event.FAILURE
        return Event.WARNING if self.status == "warning" else None

    def title(self) -> str:
        word = "failed" if self.event is Event.FAILURE else "ended with warnings"
        return f"stackvault: {self.kind} {word} on {hostname()}"

    def body(self) -> str:
        lines = [f"Job {self.job_id or '(not recorded)'}: {self.kind}, {self.status}, on {hostname()}"]
        if self.message:
            lines.append(f"Reason: {self.message}")
        if self.consistency:
            lines.append(f"Consistency: {self.consistency}")
        for item in self.items:
            line = f"- {item.name}: {item.status}"
            if item.consistency:
                line += f" ({item.consistency})"
            if item.error:
                line += f": {item.error}"
            lines.append(line)
            lines += [f"    warning: {w}" for w in item.warnings]
        return "\n".join(lines)


def job_ended(settings: NotifySettings, end: JobEnd) -> list[str]:
    """Sends a failure or warning notification for a job that ended, when `[notify]` asks for it;
    returns the targets it reached (by their names, without secrets)."""
    event = end.event
    if event is None or event not in settings.on or not settings.urls:
        return []
    return send(settings, end.title(), end.body(), event)


def send(settings: NotifySettings, title: str, body: str, event: Event) -> list[str]:
    """To every URL at once; warns (one line each) about those that failed or did not finish in time."""
    import apprise

    kind = {Event.FAILURE: apprise.NotifyType.FAILURE, Event.WARNING: apprise.NotifyType.WARNING,
            Event.SUMMARY: apprise.NotifyType.INFO}[event].value
    deliveries = [_Delivery(url) for url in settings.urls]
    with _apprise_logs() as logs:
        for d in deliveries:
            d.thread = threading.Thread(target=d.run, args=(title, body, kind, logs), name="sv-notify", daemon=True)
            d.thread.start()
        deadline = time.monotonic() + settings.timeout
        for d in deliveries:
            assert d.thread is not None
            d.thread.join(max(0.0, deadline - time.monotonic()))
    reached = []
    for d in deliveries:
        if d.done and d.ok:
            reached.append(d.name)
        elif not d.done:
            warn(f"notification to {d.name} did not finish within {settings.timeout:g} s: given up "
                 "(raise [notify] timeout, or check the target)")
        else:
            warn(f"notification to {d.name} failed: {d.reason or 'the target refused it'} (check the URL in "
                 "[notify] urls and that the target is up)")
    return reached


class _Delivery:
    """One URL's notification, on its own thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = target_name(url)
        self.thread: threading.Thread | None = None
        self.done = self.ok = False
        self.reason = ""

    def run(self, title: str, body: str, kind: str, logs: dict[int, list[str]]) -> None:
        import apprise

        try:
            # The plugin itself, not apprise's dispatcher: it sends on this thread, so what apprise logs
            # here is known to be this target's.
            plugin = apprise.Apprise.instantiate(self.url, suppress_exceptions=True)
            if not plugin:
                self.reason = "apprise does not understand this URL"
            else:
                self.ok = bool(plugin.notify(body=body, title=title, notify_type=kind))
                if not self.ok:
                    said = logs.get(threading.get_ident(), [])
                    self.reason = scrub(said[-1], self.url) if said else ""
        except Exception as exc:  # noqa: BLE001 - any plugin's failure is this target's, never the job's
            self.reason = scrub(f"{exc.__class__.__name__}: {exc}", self.url)
        finally:
            self.done = True


def target_name(url: str) -> str:
    """A notification URL as it may be printed: its scheme and host as apprise masks them, never a path,
    query, password or token."""
    import apprise

    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    shown = plugin.url(privacy=True) if plugin else url.split("://", 1)[0] + "://..."
    scheme, _, rest = shown.partition("://")
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return f"{scheme}://{host}" if host else f"{scheme}://"


def scrub(text: str, url: str) -> str:
    """`text` without any part of `url` that its printable name does not show (tokens, passwords, paths)."""
    shown = target_name(url)
    for part in sorted(set(re.split(r"[:/?&=@#%+,]+", url.split("://", 1)[-1])), key=len, reverse=True):
        if len(part) >= 3 and part not in shown:
            text = text.replace(part, "****")
    return text.splitlines()[0] if text else text


@contextmanager
def _apprise_logs() -> Iterator[dict[int, list[str]]]:
    """apprise's warnings, by sending thread; apprise never reaches the process's logs (it may quote URLs)."""
    by_thread: dict[int, list[str]] = {}

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                by_thread.setdefault(record.thread or 0, []).append(record.getMessage())

    logger = logging.getLogger("apprise")
    logger.propagate = False  # for good: a target given up on may still log after this returns
    handler = Keep()
    logger.addHandler(handler)
    try:
        yield by_thread
    finally:
        logger.removeHandler(handler)

"""The command table: what each `stackvault` command needs, declared once beside its handler.

A handler only turns parsed options into a job call. What every command shares is declared on it
with `@command(...)` and applied by `cli.app` alone (borg's `@with_repository`, as a table): its
options, its human renderer, the repository lock the CLI takes around it and the catalog job kind it
is recorded under. Adding a command is one decorated function in a family module (see `FAMILIES`).

`lock` is the lock of the command's whole run. The jobs that a scheduler or an API runs as well
(backup, prune, gc, forget, verify, a file restore) take theirs inside the job function, beside
their catalog job row, so that every face gets the same locking: those commands declare no `lock`
here, only `recorded_as`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .invocation import Invocation

EXIT_OK, EXIT_FAILED, EXIT_DAMAGED = 0, 1, 3  # the others are errors.py's, raised

#: The modules holding commands, in the order `stackvault --help` lists their commands.
FAMILIES = ("repository", "backup", "listing", "history", "restore", "consistency", "maintenance", "copy", "proxy",
            "files", "service", "api", "observe")

Renderer = Callable[[dict], str]


class LockKind(StrEnum):
    """The repository lock a command's whole run holds (engine.locks), taken by the CLI."""

    READ = "read"
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@dataclass(frozen=True)
class Lock:
    """The lock the CLI takes around a handler, and the job name other proxies see on it."""

    kind: LockKind
    job: str
    warn_unlocked: bool = False  # a read lock that could not be written: go on, with a warning (docs/cli.md)


@dataclass
class Outcome:
    """What a handler returns: the result (also the `--json` document), the exit code and, when the
    command renders several shapes (`key list` / `key add`), the renderer of this one."""

    result: dict
    code: int = EXIT_OK
    renderer: Renderer | None = None


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Callable[[Invocation], Outcome]
    arguments: Callable[[argparse.ArgumentParser], None] | None
    renderer: Renderer | None
    #: The lock the CLI takes around the handler, or a function of the options choosing it (or None).
    lock: Lock | Callable[[argparse.Namespace], Lock | None] | None
    #: The catalog job kind the command's runs are recorded under (`stackvault jobs --kind`); the job
    #: functions record themselves, as the scheduler calls them too. None: not recorded.
    recorded_as: str | None

    def lock_for(self, args: argparse.Namespace) -> Lock | None:
        return self.lock(args) if callable(self.lock) else self.lock


COMMANDS: dict[str, Command] = {}


Handler = Callable[["Invocation"], Outcome]
LockChoice = Lock | Callable[[argparse.Namespace], Lock | None] | None


def command(name: str, help: str, *, arguments: Callable[[argparse.ArgumentParser], None] | None = None,
            renderer: Renderer | None = None, lock: LockChoice = None,
            recorded_as: str | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated handler as `stackvault NAME`."""
    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is declared twice")
        COMMANDS[name] = Command(name, help, handler, arguments, renderer, lock, recorded_as)
        return handler
    return register


def load_commands() -> dict[str, Command]:
    """Import every family module (each registers its commands) and return the table."""
    import importlib

    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")
    return COMMANDS

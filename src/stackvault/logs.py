"""Logging for `-v` and `--debug`, with every secret redacted before a line is written.

`-v` shows what a job does, one line per step and disk (the `stackvault` loggers at INFO); `--debug`
adds stackvault's details and the cloud API calls, which openstacksdk and keystoneauth log at DEBUG.
Those libraries mask some headers themselves, but not every one nor request bodies, and a proxy's log
ends up in journald and support tickets: so one filter on the handler rewrites every record, whatever
logger it comes from. It knows secrets two ways: by their shape (an `X-Auth-Token:` header, a
`"password": ...` field) and by value (the credentials of the cloud connected to and the token it
got, registered with `keep_secret`), so a secret is hidden even where no pattern would catch it.
Without either flag nothing is configured and stderr stays as it always was.
"""

from __future__ import annotations

import logging
import re
import sys
import threading

REDACTED = "***"

#: Names under which a secret travels: headers, JSON fields, query and form parameters.
_HIDDEN_FIELDS = (r"x-(?:auth|subject|service)-token|password|passphrase|secret|application_credential_secret"
                  r"|token|auth_token|access_token|api_key|apikey|credential")
_FIELD_VALUE = r""""[^"]*"|'[^']*'|\{SHA256\}[0-9a-f]+|[^\s,;&}"']+"""
#: `X-Auth-Token: abc`, `'X-Auth-Token': 'abc'`, `"password": "abc"`, `password=abc`.
_BY_NAME = re.compile(rf"""(?P<name>["']?(?:{_HIDDEN_FIELDS})["']?\s*[:=]\s*)(?P<value>{_FIELD_VALUE})""",
                      re.IGNORECASE)
#: keystoneauth's hashed form of a token in its own logs ({SHA256}...): harmless, but no need to keep it.
_HASHED = re.compile(r"\{SHA256\}[0-9a-f]{64}")

_known: set[str] = set()
_known_lock = threading.Lock()

#: The libraries whose DEBUG lines are the cloud API calls (requests, responses, waits).
CLOUD_LOGGERS = ("openstack", "keystoneauth", "keystoneauth1", "urllib3")


def keep_secret(value: object) -> None:
    """Never write this value (a password, an application credential's secret, a token) in a log line.

    Short values are ignored: hiding every "1" or "yes" would garble the log and they are no secret."""
    if isinstance(value, str) and len(value) >= 6:
        with _known_lock:
            _known.add(value)


def keep_cloud_secrets(auth: dict) -> None:
    """The secrets among a clouds.yaml `auth` section's values (openstacksdk's `config.config["auth"]`)."""
    for key, value in auth.items():
        if re.search(r"password|secret|token|key", key, re.IGNORECASE):
            keep_secret(value)


def redact(text: str) -> str:
    """`text` with every known secret and every secret-shaped field replaced by ***."""
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)  # a secret inside a longer one: the longer first
    for secret in known:
        text = text.replace(secret, REDACTED)
    text = _BY_NAME.sub(lambda m: m["name"] + _quoted(m["value"]), text)
    return _HASHED.sub(REDACTED, text)


def _quoted(value: str) -> str:
    return f"{value[0]}{REDACTED}{value[0]}" if value[:1] in ("'", '"') else REDACTED


class SecretFilter(logging.Filter):
    """Rewrites each record's message (its arguments merged in) through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:  # a traceback can quote a request too
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = redact(message), None
        return True


def configure(verbose: bool, debug: bool, stream=None) -> None:
    """Logging as the flags ask; with neither, nothing is configured (the libraries stay quiet)."""
    if not (verbose or debug):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(SecretFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # other libraries: only what goes wrong
    logging.getLogger("stackvault").setLevel(logging.DEBUG if debug else logging.INFO)
    for name in CLOUD_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)

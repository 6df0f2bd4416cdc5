"""What an object key may look like, checked before any backend uses one.

Keys come from the code (`chunks/ab/<hex>`) but also from backup records the store hands back, and a
store (or whoever can write to it) is not trusted: a record naming `../../etc/passwd` or `/root/x` as
its block index must not turn a `prune` into a delete outside the repository. A valid key is one or
more `/`-separated components of letters, digits, `.`, `_` and `-`, none empty, `.` or `..`.
"""

from __future__ import annotations

import re

from ..errors import RepositoryError

_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")
MAX_KEY = 1024


class InvalidKeyError(RepositoryError, ValueError):
    """A key no object can have: a bug when the code made it, a damaged or forged record otherwise."""


def check_key(key: object) -> str:
    """`key` itself when it is a valid object key; a RepositoryError naming it otherwise."""
    if isinstance(key, str) and 0 < len(key) <= MAX_KEY and all(
            part not in (".", "..") and _COMPONENT.fullmatch(part) for part in key.split("/")):
        return key
    shown = repr(key)[:120]
    raise InvalidKeyError(f"invalid object key {shown} (a damaged or forged backup record names it)",
                          "run `stackvault verify` to find the record; nothing outside the repository was touched")

"""What this proxy remembers of each repository it used, kept outside the repository.

The store is not trusted: it could replace an encrypted repository's `config` by a plain one (so
the next backup writes plaintext), put another repository at the same place, or serve an older
state (backups deleted, records rolled back). None of that shows in the repository itself, so the
proxy keeps its own memory in its working directory (private to the proxy user), one small JSON
file per place a repository really is, `<workdir>/known-repositories/<hash of identity>.json`:

    {"location", "identity", "id", "encrypted", "key_fingerprint", "newest_backup", "updated"}

The identity (`Repository.identity`: storage/base.py `Backend.identity`) is the location plus what
the location leaves out: the S3 endpoint and region, the Swift storage URL (endpoint and project), a
local directory's real path. `swift://backups` in two clouds are two repositories with two memories, not one repository
whose id keeps changing.

The first use of a location is trusted as it is (as SSH trusts a new host key); afterwards a
repository at a known location that became plain, has another id or another master key is refused
until the operator says it is intended (`stackvault trust accept`). A store serving an older newest
backup than the proxy saw is reported by `list` and `verify`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import blake3

from ..engine.atomic import write_atomic
from ..engine.repository import Repository
from ..errors import RepositoryError, warn

if TYPE_CHECKING:
    from .context import JobContext

DIR = "known-repositories"
ACCEPT = "`stackvault trust accept`"


class TrustError(RepositoryError):
    """The repository is not the one this proxy knows at that location, or breaks a setting."""


def _path(workdir: Path, identity: str) -> Path:
    return Path(workdir) / DIR / f"{blake3.blake3(identity.encode()).hexdigest()[:32]}.json"


def known(workdir: Path, repo: Repository) -> dict | None:
    """What the proxy remembers of the repository where `repo` is, or None when it never used one there."""
    location, identity = repo.location, repo.identity
    path = _path(workdir, identity)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return _kept_by_location(workdir, repo)
    except (OSError, ValueError) as exc:
        warn(f"cannot read {path} ({exc}): what this proxy knew of {location} is lost; "
              "it is remembered again as it is now")
        return None
    if not isinstance(doc, dict) or doc.get("identity", doc.get("location")) != identity:
        warn(f"{path} is not this proxy's memory of {location}; it is remembered again as it is now")
        return None
    return doc


def _kept_by_location(workdir: Path, repo: Repository) -> dict | None:
    """A memory kept under the location alone (before identities): taken over when it names this
    repository's id, so a proxy keeps what it saw; one naming another id may be another cloud's
    repository of the same name, and is left alone."""
    try:
        doc = json.loads(_path(workdir, repo.location).read_bytes())
    except (OSError, ValueError):
        return None
    if (isinstance(doc, dict) and "identity" not in doc and doc.get("location") == repo.location
            and doc.get("id") == repo.id):
        return doc
    return None


def remember(workdir: Path, repo: Repository, newest_backup: str | None) -> None:
    """Record the repository as it is now (atomically, private to the proxy user). A working directory
    that cannot be written only loses the memory, with a warning: a restore must still work."""
    doc = {"location": repo.location, "identity": repo.identity, "id": repo.id, "encrypted": repo.encrypted,
           "key_fingerprint": repo.key_fingerprint, "newest_backup": newest_backup,
           "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    path = _path(workdir, repo.identity)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, json.dumps(doc, indent=1).encode())
    except OSError as exc:
        warn(f"cannot remember repository {repo.location} in {path.parent} ({exc.strerror}): "
              "a replaced or rolled back repository may go unnoticed")


def passphrase_given(ctx: JobContext) -> str | None:
    """How a passphrase was given without being asked for (a prompt is only made for encrypted ones)."""
    if ctx.passphrase_file:
        return ctx.passphrase_option
    if ctx.passphrase_env in os.environ:
        return ctx.passphrase_env
    return None


def check(ctx: JobContext, repo: Repository) -> None:
    """Refuse a repository this proxy must not use; remember it, and follow its newest backup.

    Called once the repository is open (and, when encrypted, unlocked and its config authenticated).
    """
    settings = ctx.settings
    location = repo.location
    before = known(settings.workdir, repo)
    if before is not None:  # first: what changed is the most precise thing to say
        change = None
        if before.get("id") != repo.id:
            change = f"its id changed from {before.get('id')} to {repo.id}"
        elif before.get("encrypted") and not repo.encrypted:
            change = "it was encrypted and is now plain (its config was replaced)"
        elif before.get("key_fingerprint") != repo.key_fingerprint:
            change = "its encryption key changed"
        if change:
            raise TrustError(f"repository {location} is not the one this proxy last used: {change}",
                             f"if this is intended, run {ACCEPT}")
    if not repo.encrypted:
        if settings.require_encryption:
            raise TrustError(f"repository {location} is not encrypted and the config sets require_encryption",
                             "use an encrypted repository (`stackvault init --encrypt`), or unset require_encryption")
        given = passphrase_given(ctx)
        if given:
            raise TrustError(f"a passphrase was given ({given}) but repository {location} is not encrypted: "
                             "its config may have been replaced by a plain one",
                             f"check the repository; if it really is plain, do not pass {given}")
    if before is None or "identity" not in before:  # new, or kept by location alone: keep it by identity
        remember(settings.workdir, repo, (before or {}).get("newest_backup"))
    repo.on_commit = lambda backup_id: saw_newest(ctx, repo, backup_id)


def saw_newest(ctx: JobContext, repo: Repository, backup_id: str) -> None:
    """A backup committed (or listed) as the newest: remember it, if newer than what was seen."""
    before = known(ctx.settings.workdir, repo) or {}
    if before.get("newest_backup") is None or backup_id > before["newest_backup"]:
        remember(ctx.settings.workdir, repo, backup_id)


def forgot(ctx: JobContext, repo: Repository, backup_ids: list[str]) -> None:
    """After an explicit `forget`: the newest backup this proxy remembers may be one just forgotten."""
    before = known(ctx.settings.workdir, repo) or {}
    if before.get("newest_backup") in backup_ids:
        ids = repo.backup_ids()
        remember(ctx.settings.workdir, repo, ids[-1] if ids else None)


def rollback(ctx: JobContext, repo: Repository, ids: list[str]) -> str | None:
    """A warning when the repository's newest backup is older than the newest this proxy saw there
    (backups deleted, or an old copy of the repository served); else remember the newest."""
    before = known(ctx.settings.workdir, repo) or {}
    seen = before.get("newest_backup")
    newest = ids[-1] if ids else None
    if seen and seen not in ids and (newest is None or newest < seen) and not repo.was_forgotten(seen):
        return (f"repository {repo.location} serves an older state than this proxy saw: its newest backup is "
                f"{newest or 'none'}, this proxy saw {seen} (backups deleted, or an old copy of the repository); "
                f"if this is intended (e.g. forgotten by another proxy), run {ACCEPT}")
    if newest is not None:
        saw_newest(ctx, repo, newest)
    return None


def accept(ctx: JobContext) -> dict:
    """`trust accept`: remember the repository as it is now, whatever this proxy knew before."""
    repo = ctx.open_repository(ctx.passphrase)
    before = known(ctx.settings.workdir, repo)
    ids = repo.backup_ids()
    remember(ctx.settings.workdir, repo, ids[-1] if ids else None)
    return {"repo": repo.location, "id": repo.id, "encrypted": repo.encrypted,
            "key_fingerprint": repo.key_fingerprint, "newest_backup": ids[-1] if ids else None,
            "before": before}

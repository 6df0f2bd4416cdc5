"""The policies written through the API, kept in the catalog that the API process and every proxy's
`stackvault server` share.

Only their keys are kept, as the JSON of a `[policy.NAME]` table; what they mean, and whether they are
valid, is the config's parser's business (service/policies.py), so a stored policy is read exactly as
the same table in a config would be. A policy holds no secret: its `os_cloud` names a clouds.yaml
entry of the proxy, never credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..errors import CatalogError
from .models import PolicyRow
from .schema import safe_url
from .store import Catalog

#: A policy's name as the API and a saved proxy state may write it: one URL path segment, and a queue
#: name to which `/full-verify` is appended.
POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class StoredPolicies:
    """The catalog's policies of one repository (a policy backs up into the repository it is kept for)."""

    def __init__(self, catalog: Catalog, repo_id: str) -> None:
        self.catalog, self.repo_id = catalog, repo_id

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """A database that is away (restarted, locked, damaged) is one line, as for every catalog
        error; the service's poll and a reload log it and go on with the policies they had."""
        try:
            yield
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise CatalogError(f"the policies in catalog {safe_url(self.catalog.url)} cannot be read or "
                               f"written: {exc.__class__.__name__}: {str(exc).strip().splitlines()[0]}",
                               "check the catalog database") from None

    def all(self) -> dict[str, dict]:
        """Every stored policy's keys, by name (in name order)."""
        with self._answering(), self.catalog.reader() as s:
            rows = s.scalars(select(PolicyRow).where(PolicyRow.repo_id == self.repo_id).order_by(PolicyRow.name))
            return {row.name: dict(row.settings) for row in rows}

    def get(self, name: str) -> dict | None:
        with self._answering(), self.catalog.reader() as s:
            row = s.get(PolicyRow, (self.repo_id, name))
            return None if row is None else dict(row.settings)

    def add(self, name: str, settings: dict) -> bool:
        """Keep a new policy; False when one of that name is kept already (two writers at once: one wins)."""
        now = _now()
        try:
            with self._answering(), self.catalog.session() as s, s.begin():
                s.add(PolicyRow(repo_id=self.repo_id, name=name, settings=settings, created=now, updated=now))
        except IntegrityError:
            return False
        return True

    def replace(self, name: str, settings: dict) -> bool:
        """Replace a kept policy's keys; False when there is none of that name."""
        with self._answering(), self.catalog.session() as s, s.begin():
            done = s.execute(update(PolicyRow).where(PolicyRow.repo_id == self.repo_id, PolicyRow.name == name)
                             .values(settings=settings, updated=_now()))
            return bool(done.rowcount)  # type: ignore[attr-defined]  # a CursorResult for an UPDATE

    def remove(self, name: str) -> bool:
        """Forget a policy (its runs and backups stay); False when there is none of that name."""
        with self._answering(), self.catalog.session() as s, s.begin():
            done = s.execute(delete(PolicyRow).where(PolicyRow.repo_id == self.repo_id, PolicyRow.name == name))
            return bool(done.rowcount)  # type: ignore[attr-defined]  # a CursorResult for a DELETE


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

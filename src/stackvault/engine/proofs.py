"""Proofs of quiesce as repository objects (`proofs/<backup>.json`), beside the backups they prove.

A backup record is immutable once committed, so what is learnt about a backup afterwards (that its
guest really froze: jobs/quiesce_proof.py) is its own small JSON object, named by the backup's id.
Keeping it in the repository (sealed when encrypted) lets `catalog rebuild` find it again; `forget`
and `prune` delete it with the backup.
"""

from __future__ import annotations

import json

from ..storage import Backend
from ..storage.base import SMALL_OBJECT_BYTES
from .crypto import ObjectAuthError
from .layout import PROOFS, proof_id_of, proof_key


class Proofs:
    """The proof objects of one repository (`Repository.proofs`)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def save(self, proof: dict) -> None:
        """Store (or replace) the proof of `proof["backup_id"]`, durably."""
        self._backend.put(proof_key(proof["backup_id"]), json.dumps(proof, indent=1, sort_keys=True).encode())
        self._backend.sync()

    def load(self, backup_id: str) -> dict | None:
        """The backup's proof, or None when it has none or its proof is damaged.

        The store holds proofs like every other object and may damage or plant them: a proof only ever
        raises a backup's consistency to "verified", so one that does not decode, is not an object, or
        names another backup (copied over this one's) is worth exactly no proof, and must never stop
        `show` or `catalog rebuild`.
        """
        try:
            proof = json.loads(self._backend.get(proof_key(backup_id), SMALL_OBJECT_BYTES))
        except (KeyError, ValueError, RecursionError, ObjectAuthError):
            return None
        if not isinstance(proof, dict) or proof.get("backup_id") != backup_id:
            return None
        return proof

    def backup_ids(self) -> list[str]:
        """The ids of the backups that have a proof object (readable or not), in no particular order."""
        ids = (proof_id_of(obj.key) for obj in self._backend.list(PROOFS))
        return [i for i in ids if i is not None]

    def delete(self, backup_id: str) -> None:
        """Remove a backup's proof (with the backup); none there is no error."""
        self._backend.delete(proof_key(backup_id))

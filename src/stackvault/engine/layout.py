"""Every object key of a repository, named once: the table of docs/repository-format.md in code.

A key is part of the format: a stackvault of another version, or a stranger with the format document
alone, finds objects by these names. So no other module spells a prefix or builds a key; each family
of objects has its prefix here, and a function from its id to its key (and back, where objects are
found by listing). Jobs do not build keys: they ask the repository (`Repository`), which owns them.
"""

from __future__ import annotations

#: The repository's description (JSON), readable before any passphrase is known.
CONFIG = "config"
#: Key slots of an encrypted repository (`keys/<id>.json`); also written into the config.
KEY_SLOTS = "keys/"
#: Chunks, `chunks/<h2>/<h64>`: one block's data, named by its id.
CHUNKS = "chunks/"
#: Pack files of a format 4 repository, `packs/<h2>/<h64>`: many chunks, named by a hash of their bytes.
PACKS = "packs/"
#: Chunk indexes of a format 4 repository, `index/<h64>`: chunk id -> pack, offset, length.
CHUNK_INDEX = "index/"
#: Block indexes, `indexes/<backup>/<position>.fidx`: one folder per backup.
INDEXES = "indexes/"
#: Backup records, `backups/<backup>.json`: the commit points.
BACKUPS = "backups/"
#: Proofs of quiesce, `proofs/<backup>.json`, written after their backup.
PROOFS = "proofs/"
#: Tombstones of forgotten backups, `forgotten/<backup>`.
TOMBSTONES = "forgotten/"
#: Saved proxy working state and configuration, `proxy-state/<time>.tar.zst`.
PROXY_STATE = "proxy-state/"
#: Repository locks, `locks/<time>-<rand>.json`.
LOCKS = "locks/"
#: Where a damaged chunk is set aside: `<chunk key>.bad`, a name no chunk id has, so the chunk counts
#: as absent and the next Full stores it again; `gc` deletes it as unreferenced.
DAMAGED_SUFFIX = ".bad"

_JSON = ".json"
_INDEX = ".fidx"
_STATE = ".tar.zst"


def chunk_key(digest: bytes) -> str:
    hexid = digest.hex()
    return f"{CHUNKS}{hexid[:2]}/{hexid}"


def chunk_id_of(key: str) -> bytes | None:
    """The id a key listed under `chunks/` names; None for anything else there (a set-aside `.bad`
    object, a name no chunk has): such an object is no chunk, whatever its name resembles."""
    try:
        digest = bytes.fromhex(key.rsplit("/", 1)[-1])
    except ValueError:
        return None
    return digest if chunk_key(digest) == key else None


def chunk_folder(first_byte: int) -> str:
    """The prefix under which every chunk whose id starts with `first_byte` lies."""
    return f"{CHUNKS}{first_byte:02x}/"


def pack_key(pack_id: bytes) -> str:
    hexid = pack_id.hex()
    return f"{PACKS}{hexid[:2]}/{hexid}"


def pack_id_of(key: str) -> bytes | None:
    """The id a key listed under `packs/` names; None for anything else there."""
    try:
        pack_id = bytes.fromhex(key.rsplit("/", 1)[-1])
    except ValueError:
        return None
    return pack_id if len(pack_id) == 32 and pack_key(pack_id) == key else None


def chunk_index_key(index_id: bytes) -> str:
    return f"{CHUNK_INDEX}{index_id.hex()}"


def index_key(backup_id: str, position: int) -> str:
    return f"{INDEXES}{backup_id}/{position}{_INDEX}"


def index_folder(backup_id: str) -> str:
    """The prefix of every block index of one backup."""
    return f"{INDEXES}{backup_id}/"


def backup_key(backup_id: str) -> str:
    return f"{BACKUPS}{backup_id}{_JSON}"


def tombstone_key(backup_id: str) -> str:
    """Where `forget` and `prune` note that they removed a backup."""
    return f"{TOMBSTONES}{backup_id}"


def proof_key(backup_id: str) -> str:
    return f"{PROOFS}{backup_id}{_JSON}"


def proxy_state_key(state_id: str) -> str:
    return f"{PROXY_STATE}{state_id}{_STATE}"


def slot_key(slot_id: str) -> str:
    return f"{KEY_SLOTS}{slot_id}{_JSON}"


def lock_key(name: str) -> str:
    return f"{LOCKS}{name}{_JSON}"


def backup_id_of(key: str) -> str | None:
    """The id a key listed under `backups/` names, or None for an object that is no record's."""
    return _between(key, BACKUPS, _JSON)


def proof_id_of(key: str) -> str | None:
    return _between(key, PROOFS, _JSON)


def proxy_state_id_of(key: str) -> str | None:
    return _between(key, PROXY_STATE, _STATE)


def slot_id_of(key: str) -> str | None:
    return _between(key, KEY_SLOTS, _JSON)


def _between(key: str, prefix: str, suffix: str) -> str | None:
    """What lies between a family's prefix and suffix in `key`; None when `key` has another shape
    (nothing stackvault writes: readers pass it over, or find it no valid id)."""
    if not key.startswith(prefix) or not key.endswith(suffix):
        return None
    return key[len(prefix) : len(key) - len(suffix)]

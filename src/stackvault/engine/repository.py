"""The repository: a self-describing store of chunks, block indexes and backup records.

Everything the proxy knows can be rebuilt from here (catalog, working state), so the layout is
documented in docs/repository-format.md and versioned by `config`.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from .. import __version__
from ..errors import (
    CorruptChunkError,
    DamagedObjectError,
    DamagedRecordError,
    NotFoundError,
    RepositoryError,
    StackvaultError,
    UsageError,
    warn,
)
from ..storage import Backend, ObjectInfo
from ..storage.base import ObjectTooLargeError
from . import keys
from .blockindex import BlockIndex, IndexFormatError, max_stored_size
from .chunks import decode_chunk, hash_block
from .crypto import CIPHER, MASTER_KEY_SIZE, EncryptedBackend, ObjectAuthError, RepositoryCipher, canonical_checksum
from .crypto import MAGIC as SEALED_MAGIC
from .keys import Unlocked
from .layout import (
    BACKUPS,
    CHUNK_INDEX,
    CHUNKS,
    CONFIG,
    DAMAGED_SUFFIX,
    INDEXES,
    KEY_SLOTS,
    PACKS,
    backup_id_of,
    backup_key,
    chunk_id_of,
    chunk_index_key,
    chunk_key,
    index_folder,
    index_key,
    pack_id_of,
    pack_key,
    tombstone_key,
)
from .manifest import MAX_RECORD_BYTES, BackupRecord, DiskRecord, RecordFormatError, valid_backup_id
from .packs import (
    DEFAULT_PACK_SIZE,
    MAX_PACK,
    MIN_PACK,
    ChunkIndex,
    Entries,
    Location,
    PackFormatError,
    PackWriter,
    check_pack,
    read_header,
    read_span,
)
from .proofs import Proofs
from .proxy_states import SavedProxyStates

FORMAT = "stackvault-repository"
# Version 1: plain. Version 2: encrypted (docs/repository-format.md), so that a stackvault that only
# knows plain repositories refuses one with "upgrade stackvault" instead of misreading sealed objects.
# Version 3: plain or encrypted (the `encryption` field says), with sparse block indexes; a repository
# of version 1 or 2 is raised to 3 before its first sparse index is written, so that an older
# stackvault refuses it in one line instead of reporting those indexes as damaged.
# Version 4: chunks in pack files with chunk indexes (engine/packs.py); chosen at `init`, never reached
# by raising an older repository (its chunks are objects of their own).
FORMAT_VERSION = 4
PLAIN_VERSION = 1
ENCRYPTED_VERSION = 2
SPARSE_VERSION = 3
PACKED_VERSION = 4
#: What `init` makes unless told otherwise: format 4 becomes the default once measured faster.
DEFAULT_VERSION = SPARSE_VERSION
#: A restore reads the chunks of one pack lying at most this far apart with one request: a backup's
#: workers append neighbouring blocks to a pack a few chunks apart, not always side by side.
MERGE_GAP = 2 << 20
#: The longest single ranged read (what one restore worker holds).
MAX_READ = 16 << 20
#: gc rewrites a pack whose live chunks are less than this share of its chunk bytes (restic's prune
#: model): at most a fifth of a repository's pack bytes is then dead, each rewrite costing at most
#: four fifths of a pack in copies.
REPACK_BELOW = 0.8
#: A config is a few hundred bytes, a tombstone less: anything far larger was not written by stackvault.
MAX_CONFIG_BYTES = 1 << 20
TOMBSTONE_FORMAT = "stackvault-forgotten"
MAX_TOMBSTONE_BYTES = 64 << 10
_FIX_CONFIG = "restore the `config` object from another copy of the repository"
MIN_BLOCK = 64 << 10
MAX_BLOCK = 16 << 20
# 512 KiB: after scattered 64 KiB writes an Incremental stores half the bytes of 1 MiB blocks for the
# same time (docs/performance.md, block-size table); 4 MiB (as Benji and PBS use) stores 5x more.
DEFAULT_BLOCK = 512 << 10
# zstd level 1: 1.5-2x the speed of level 3 on OS-like data for chunks 4-8% larger; compression is
# what bounds a Full on a proxy's CPU.
DEFAULT_COMPRESSION = 1


@dataclass
class RepoConfig:
    id: str
    created: str
    block_size: int
    compression_level: int = DEFAULT_COMPRESSION
    hash: str = "blake3"
    chunk_codec: str = "zstd"
    format: str = FORMAT
    version: int = DEFAULT_VERSION
    encryption: dict | None = None
    #: Format 4 only: the size a pack is cut at.
    pack_size: int | None = None

    def to_doc(self) -> dict:
        """The `config` object's fields; a plain repository's has no `encryption`, one of format 3 or
        older no `pack_size`."""
        doc = asdict(self)
        for optional in ("encryption", "pack_size"):
            if doc[optional] is None:
                del doc[optional]
        return doc


@dataclass(frozen=True)
class Garbage:
    """What `gc` deletes (`Repository.find_garbage`), listed before anything is deleted so that a dry
    run reports exactly what a real run would remove."""

    chunks: list[ObjectInfo]
    indexes: list[str]
    temp_files: list[str]
    #: Format 4: `chunks` are whole packs; the chunks they hold, the chunk index files to replace,
    #: and the index of every pack kept, written before anything is deleted.
    dead_chunks: int = 0
    chunk_indexes: tuple[str, ...] = ()
    kept_index: ChunkIndex | None = None
    #: Format 4: packs whose live share fell below REPACK_BELOW, with their live chunks to copy.
    repack: tuple[tuple[ObjectInfo, Entries], ...] = ()

    @property
    def repacked_bytes(self) -> int:
        return sum(n for _, live in self.repack for _, _, n in live)

    @property
    def chunk_bytes(self) -> int:
        """Bytes freed: dead chunk objects or packs, and what rewriting packs leaves behind."""
        return sum(o.size for o in self.chunks) + sum(o.size for o, _ in self.repack) - self.repacked_bytes

    @property
    def chunks_deleted(self) -> int:
        return self.dead_chunks if self.kept_index is not None else len(self.chunks)


class NoRepositoryError(RepositoryError):
    """No repository at the location given (a command given two names the option in its fix)."""


def resolve_prefix(ref: str, ids: list[str], where: str) -> str:
    """The one id of `ids` that `ref` is, or is a unique prefix of; `where` names the place in errors."""
    if ref in ids:
        return ref
    matches = [b for b in ids if b.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"no backup {ref!r} in {where}", "list backups with `stackvault list`")
    raise UsageError(f"backup id prefix {ref!r} matches {len(matches)} backups", "give more characters")


def check_format(version: int) -> int:
    if version not in (SPARSE_VERSION, PACKED_VERSION):
        raise UsageError(f"repository format {version} cannot be created",
                         f"use --format {SPARSE_VERSION} (one object per chunk) or {PACKED_VERSION} (pack files)")
    return version


def check_pack_size(pack_size: int, given: str | None = None) -> int:
    if not MIN_PACK <= pack_size <= MAX_PACK:
        raise UsageError(f"pack size {given or pack_size} is not between 1 MiB and 1 GiB", "use e.g. --pack-size 16MiB")
    return pack_size


def check_block_size(block_size: int, given: str | None = None) -> int:
    if block_size < MIN_BLOCK or block_size > MAX_BLOCK or block_size & (block_size - 1):
        raise UsageError(f"block size {given or block_size} is not a power of two between 64 KiB and 16 MiB",
                         "use e.g. --block-size 1MiB")
    return block_size


class Repository:
    def __init__(self, backend: Backend, config: RepoConfig, *, cipher: RepositoryCipher | None = None,
                 unlocked: Unlocked | None = None) -> None:
        # Everything reads and writes through `backend`: sealed when the repository is encrypted.
        self.backend: Backend = EncryptedBackend(backend, cipher) if cipher is not None else backend
        self.store = backend  # the objects as stored (sealed when encrypted), for moving them unread
        self.config = config
        self.unlocked = unlocked
        self.cipher = cipher
        #: Called with each backup id once it is committed (the proxy's memory of this repository).
        self.on_commit: Callable[[str], None] | None = None
        self.hash_block: Callable[[bytes | memoryview], bytes] = cipher.chunk_id if cipher is not None else hash_block
        self._records: dict[str, BackupRecord] = {}
        #: Objects kept beside the backups: proofs of quiesce, and the proxy's saved state.
        self.proofs = Proofs(self.backend)
        self.proxy_states = SavedProxyStates(self.backend)
        # Format 4: the chunk index, read when first needed, and the packs this run is writing.
        self._packs_lock = threading.Lock()
        self._chunk_index: ChunkIndex | None = None
        self._packer: PackWriter | None = None
        #: Chunk index files that could not be read (key -> problem): `verify` names them.
        self.damaged_chunk_indexes: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def init(cls, backend: Backend, block_size: int = DEFAULT_BLOCK,
             compression_level: int = DEFAULT_COMPRESSION, *,
             passphrase: str | Callable[[], str] | None = None, version: int = DEFAULT_VERSION,
             pack_size: int = DEFAULT_PACK_SIZE) -> Repository:
        """A new repository of format `version` (3: one object per chunk; 4: pack files of about
        `pack_size` bytes); encrypted under a new random master key when a passphrase is given
        (a callable is asked only once the location is known to be free)."""
        check_format(version)
        backend.create()  # the bucket or container of an object store; a directory
        if backend.exists(CONFIG):
            raise UsageError(f"a repository already exists at {backend.location}",
                             "use it as it is, or choose another location")
        config = RepoConfig(id=uuid.uuid4().hex, created=_now(), block_size=check_block_size(block_size),
                            compression_level=compression_level, version=version,
                            pack_size=check_pack_size(pack_size) if version >= PACKED_VERSION else None)
        if passphrase is None:
            doc = config.to_doc()
            doc["checksum"] = canonical_checksum(doc)  # older versions read it too, and check it
            backend.put(CONFIG, json.dumps(doc, indent=1).encode())
            backend.sync()
            return cls(backend, config)
        if callable(passphrase):
            passphrase = passphrase()
        config.hash = "blake3-keyed"
        config.encryption = {"cipher": CIPHER, "kdf": "scrypt", "key_slots": KEY_SLOTS}
        master = os.urandom(MASTER_KEY_SIZE)
        cipher = RepositoryCipher(master)
        slot_id = keys.add_slot(backend, config.id, master, passphrase, host=hostname())
        doc = config.to_doc()
        doc["mac"] = cipher.mac(doc)
        doc["checksum"] = canonical_checksum(doc)
        backend.put(CONFIG, json.dumps(doc, indent=1).encode())  # last: the repository exists from here
        backend.sync()
        return cls(backend, config, cipher=cipher, unlocked=keys.Unlocked(master, slot_id))

    @classmethod
    def open(cls, backend: Backend, passphrase: Callable[[], str] | None = None) -> Repository:
        """Open a repository; `passphrase` is asked for only when the repository is encrypted."""
        try:
            raw = backend.get(CONFIG, MAX_CONFIG_BYTES)
        except KeyError:
            raise NoRepositoryError(f"no stackvault repository at {backend.location}",
                                    "create one with `stackvault init`, or pass the right --repo") from None
        except ObjectTooLargeError as exc:
            raise DamagedObjectError(f"repository config at {backend.location} is damaged ({exc.problem})",
                                     _FIX_CONFIG) from None
        config, doc = _parse_config(raw, backend.location)
        if config.encryption is None and "mac" not in doc and config.version != ENCRYPTED_VERSION:
            return cls(backend, config)
        enc = config.encryption
        if not isinstance(enc, dict) or "mac" not in doc or "checksum" not in doc:
            raise DamagedObjectError(f"repository config at {backend.location} says format version {config.version} "
                                     "(encrypted) but lacks the encryption fields: it is damaged", _FIX_CONFIG)
        if enc.get("cipher") != CIPHER or enc.get("kdf") != "scrypt":
            raise RepositoryError(f"repository {backend.location} uses {enc.get('cipher')}/{enc.get('kdf')}, "
                                  "which this stackvault does not know", "upgrade stackvault")
        if passphrase is None:
            raise keys.PassphraseError(f"repository {backend.location} is encrypted and no passphrase was given",
                                       f"set {keys.ENV}, pass --passphrase-file PATH, or run on a terminal")
        unlocked = keys.unlock(backend, config.id, passphrase())
        cipher = RepositoryCipher(unlocked.master)
        signed = {k: v for k, v in doc.items() if k not in ("mac", "checksum")}
        if not hmac.compare_digest(cipher.mac(signed), str(doc["mac"])):
            raise DamagedObjectError(f"repository config at {backend.location} fails authentication (it was altered)",
                                     _FIX_CONFIG)
        return cls(backend, config, cipher=cipher, unlocked=unlocked)

    @property
    def encrypted(self) -> bool:
        return self.config.encryption is not None

    @property
    def key_fingerprint(self) -> str | None:
        """A short one-way name of the master key (None when plain): tells a replaced key apart."""
        return self.cipher.fingerprint() if self.cipher is not None else None

    # -- key slots (encrypted repositories) -------------------------------------------------------
    def _require_keys(self) -> Unlocked:
        if self.unlocked is None:
            raise UsageError(f"repository {self.location} is not encrypted: it has no keys",
                             "create an encrypted repository with `stackvault init --encrypt`")
        return self.unlocked

    def add_key(self, passphrase: str) -> str:
        """A new key slot for `passphrase`; returns its id."""
        return keys.add_slot(self.backend, self.id, self._require_keys().master, passphrase, host=hostname())

    def list_keys(self) -> list[dict]:
        return keys.list_slots(self.backend, self.id, self._require_keys().slot_id)

    def remove_key(self, slot_id: str) -> None:
        keys.remove_slot(self.backend, self.id, slot_id, self._require_keys().slot_id)

    def damaged_key_slots(self) -> dict[str, keys.KeySlotError]:
        """The key slots that cannot be used (by object key, each saying why): `verify` names them.
        Read as stored: slots are never sealed, and are checked whatever passphrase opened this one."""
        return keys.read_slots(self.store, self.id)[1]

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def location(self) -> str:
        return self.backend.location

    @property
    def identity(self) -> str:
        """Where the repository really is (`Backend.identity`): what this proxy remembers it by."""
        return self.store.identity

    @property
    def parallel_calls(self) -> int:
        """Calls in flight that keep the store busy (`Backend.parallel_calls`): upload workers to run."""
        return self.store.parallel_calls

    # -- chunks --------------------------------------------------------------------------------
    @property
    def packed(self) -> bool:
        """Whether chunks live in pack files (format 4) rather than one object each."""
        return self.config.version >= PACKED_VERSION

    def has_chunk(self, digest: bytes) -> bool:
        if self.packed:
            return self.chunk_location(digest) is not None or (self._packer is not None and self._packer.holds(digest))
        return self.backend.exists(chunk_key(digest))

    def put_chunk(self, digest: bytes, blob: bytes) -> None:
        if not self.packed:
            self.backend.put(chunk_key(digest), blob)
            return
        stored = self.cipher.seal(chunk_key(digest), blob) if self.cipher is not None else blob
        self._pack_writer().add(digest, stored)

    def load_block(self, digest: bytes, length: int) -> bytes:
        """A block's plain bytes, verified against its digest. A damaged chunk is set aside (as PBS
        does), so that it counts as absent and the next Full backup stores it again."""
        return next(self.iter_blocks([(0, digest, length)]))[1]

    def iter_blocks(self, blocks: list[tuple[int, bytes, int]]) -> Iterator[tuple[int, bytes]]:
        """(position, plain bytes) of blocks given as (position, id, length), each verified, in no
        particular order. In a packed repository the chunks of one pack that lie near each other are
        read with one ranged request, and each range's blocks are given before the next is read, so
        memory holds one range (at most MAX_READ) and one block."""
        if not self.packed:
            for at, digest, length in blocks:
                yield at, self._decoded(digest, length, self._object_chunk(digest, length))
            return
        for at, digest, length, blob in self._pack_chunks(blocks):
            yield at, self._decoded(digest, length, blob)

    def _object_chunk(self, digest: bytes, length: int) -> bytes:
        try:
            return self.backend.get(chunk_key(digest))
        except KeyError:
            raise CorruptChunkError(digest.hex(), "missing from the repository") from None
        except ObjectAuthError as exc:
            self.set_aside(digest, length)
            raise CorruptChunkError(digest.hex(), exc.problem) from None

    def _decoded(self, digest: bytes, length: int, blob: bytes) -> bytes:
        try:
            return decode_chunk(digest, blob, length, self.hash_block)
        except CorruptChunkError:
            self.set_aside(digest, length)
            raise

    def _pack_chunks(self, blocks: list[tuple[int, bytes, int]]) -> Iterator[tuple[int, bytes, int, bytes]]:
        """(position, id, length, chunk unsealed) from the packs: neighbours in one pack (at most
        MERGE_GAP apart, at most MAX_READ in all) come with one ranged read."""
        located: list[tuple[Location, int, bytes, int]] = []
        for at, digest, length in blocks:
            loc = self.chunk_location(digest)
            if loc is None:
                raise CorruptChunkError(digest.hex(), "missing from the repository")
            located.append((loc, at, digest, length))
        located.sort(key=lambda item: (item[0].pack_id, item[0].offset))
        i = 0
        while i < len(located):
            pack_id = located[i][0].pack_id
            start, end = read_span(located[i][0], self.encrypted)
            j = i + 1
            while j < len(located) and located[j][0].pack_id == pack_id:
                s, e = read_span(located[j][0], self.encrypted)
                if s - end > MERGE_GAP or max(e, end) - start > MAX_READ:
                    break
                end = max(end, e)
                j += 1
            try:
                data = self.store.get_range(pack_key(pack_id), start, end - start)
            except KeyError:
                data = b""
            for loc, at, digest, length in located[i:j]:
                blob = data[loc.offset - start : loc.offset - start + loc.length]
                if len(blob) != loc.length:
                    raise CorruptChunkError(digest.hex(), f"its pack {pack_key(pack_id)} is missing or too short")
                if self.cipher is not None:
                    try:
                        blob = self.cipher.open(chunk_key(digest), blob)
                    except ObjectAuthError as exc:
                        raise CorruptChunkError(digest.hex(), f"in pack {pack_key(pack_id)}: {exc.problem}") from None
                yield at, digest, length, blob
            i = j

    # -- packs and chunk indexes (format 4) --------------------------------------------------------
    def _pack_writer(self) -> PackWriter:
        with self._packs_lock:
            if self._packer is None:
                assert self.config.pack_size is not None
                self._packer = PackWriter(self.store, self.cipher, self.config.pack_size,
                                          max(2, min(4, self.parallel_calls)))
            return self._packer

    def chunk_index(self) -> ChunkIndex:
        """Every chunk index file merged (read once, then kept current by this process's backups).
        A damaged file is left out and named in `damaged_chunk_indexes`: its chunks count as absent,
        so a Full stores them again and `verify` names the backups that need them."""
        with self._packs_lock:
            if self._chunk_index is None:
                parts = []
                for info in self.backend.list(CHUNK_INDEX):
                    try:
                        parts.append(ChunkIndex.from_bytes(self.backend.get(info.key), info.key))
                    except KeyError:
                        continue  # replaced by a gc meanwhile
                    except (PackFormatError, ObjectAuthError) as exc:
                        self.damaged_chunk_indexes[info.key] = exc.problem
                        warn(f"chunk index {info.key} is damaged ({exc.problem}); its chunks count as absent "
                             "until `stackvault gc` rebuilds the index from the packs")
                self._chunk_index = ChunkIndex.merged(parts) if parts else ChunkIndex([], b"")
            return self._chunk_index

    def chunk_location(self, digest: bytes) -> Location | None:
        return self.chunk_index().lookup(digest)

    def flush_packs(self) -> None:
        """Make the packs this run wrote durable, then write one chunk index file naming their
        chunks: an index never names a pack that is not stored, and the record commits after both."""
        if self._packer is None:
            return
        written = self._packer.flush()
        if not written:
            return
        self.store.sync()
        added = ChunkIndex.of_entries(written)
        index_id, data = added.to_bytes()
        self.backend.put(chunk_index_key(index_id), data)
        current = self.chunk_index()
        with self._packs_lock:
            self._chunk_index = ChunkIndex.merged([current, added])

    def pack_infos(self) -> dict[bytes, ObjectInfo]:
        """Every pack stored, by id (objects under `packs/` that no pack id names are left alone)."""
        found = {}
        for info in self.store.list(PACKS):
            pack_id = pack_id_of(info.key)
            if pack_id is not None:
                found[pack_id] = info
        return found

    def chunks_in_damaged_packs(self, digests: Iterable[bytes]) -> dict[bytes, str]:
        """Those of `digests` that the chunk index places in a missing or damaged pack, each with the
        pack's problem (`verify --deep`: the backups needing them are then named). Only the packs
        holding `digests` are read, each whole: its name must match its bytes, its header must parse
        (and authenticate)."""
        holding: dict[bytes, list[bytes]] = {}
        for digest in digests:
            loc = self.chunk_location(digest)
            if loc is not None:
                holding.setdefault(loc.pack_id, []).append(digest)
        present = self.pack_infos()
        found: dict[bytes, str] = {}
        for pack_id, held in holding.items():
            key = pack_key(pack_id)
            problem = None
            try:
                if pack_id not in present:
                    raise KeyError(key)
                check_pack(self.store.get(key), pack_id, self.cipher)
            except KeyError:
                problem = f"pack {key} is missing"
            except (PackFormatError, ObjectAuthError) as exc:
                problem = f"pack {key} is damaged: {exc.problem}"
            if problem is not None:
                found.update(dict.fromkeys(held, problem))
        return found

    def _replace_chunk_index(self, index: ChunkIndex, old: list[str]) -> None:
        new_key = None
        if len(index):
            index_id, data = index.to_bytes()
            new_key = chunk_index_key(index_id)
            self.backend.put(new_key, data)
            self.backend.sync()
        for key in old:
            if key != new_key:
                self.backend.delete(key)
        with self._packs_lock:
            self._chunk_index = index
            self.damaged_chunk_indexes.clear()

    def set_aside(self, digest: bytes, length: int) -> None:
        """Move a damaged chunk to `<key>.bad`, unchanged (an object store has no rename: the bytes
        are put under the new name, then the old one is deleted). Best effort: on a read-only
        repository the object stays, and the damage is reported all the same.

        The object is read again and moved only when those bytes are still damaged: meanwhile another
        reader may have set it aside and a Full stored a good copy, which must not be thrown away."""
        if self.packed:
            return  # a pack is never rewritten in place: `verify --deep` names the chunk and its backups
        key = chunk_key(digest)
        try:
            stored = self.store.get(key)
            if self._intact_chunk(digest, stored, length):
                return
            self.store.put(key + DAMAGED_SUFFIX, stored)
            self.store.delete(key)
        except KeyError:
            pass  # already set aside (a concurrent reader met it too)
        except (OSError, StackvaultError) as exc:
            warn(f"could not set the damaged object {key} aside ({exc}); the next Full cannot store it again "
                 "until it is moved or deleted")

    def _intact_chunk(self, digest: bytes, stored: bytes, length: int) -> bool:
        """Whether `stored` (as the store holds it: sealed when encrypted) is the intact chunk `digest`."""
        try:
            blob = self.cipher.open(chunk_key(digest), stored) if self.cipher is not None else stored
            decode_chunk(digest, blob, length, self.hash_block)
        except (ObjectAuthError, CorruptChunkError):
            return False
        return True

    def missing_chunks(self, digests: Iterable[bytes]) -> list[bytes]:
        """Those of `digests` whose chunk the repository does not hold, from one listing of `chunks/`
        (one call per thousand chunks on an object store, instead of one per chunk). In a packed
        repository: those the chunk index does not locate in a pack that is stored."""
        if self.packed:
            packs = self.pack_infos()
            return [d for d in digests if (loc := self.chunk_location(d)) is None or loc.pack_id not in packs]
        present = {chunk_id_of(o.key) for o in self.backend.list(CHUNKS)}
        return [d for d in digests if d not in present]

    # -- garbage (gc) ---------------------------------------------------------------------------
    def find_garbage(self, referenced: set[bytes], live_indexes: set[str], cutoff: float) -> Garbage:
        """What no backup needs: objects under `chunks/` that no id in `referenced` names (set-aside
        `.bad` ones included) written before `cutoff`, block indexes no record names (`live_indexes`:
        the `index` of every readable record's disks), and temporary files of killed writes.

        Only for `gc`, under the exclusive lock, with `referenced` complete: whatever is listed here
        is deleted by `delete_garbage`. In a packed repository, whole packs none of whose chunks is
        referenced (read from the packs' own headers, so a lost index file cannot make a live pack
        look dead), with the index of every pack kept."""
        if self.packed:
            return self._pack_garbage(referenced, live_indexes, cutoff)
        chunks = [o for o in self.backend.list(CHUNKS) if chunk_id_of(o.key) not in referenced and o.mtime <= cutoff]
        indexes = [o.key for o in self.backend.list(INDEXES) if o.key not in live_indexes]
        return Garbage(chunks, indexes, list(self.backend.temp_files()))

    def _pack_garbage(self, referenced: set[bytes], live_indexes: set[str], cutoff: float) -> Garbage:
        """Dead packs, packs to rewrite, and the index of the packs kept whole. Newest packs first:
        a chunk stored twice (two backups at once, or a repack a crash interrupted) is live in the
        newest pack holding it only, so the older copy's pack can go."""
        dead: list[ObjectInfo] = []
        dead_chunks = 0
        kept: list[ChunkIndex] = []
        repack: list[tuple[ObjectInfo, Entries]] = []
        claimed: set[bytes] = set()
        for pack_id, info in sorted(self.pack_infos().items(), key=lambda item: -item[1].mtime):
            try:
                entries = read_header(self.store, pack_id, info.size, self.cipher)
            except (PackFormatError, ObjectAuthError) as exc:
                raise RepositoryError(f"gc stopped before deleting anything: {exc.message}",
                                      "run `stackvault verify --deep` to name the backups it holds") from None
            except KeyError:
                continue
            live = [e for e in entries if e[0] in referenced and e[0] not in claimed]
            claimed.update(d for d, _, _ in live)
            if info.mtime > cutoff:
                kept.append(ChunkIndex.of_entries((d, Location(pack_id, o, n)) for d, o, n in entries))
            elif not live:
                dead.append(info)
                dead_chunks += len(entries)
            elif sum(n for _, _, n in live) < REPACK_BELOW * sum(n for _, _, n in entries):
                repack.append((info, live))
                dead_chunks += len(entries) - len(live)
            else:
                kept.append(ChunkIndex.of_entries((d, Location(pack_id, o, n)) for d, o, n in entries))
        indexes = [o.key for o in self.backend.list(INDEXES) if o.key not in live_indexes]
        return Garbage(dead, indexes, list(self.backend.temp_files()), dead_chunks=dead_chunks,
                       chunk_indexes=tuple(o.key for o in self.backend.list(CHUNK_INDEX)),
                       kept_index=ChunkIndex.merged(kept) if kept else ChunkIndex([], b""), repack=tuple(repack))

    def _repack(self, repack: Iterable[tuple[ObjectInfo, Entries]]) -> ChunkIndex:
        """Copy the live chunks of `repack`'s packs into new packs (bytes unchanged: a sealed chunk
        is bound to its id, not to its pack), durable on return; the new packs' index."""
        writer = PackWriter(self.store, self.cipher, self.config.pack_size or DEFAULT_PACK_SIZE,
                            max(2, min(4, self.parallel_calls)))
        try:
            for info, live in repack:
                data = self.store.get(info.key)
                for digest, offset, length in live:
                    writer.add(digest, data[offset : offset + length])
            written = writer.flush()
        finally:
            writer.close()
        self.store.sync()
        return ChunkIndex.of_entries(written)

    def delete_garbage(self, garbage: Garbage) -> None:
        """Delete what `find_garbage` found. Packed: the live chunks of packs to rewrite are copied
        into new packs (made durable), then the index of every kept and new pack is written (and made
        durable), then the old index files go, then the dead and rewritten packs: at every step each
        index names only stored packs, and a pack left behind by a crash is found again by the next
        gc (a copy a crash left behind is a duplicate: the newest holder of a chunk wins)."""
        if garbage.kept_index is not None:
            index = garbage.kept_index
            if garbage.repack:
                index = ChunkIndex.merged([index, self._repack(garbage.repack)])
            self._replace_chunk_index(index, list(garbage.chunk_indexes))
        for info, _ in garbage.repack:
            self.backend.delete(info.key)
        for obj in garbage.chunks:
            self.backend.delete(obj.key)
        for key in garbage.indexes:
            self.backend.delete(key)
        # A file system keeps the folder of a pruned or killed backup's indexes: one per backup.
        self.backend.remove_empty_dirs(INDEXES)
        for key in garbage.temp_files:
            self.backend.delete(key)

    # -- block indexes -------------------------------------------------------------------------
    def put_index(self, backup_id: str, position: int, index: BlockIndex) -> tuple[str, bytes]:
        """Store the block index of a backup's disk at `position`; returns its key (what the record
        names) and its bytes (what the working state keeps)."""
        if self.config.version < SPARSE_VERSION:
            self._raise_format()
        key, data = index_key(backup_id, position), index.to_bytes()
        self.backend.put(key, data)
        return key, data

    def _raise_format(self) -> None:
        """Make the config say version 3 before the first sparse index is written: a stackvault that
        knows only versions 1 and 2 then says "upgrade stackvault" instead of finding damaged
        indexes. Everything else in the config stays; an encrypted one is authenticated anew."""
        self.config.version = SPARSE_VERSION
        doc = self.config.to_doc()
        if self.cipher is not None:
            doc["mac"] = self.cipher.mac(doc)
        doc["checksum"] = canonical_checksum(doc)
        self.backend.put(CONFIG, json.dumps(doc, indent=1).encode())
        self.backend.sync()

    def get_index(self, disk: DiskRecord) -> BlockIndex:
        return self.read_index(disk)[0]

    def read_index(self, disk: DiskRecord) -> tuple[BlockIndex, bytes]:
        """A disk's block index, checked against its record, and its bytes as stored (unsealed)."""
        try:
            data = self.backend.get(disk.index, max_stored_size(disk.size, disk.block_size))
            index = BlockIndex.from_bytes(data, disk.size, disk.block_size)
        except KeyError:
            raise RepositoryError(f"block index {disk.index} is missing",
                                  "run `stackvault verify`; this backup cannot be restored") from None
        except (IndexFormatError, ObjectAuthError, ObjectTooLargeError) as exc:
            problem = str(exc) if isinstance(exc, IndexFormatError) else exc.problem
            raise RepositoryError(f"block index {disk.index} is damaged: {problem}",
                                  "run `stackvault verify`; this backup cannot be restored") from None
        if index.checksum().hex() != disk.index_checksum:
            raise RepositoryError(f"block index {disk.index} does not match its backup record "
                                  f"(size, block size or checksum)",
                                  "run `stackvault verify`; this backup cannot be restored")
        return index, data

    # -- backup records ------------------------------------------------------------------------
    def backup_ids(self) -> list[str]:
        """Committed backups, oldest first (ids sort by time). Objects whose names are no backup id
        (nothing stackvault writes) are not backups."""
        ids = (backup_id_of(o.key) for o in self.backend.list(BACKUPS))
        return sorted(i for i in ids if i is not None and valid_backup_id(i))

    def get_backup(self, backup_id: str) -> BackupRecord:
        """A backup's record, checked (checksum or authentication, every field, its own id);
        raises DamagedRecordError naming the problem when it cannot be used."""
        rec = self._records.get(backup_id)
        if rec is None:
            try:
                raw = self.backend.get(backup_key(backup_id), MAX_RECORD_BYTES)
            except KeyError:
                raise NotFoundError(f"no backup {backup_id} in {self.location}",
                                    "list backups with `stackvault list`") from None
            except (ObjectAuthError, ObjectTooLargeError) as exc:
                raise DamagedRecordError(backup_id, exc.problem) from None
            if not self.encrypted and raw[:4] == SEALED_MAGIC:
                raise RepositoryError(f"backup record {backup_key(backup_id)} is encrypted but the repository "
                                      "config says the repository is not: the config was replaced", _FIX_CONFIG)
            try:
                rec = BackupRecord.from_json(raw, backup_id)
            except RecordFormatError as exc:
                raise DamagedRecordError(backup_id, str(exc)) from None
            self._records[backup_id] = rec
        return rec

    def scan(self) -> tuple[list[BackupRecord], dict[str, DamagedRecordError]]:
        """Every readable backup record (oldest first), and the damaged ones apart, each named."""
        good: list[BackupRecord] = []
        damaged: dict[str, DamagedRecordError] = {}
        for backup_id in self.backup_ids():
            try:
                good.append(self.get_backup(backup_id))
            except DamagedRecordError as exc:
                damaged[backup_id] = exc
            except NotFoundError:
                continue  # forgotten meanwhile
        return good, damaged

    def backups(self) -> list[BackupRecord]:
        """The readable backup records, oldest first: one damaged record never blocks the others
        (`verify` names it; `scan` gives it to whoever must not go on without it, as gc)."""
        return self.scan()[0]

    def commit_backup(self, record: BackupRecord) -> None:
        """Make the backup exist: everything it references must already be durable."""
        self.flush_packs()
        self.backend.sync()
        self.backend.put(backup_key(record.backup_id), record.to_json())
        self.backend.sync()
        self._records[record.backup_id] = record
        if self.on_commit is not None:
            self.on_commit(record.backup_id)

    def forget_backup(self, backup_id: str, job: str) -> None:
        """Remove a backup record and its indexes, even when the record is damaged (its indexes are
        found by their key prefix, not by the record); its chunks stay until `gc`.

        A tombstone is written first: other proxies, whose catalogs still list the backup, then drop
        it as forgotten on purpose instead of reporting a deletion nobody asked for (`job` names the
        command that forgot it)."""
        if not valid_backup_id(backup_id) or not self.backend.exists(backup_key(backup_id)):
            raise NotFoundError(f"no backup {backup_id} in {self.location}", "list backups with `stackvault list`")
        tombstone = {"format": TOMBSTONE_FORMAT, "backup_id": backup_id, "forgotten": _now(), "host": hostname(),
                     "job": job}
        self.backend.put(tombstone_key(backup_id), json.dumps(tombstone, indent=1).encode())
        self.backend.sync()
        self.backend.delete(backup_key(backup_id))  # next: the backup stops existing atomically
        for obj in list(self.backend.list(index_folder(backup_id))):
            self.backend.delete(obj.key)
        self.proofs.delete(backup_id)
        self._records.pop(backup_id, None)

    def was_forgotten(self, backup_id: str) -> bool:
        """Whether a `forget` or `prune` (of any proxy) removed this backup: its tombstone is there, is
        intact and names it. Sealed in an encrypted repository, so a store cannot forge one there; an
        unreadable one counts as absent (the backup stays reported as missing)."""
        if not valid_backup_id(backup_id):  # a catalog row is no safe object key
            return False
        try:
            doc = json.loads(self.backend.get(tombstone_key(backup_id), MAX_TOMBSTONE_BYTES))
        except (KeyError, ValueError, RecursionError, ObjectAuthError, ObjectTooLargeError):
            return False
        return isinstance(doc, dict) and doc.get("format") == TOMBSTONE_FORMAT and doc.get("backup_id") == backup_id

    def resolve(self, ref: str) -> str:
        """A backup id from an id, a unique prefix, or `latest`."""
        ids = self.backup_ids()
        if ref == "latest":
            if not ids:
                raise NotFoundError(f"no backups in {self.location}", "make one with `stackvault backup`")
            return ids[-1]
        return resolve_prefix(ref, ids, self.location)

    def latest_disk(self, disk_key: str, *, full_only: bool = False) -> tuple[BackupRecord, DiskRecord] | None:
        """The newest committed backup holding this disk (its newest Full with `full_only`); a damaged
        record is passed over (verify names it), so the next backup builds on the newest usable one."""
        for backup_id in reversed(self.backup_ids()):
            try:
                record = self.get_backup(backup_id)
            except (DamagedRecordError, NotFoundError):
                continue
            for disk in record.disks:
                if disk.disk_key == disk_key and (not full_only or disk.level == "full"):
                    return record, disk
        return None


def _parse_config(raw: bytes, location: str) -> tuple[RepoConfig, dict]:
    """The config, every field checked, so a damaged or planted config is named in one line (exit 3)
    and never misread (a wrong block size would restore garbage)."""
    def damaged(problem: str) -> DamagedObjectError:
        return DamagedObjectError(f"repository config at {location} is damaged ({problem})", _FIX_CONFIG)

    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise damaged("not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RepositoryError(f"{location} is not a stackvault repository", "pass the right --repo")
    version = doc.get("version", PLAIN_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < PLAIN_VERSION:
        raise damaged(f"invalid version {version!r}")
    if version > FORMAT_VERSION:  # first: a newer format may check itself otherwise
        raise RepositoryError(f"repository {location} has format version {version}, newer than this "
                              f"stackvault {__version__} supports ({FORMAT_VERSION})", "upgrade stackvault")
    # The checksum names accidental damage before a passphrase is asked (written to every config since
    # it exists; a plain one without it is accepted as older versions wrote it).
    if "checksum" in doc and doc["checksum"] != canonical_checksum(doc):
        raise DamagedObjectError(f"repository config at {location} (format version {version}) is damaged "
                                 "(checksum mismatch)", _FIX_CONFIG)
    known = set(RepoConfig.__dataclass_fields__)
    try:
        config = RepoConfig(**{k: v for k, v in doc.items() if k in known})
    except TypeError:
        raise damaged("a field is missing") from None
    for name, kind in (("id", str), ("created", str), ("block_size", int), ("compression_level", int),
                       ("hash", str), ("chunk_codec", str)):
        value = getattr(config, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise damaged(f"field {name!r} has the wrong type")
    bs = config.block_size
    if bs < MIN_BLOCK or bs > MAX_BLOCK or bs & (bs - 1):
        raise damaged(f"invalid block size {bs}")
    if not -(1 << 17) <= config.compression_level <= 22:
        raise damaged(f"invalid compression level {config.compression_level}")
    if version >= PACKED_VERSION:
        pack_size = config.pack_size
        if not isinstance(pack_size, int) or isinstance(pack_size, bool) or not MIN_PACK <= pack_size <= MAX_PACK:
            raise damaged(f"invalid pack size {pack_size!r}")
    elif config.pack_size is not None:
        raise damaged(f"a pack size in a format {version} config")
    if config.chunk_codec != "zstd" or config.hash not in ("blake3", "blake3-keyed"):
        raise RepositoryError(f"repository {location} uses {config.chunk_codec}/{config.hash}, which this "
                              "stackvault does not know", "upgrade stackvault")
    return config, doc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hostname() -> str:
    return socket.gethostname()

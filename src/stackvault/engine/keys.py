"""Key slots: the repository's master key wrapped by passphrases, one object `keys/<id>.json` each.

As LUKS and restic do it: the master key never changes (so adding or removing a passphrase rewrites
nothing but a slot), and each slot holds it sealed with a key stretched from one passphrase by
scrypt, whose parameters are recorded in the slot so they can grow with hardware. A slot carries:

- `check`: 16 bytes derived from the stretched key, so a passphrase that is not this slot's is told
  apart from a slot whose sealed key was altered;
- `checksum`: BLAKE3 of the rest, so accidental damage is named before any passphrase is tried.

The wrapped master key is authenticated together with every other field of the slot (and the
repository id), so a slot copied from another repository or edited by hand never opens.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import RepositoryError, UsageError, warn
from ..storage import Backend
from ..storage.base import SMALL_OBJECT_BYTES, ObjectTooLargeError
from .crypto import CIPHER, MASTER_KEY_SIZE, NONCE_SIZE, canonical, canonical_checksum, derive
from .layout import KEY_SLOTS, slot_id_of, slot_key

SLOT_FORMAT = "stackvault-key"
SLOT_VERSION = 1
# scrypt N=2^16, r=8, p=1: 64 MiB and ~0.5 s per try on this class of machine (docs/encryption.md).
SCRYPT_N = 1 << 16
SCRYPT_R = 8
SCRYPT_P = 1
# The store writes the slots, so their cost is hostile input: a slot asking for more than 1 GiB
# (128 * n * r bytes) or more than 32 times the default work (n * r * p) is skipped, never tried.
_MAX_N, _MAX_R, _MAX_P = 1 << 20, 64, 16
_MAX_MEMORY = 1 << 30
_MAX_WORK = 32 * SCRYPT_N * SCRYPT_R * SCRYPT_P
#: Unlocking tries at most this many slots, cheapest first, within this much scrypt work in all
#: (about 16 s here): planted slots cannot make an open slow.
MAX_SLOTS_TRIED = 16
_UNLOCK_WORK = 4 * _MAX_WORK
ENV = "STACKVAULT_PASSPHRASE"
NEW_ENV = "STACKVAULT_NEW_PASSPHRASE"
#: The passphrase of the repository `stackvault copy` copies to.
TO_ENV = "STACKVAULT_TO_PASSPHRASE"


class PassphraseError(UsageError):
    """No passphrase was given, or the one given opens no key slot."""


class KeySlotError(RepositoryError):
    """A key slot object is damaged or was altered."""

    exit_code = 3

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"key slot {key} is damaged: {problem}",
                         "open the repository with another passphrase and `stackvault key remove` this slot")


@dataclass
class Unlocked:
    """The result of a successful unlock: the master key and the slot that opened it."""

    master: bytes
    slot_id: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _stretch(passphrase: str, kdf: dict) -> bytes:
    n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    return hashlib.scrypt(passphrase.encode(), salt=base64.b64decode(kdf["salt"]), n=n, r=r, p=p,
                          maxmem=256 * r * (n + p) + (32 << 20), dklen=32)


def _wrapping(doc: dict) -> bytes:
    """What the sealed master key is authenticated with: every field but the seal and the checksum."""
    return canonical({k: v for k, v in doc.items() if k not in ("wrapped", "checksum")})


def new_slot(repo_id: str, master: bytes, passphrase: str, *, n: int | None = None, r: int | None = None,
             p: int | None = None, host: str = "") -> dict:
    """A new key slot document holding `master` under `passphrase` (scrypt cost: the module's defaults)."""
    kdf = {"name": "scrypt", "n": n or SCRYPT_N, "r": r or SCRYPT_R, "p": p or SCRYPT_P, "salt": _b64(os.urandom(16))}
    kek = _stretch(passphrase, kdf)
    nonce = os.urandom(NONCE_SIZE)
    doc = {"format": SLOT_FORMAT, "version": SLOT_VERSION, "id": secrets.token_hex(8), "repository": repo_id,
           "created": datetime.now(UTC).isoformat(timespec="seconds"), "host": host, "kdf": kdf,
           "cipher": CIPHER, "check": derive(kek, "key slot check")[:16].hex(), "nonce": _b64(nonce)}
    doc["wrapped"] = _b64(AESGCM(derive(kek, "key slot wrapping")).encrypt(nonce, master, _wrapping(doc)))
    doc["checksum"] = canonical_checksum(doc)
    return doc


def parse_slot(key: str, raw: bytes, repo_id: str) -> dict:
    """A slot document, checked for damage (not yet for the passphrase)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise KeySlotError(key, "not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != SLOT_FORMAT:
        raise KeySlotError(key, "not a stackvault key slot")
    if doc.get("checksum") != canonical_checksum(doc):
        raise KeySlotError(key, "checksum mismatch")
    version = doc.get("version")
    if not _is_int(version):
        raise KeySlotError(key, f"invalid version {version!r}")
    if version > SLOT_VERSION:
        raise RepositoryError(f"key slot {key} has version {version}, newer than this stackvault reads",
                              "upgrade stackvault")
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict):
        raise KeySlotError(key, "KDF parameters missing")
    if doc.get("repository") != repo_id:
        raise KeySlotError(key, "belongs to another repository")
    if kdf.get("name") != "scrypt" or doc.get("cipher") != CIPHER:
        raise KeySlotError(key, f"unknown KDF or cipher ({kdf.get('name')}, {doc.get('cipher')})")
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if not (_is_int(n) and _is_int(r) and _is_int(p)):
        raise KeySlotError(key, "KDF parameters missing or not integers")
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P
            and 128 * n * r <= _MAX_MEMORY and n * r * p <= _MAX_WORK):
        raise KeySlotError(key, f"unreasonable scrypt parameters n={n} r={r} p={p}")
    for name, size in (("salt", 16), ("nonce", NONCE_SIZE), ("wrapped", MASTER_KEY_SIZE + 16)):
        if not isinstance(doc.get(name) if name != "salt" else kdf.get("salt"), str):
            raise KeySlotError(key, f"field {name!r} missing or not text")
        try:
            raw = base64.b64decode(doc[name] if name != "salt" else kdf["salt"], validate=True)
        except ValueError:
            raise KeySlotError(key, f"field {name!r} is not base64") from None
        if len(raw) != size:
            raise KeySlotError(key, f"field {name!r} has {len(raw)} bytes, not {size}")
    if not isinstance(doc.get("id"), str) or not isinstance(doc.get("check"), str):
        raise KeySlotError(key, "field 'id' or 'check' missing or not text")
    return doc


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _work(doc: dict) -> int:
    """The scrypt work a slot asks for (n * r * p): unlocking tries cheap slots first."""
    kdf = doc["kdf"]
    return kdf["n"] * kdf["r"] * kdf["p"]


def unwrap(key: str, doc: dict, passphrase: str) -> bytes | None:
    """The master key, or None when the passphrase is not this slot's. Raises when the slot was altered."""
    kek = _stretch(passphrase, doc["kdf"])
    if not secrets.compare_digest(derive(kek, "key slot check")[:16].hex(), str(doc.get("check"))):
        return None
    try:
        master = AESGCM(derive(kek, "key slot wrapping")).decrypt(
            base64.b64decode(doc["nonce"]), base64.b64decode(doc["wrapped"]), _wrapping(doc))
    except (InvalidTag, ValueError, KeyError):
        raise KeySlotError(key, "its sealed master key fails authentication (altered)") from None
    if len(master) != MASTER_KEY_SIZE:
        raise KeySlotError(key, "its master key has the wrong length")
    return master


def read_slots(backend: Backend, repo_id: str) -> tuple[dict[str, dict], dict[str, KeySlotError]]:
    """Every slot of the repository by object key, and the damaged ones apart (each named)."""
    good: dict[str, dict] = {}
    bad: dict[str, KeySlotError] = {}
    for obj in sorted(backend.list(KEY_SLOTS), key=lambda o: o.key):
        if not obj.key.endswith(".json"):
            continue
        try:
            good[obj.key] = parse_slot(obj.key, backend.get(obj.key, SMALL_OBJECT_BYTES), repo_id)
        except KeyError:
            continue  # removed meanwhile
        except ObjectTooLargeError as exc:
            bad[obj.key] = KeySlotError(obj.key, exc.problem)
        except KeySlotError as exc:
            bad[obj.key] = exc
    return good, bad


def unlock(backend: Backend, repo_id: str, passphrase: str) -> Unlocked:
    """Try the passphrase on the slots, cheapest first, within a bound on their number and work; a
    damaged slot is never used: skipped with a warning when another opens, named if nothing does."""
    good, bad = read_slots(backend, repo_id)
    spent = tried = 0
    for key, doc in sorted(good.items(), key=lambda kv: (_work(kv[1]), kv[0])):
        if tried >= MAX_SLOTS_TRIED or spent + _work(doc) > _UNLOCK_WORK:
            untried = len(good) - tried
            raise PassphraseError(f"wrong passphrase for repository {backend.location}: it opens none of the "
                                  f"{tried} key slots tried; {untried} more were not tried (at most "
                                  f"{MAX_SLOTS_TRIED} are, so that planted slots cannot make unlocking slow)",
                                  f"check {ENV} or --passphrase-file; remove unknown slots (`stackvault key list`)")
        tried += 1  # noqa: SIM113 - counted beside `spent`, the other bound
        spent += _work(doc)
        master = unwrap(key, doc, passphrase)
        if master is not None:
            for exc in bad.values():
                warn(f"{exc.message} (skipped; {exc.fix})")
            return Unlocked(master, doc["id"])
    if not good and not bad:
        raise RepositoryError(f"encrypted repository {backend.location} has no key slots (keys/ is empty)",
                              "restore the keys/ objects from another copy of the repository")
    damaged = "".join(f"; {exc.message}" for exc in bad.values())
    if len(bad) == 1 and not good:
        only = next(iter(bad.values()))
        raise KeySlotError(only.key, f"{only.problem}; it is the repository's only key slot")
    if not good:
        raise RepositoryError(f"every key slot of {backend.location} is damaged{damaged}",
                              "restore the keys/ objects from another copy of the repository")
    raise PassphraseError(f"wrong passphrase for repository {backend.location}: it opens none of its "
                          f"{len(good) + len(bad)} key slots{damaged}",
                          f"check {ENV} or --passphrase-file")


def add_slot(backend: Backend, repo_id: str, master: bytes, passphrase: str, host: str = "") -> str:
    doc = new_slot(repo_id, master, passphrase, host=host)
    backend.put(slot_key(doc["id"]), json.dumps(doc, indent=1).encode())
    backend.sync()
    return doc["id"]


def list_slots(backend: Backend, repo_id: str, current: str | None) -> list[dict]:
    good, bad = read_slots(backend, repo_id)
    rows = [{"id": d["id"], "created": d.get("created"), "host": d.get("host"), "current": d["id"] == current,
             "kdf": {k: d["kdf"][k] for k in ("name", "n", "r", "p")}, "status": "ok"} for d in good.values()]
    rows += [{"id": slot_id_of(key), "created": None, "host": None, "current": False,
              "kdf": None, "status": f"damaged: {exc.problem}"} for key, exc in bad.items()]
    return sorted(rows, key=lambda r: (r["created"] or "", r["id"]))


def remove_slot(backend: Backend, repo_id: str, slot_id: str, current: str | None) -> None:
    """Delete a slot; never the last good one, nor the one this process opened the repository with."""
    good, bad = read_slots(backend, repo_id)
    key = slot_key(slot_id)
    if key not in good and key not in bad:
        from ..errors import NotFoundError

        known = ", ".join(str(slot_id_of(k)) for k in [*good, *bad])
        raise NotFoundError(f"no key slot {slot_id!r} in {backend.location}", f"choose one of: {known}")
    if key in good and len(good) == 1:
        raise UsageError(f"key slot {slot_id} is the repository's last key slot: removing it would make "
                         "the repository unreadable forever", "add another with `stackvault key add` first")
    if slot_id == current:
        raise UsageError(f"key slot {slot_id} is the one this command opened the repository with",
                         "open it with another passphrase to remove this one")
    backend.delete(key)
    backend.sync()


# -- passphrases ----------------------------------------------------------------------------------

#: A passphrase is a line; a file larger than this was given by mistake and is not read whole.
MAX_PASSPHRASE_FILE = 64 << 10


def _read_file(path: str) -> str:
    """The passphrase in `path`, refused (as ssh refuses a private key) when other users can read it.

    A regular file whose group or others have any permission gives the passphrase, and with it every
    backup, to every local user; pipes and terminals (`--passphrase-file <(vault read ...)`) are not
    files others can open later, so only regular files are checked.
    """
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
                raise UsageError(f"passphrase file {path} is accessible by other users "
                                 f"(mode {stat.S_IMODE(info.st_mode):04o})", f"chmod 600 {path}")
            data = f.read(MAX_PASSPHRASE_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read passphrase file {path}: {exc.strerror}", "check --passphrase-file") from None
    if len(data) > MAX_PASSPHRASE_FILE:
        raise UsageError(f"passphrase file {path} is larger than {MAX_PASSPHRASE_FILE >> 10} KiB",
                         "it must hold the passphrase alone, on one line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"passphrase file {path} is not UTF-8 text", "save the passphrase as UTF-8") from None
    return text.removesuffix("\n").removesuffix("\r")


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def passphrase(location: str, file: str | None, env: str = ENV, option: str = "--passphrase-file") -> str:
    """The passphrase of an existing repository: the file (`option`), else the environment variable
    `env`, else a prompt. `copy` asks the same way for its second repository, under its own names."""
    if file:
        return _read_file(file)
    if env in os.environ:
        return os.environ[env]
    if _interactive():
        return getpass.getpass(f"passphrase for {location}: ")
    raise PassphraseError(f"repository {location} is encrypted and no passphrase was given",
                          f"set {env}, pass {option} PATH, or run on a terminal to be asked")


def new_passphrase(location: str, file: str | None, env: str, option: str) -> str:
    """A passphrase being set (init, key add): from the file or environment named, else asked twice."""
    if file:
        text = _read_file(file)
    elif env in os.environ:
        text = os.environ[env]
    elif _interactive():
        text = getpass.getpass(f"new passphrase for {location}: ")
        if getpass.getpass("repeat it: ") != text:
            raise PassphraseError("the two passphrases differ", "type the same passphrase twice")
    else:
        raise PassphraseError(f"no new passphrase for {location} was given",
                              f"set {env}, pass {option} PATH, or run on a terminal to be asked")
    if not text:
        raise PassphraseError("the new passphrase is empty", "choose a passphrase of several words")
    return text

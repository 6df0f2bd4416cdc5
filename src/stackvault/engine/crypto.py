"""Encryption at rest: sealed repository objects, keyed chunk ids, and the master key's subkeys.

An encrypted repository stores every object except `config` and the key slots (`keys/`) sealed with
AES-256-GCM under a key derived from the repository's master key, with a fresh random 96-bit nonce
and the object's own key as associated data, so a store that swaps, truncates or flips the bytes of
any object is caught on read and the object is named. Chunk ids are BLAKE3 keyed with another subkey,
so the store (which sees chunk names) cannot tell whether a known block is in the repository.

The sealing lives in a `Backend` wrapper (as restic layers behaviour over one backend interface):
everything that reads or writes repository objects -- chunks, block indexes, backup records, proofs
of quiesce, the saved proxy state, locks -- is encrypted without knowing it.
"""

from __future__ import annotations

import json
import os

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import RepositoryError
from ..storage import Backend
from ..storage.base import BackendWrapper, ObjectTooLargeError
from .layout import CONFIG, KEY_SLOTS

MAGIC = b"SVE1"
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = len(MAGIC) + NONCE_SIZE + TAG_SIZE
CIPHER = "aes-256-gcm"
MASTER_KEY_SIZE = 32
# Readable before the master key is known: `config` says the repository is encrypted, the slots
# hold the master key wrapped by passphrases. Both carry their own checks (keys.py, repository.py).
PLAIN_KEYS = (CONFIG,)
PLAIN_PREFIXES = (KEY_SLOTS,)
# BLAKE3 derive_key contexts: globally unique, fixed forever (changing one makes every repository unreadable).
_CONTEXT = "stackvault 2026-12 repository {}"


class ObjectAuthError(RepositoryError):
    """A sealed object failed authentication: it was altered, damaged, swapped or written by another key."""

    exit_code = 3

    def __init__(self, key: str, problem: str = "fails authentication (altered, damaged or swapped)") -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"repository object {key} {problem}",
                         "run `stackvault verify --deep`; restore the object from another copy of the repository")


def derive(master: bytes, purpose: str) -> bytes:
    """A 32-byte subkey of the master key for one purpose (BLAKE3's key derivation mode)."""
    return blake3.blake3(master, derive_key_context=_CONTEXT.format(purpose)).digest()


def canonical(doc: dict) -> bytes:
    """The bytes a JSON document is authenticated as: sorted keys, no whitespace."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def canonical_checksum(doc: dict) -> str:
    """Hex BLAKE3 of the canonical JSON of every field but `checksum`: the checksum a JSON object of
    the repository (config, backup records, key slots) carries to name accidental damage. It proves
    nothing against a store that rewrites both (only the seal or the config's MAC does)."""
    return blake3.blake3(canonical({k: v for k, v in doc.items() if k != "checksum"})).hexdigest()


def is_plain(key: str) -> bool:
    return key in PLAIN_KEYS or key.startswith(PLAIN_PREFIXES)


class RepositoryCipher:
    """What the master key gives: sealing and opening objects, keyed chunk ids, the config's MAC."""

    def __init__(self, master: bytes) -> None:
        if len(master) != MASTER_KEY_SIZE:
            raise ValueError("master key must be 32 bytes")
        self._aead = AESGCM(derive(master, "object encryption"))
        self._id_key = derive(master, "chunk id")
        self._mac_key = derive(master, "config authentication")
        self._fingerprint = derive(master, "key fingerprint")[:16].hex()

    def fingerprint(self) -> str:
        """32 hex digits naming the master key without revealing it (a one-way subkey): what the
        proxy remembers to notice a repository whose key was replaced."""
        return self._fingerprint

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        """A block's id: BLAKE3 keyed by the repository, so equal blocks dedup but cannot be fingerprinted."""
        return blake3.blake3(data, key=self._id_key).digest()

    def seal(self, key: str, data: bytes | bytearray | memoryview) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, MAGIC + key.encode())

    def open(self, key: str, blob: bytes) -> bytes:
        if len(blob) < OVERHEAD or blob[:4] != MAGIC:
            raise ObjectAuthError(key, "is not an encrypted object (bad header or too short)")
        nonce = blob[4 : 4 + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, memoryview(blob)[4 + NONCE_SIZE :], MAGIC + key.encode())
        except InvalidTag:
            raise ObjectAuthError(key) from None

    def mac(self, doc: dict) -> str:
        """Hex keyed BLAKE3 of a JSON document: authenticates the plaintext `config`."""
        return blake3.blake3(canonical(doc), key=self._mac_key).hexdigest()


class EncryptedBackend(BackendWrapper):
    """A backend whose objects are sealed on `put` and opened (authenticated) on `get`.

    Keys, sizes and times stay visible to the store; contents never do. Every other call of the
    interface (`list`, `delete`, `temp_files`...) is passed through.
    """

    def __init__(self, inner: Backend, cipher: RepositoryCipher) -> None:
        super().__init__(inner)
        self.cipher = cipher

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.put(key, data if is_plain(key) else self.cipher.seal(key, data))

    def get(self, key: str, max_size: int | None = None) -> bytes:
        if is_plain(key) or max_size is None:
            blob = self.inner.get(key, max_size)
            return blob if is_plain(key) else self.cipher.open(key, blob)
        try:  # sealed, an object is its plain bytes and OVERHEAD
            blob = self.inner.get(key, max_size + OVERHEAD)
        except ObjectTooLargeError:
            raise ObjectTooLargeError(key, max_size) from None
        return self.cipher.open(key, blob)

"""Encryption at rest, one function at a time: sealing, keyed ids, key slots, opening a repository."""

import json

import blake3
import pytest

from stackvault.engine import keys, repository
from stackvault.engine.chunks import encode_chunk
from stackvault.engine.crypto import EncryptedBackend, ObjectAuthError, RepositoryCipher, canonical_checksum
from stackvault.engine.repository import Repository
from stackvault.errors import RepositoryError, UsageError
from stackvault.storage.memory import MemoryBackend

MASTER = bytes(range(32))
SECRET_BLOCK = b"the plaintext the store must never see " * 100


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch):
    """scrypt at its real cost takes ~0.5 s per slot; these tests check logic, not cost."""
    monkeypatch.setattr(keys, "SCRYPT_N", 1 << 10)


def test_sealed_object_opens_only_under_its_own_key():
    cipher = RepositoryCipher(MASTER)
    blob = cipher.seal("chunks/ab/ab01", SECRET_BLOCK)
    assert SECRET_BLOCK[:40] not in blob
    assert cipher.open("chunks/ab/ab01", blob) == SECRET_BLOCK
    with pytest.raises(ObjectAuthError, match="chunks/cd/cd02"):
        cipher.open("chunks/cd/cd02", blob)  # swapped into another object's place
    flipped = bytearray(blob)
    flipped[-20] ^= 1
    with pytest.raises(ObjectAuthError, match="fails authentication"):
        cipher.open("chunks/ab/ab01", bytes(flipped))
    with pytest.raises(ObjectAuthError):
        RepositoryCipher(bytes(32)).open("chunks/ab/ab01", blob)  # another repository's key


def test_two_seals_of_the_same_bytes_differ():
    cipher = RepositoryCipher(MASTER)
    assert cipher.seal("k", b"x") != cipher.seal("k", b"x")  # random nonces


def test_chunk_ids_are_keyed():
    one, other = RepositoryCipher(MASTER), RepositoryCipher(bytes(32))
    assert one.chunk_id(SECRET_BLOCK) == one.chunk_id(SECRET_BLOCK)
    assert one.chunk_id(SECRET_BLOCK) != blake3.blake3(SECRET_BLOCK).digest()
    assert one.chunk_id(SECRET_BLOCK) != other.chunk_id(SECRET_BLOCK)


def test_wrapper_keeps_config_and_key_slots_readable():
    inner = MemoryBackend()
    backend = EncryptedBackend(inner, RepositoryCipher(MASTER))
    backend.put("config", b"{}")
    backend.put("keys/a.json", b"{}")
    backend.put("backups/x.json", b"{}")
    assert inner.get("config") == b"{}" and inner.get("keys/a.json") == b"{}"
    assert inner.get("backups/x.json") != b"{}" and backend.get("backups/x.json") == b"{}"


def test_key_slot_round_trip_and_recorded_cost():
    doc = keys.new_slot("repo1", MASTER, "correct horse")
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["n"] == 1 << 10 and doc["kdf"]["r"] == 8
    raw = json.dumps(doc).encode()
    parsed = keys.parse_slot("keys/s.json", raw, "repo1")
    assert keys.unwrap("keys/s.json", parsed, "correct horse") == MASTER
    assert keys.unwrap("keys/s.json", parsed, "wrong horse") is None


def test_damaged_or_foreign_key_slot_is_named():
    doc = keys.new_slot("repo1", MASTER, "pw")
    with pytest.raises(keys.KeySlotError, match=r"keys/s.json.*another repository"):
        keys.parse_slot("keys/s.json", json.dumps(doc).encode(), "repo2")
    accidental = dict(doc, host="elsewhere")
    with pytest.raises(keys.KeySlotError, match=r"keys/s.json.*checksum"):
        keys.parse_slot("keys/s.json", json.dumps(accidental).encode(), "repo1")
    # A deliberate edit that also fixes the checksum still fails: every field is authenticated.
    forged = dict(doc, created="2000-01-01T00:00:00+00:00")
    forged["checksum"] = canonical_checksum(forged)
    parsed = keys.parse_slot("keys/s.json", json.dumps(forged).encode(), "repo1")
    with pytest.raises(keys.KeySlotError, match=r"keys/s.json.*altered"):
        keys.unwrap("keys/s.json", parsed, "pw")


def encrypted_repo(backend=None, passphrase="pw one"):
    backend = backend or MemoryBackend()
    return backend, Repository.init(backend, 64 << 10, passphrase=passphrase)


def test_encrypted_repository_hides_everything_but_config_and_slots():
    backend, repo = encrypted_repo()
    digest = repo.hash_block(SECRET_BLOCK)
    repo.put_chunk(digest, encode_chunk(SECRET_BLOCK, 0))
    for obj in backend.list(""):
        assert SECRET_BLOCK[:40] not in backend.get(obj.key), obj.key
    assert repo.load_block(digest, len(SECRET_BLOCK)) == SECRET_BLOCK
    again = Repository.open(backend, lambda: "pw one")
    assert again.encrypted and again.load_block(digest, len(SECRET_BLOCK)) == SECRET_BLOCK


def test_open_needs_the_right_passphrase():
    backend, _ = encrypted_repo()
    with pytest.raises(keys.PassphraseError, match="wrong passphrase"):
        Repository.open(backend, lambda: "pw two")
    with pytest.raises(keys.PassphraseError, match="no passphrase"):
        Repository.open(backend)


def test_plain_repository_is_unchanged_and_never_asks():
    backend = MemoryBackend()
    Repository.init(backend, 64 << 10)
    doc = json.loads(backend.get("config"))
    assert doc["version"] == 3 and "encryption" not in doc and "mac" not in doc
    asked = []
    repo = Repository.open(backend, lambda: asked.append(1) or "x")
    assert not repo.encrypted and not asked and not list(backend.list("keys/"))
    with pytest.raises(UsageError, match="not encrypted"):
        repo.add_key("x")


def test_key_slots_add_remove_and_the_last_one_stays():
    backend, repo = encrypted_repo()
    first = repo.unlocked.slot_id
    second = repo.add_key("pw two")
    by_second = Repository.open(backend, lambda: "pw two")
    assert by_second.unlocked.slot_id == second
    assert {k["id"] for k in by_second.list_keys()} == {first, second}
    with pytest.raises(UsageError, match="opened the repository with"):
        by_second.remove_key(second)
    by_second.remove_key(first)
    with pytest.raises(keys.PassphraseError):
        Repository.open(backend, lambda: "pw one")
    with pytest.raises(UsageError, match="last key slot"):
        keys.remove_slot(backend, by_second.id, second, current=None)
    assert [k["id"] for k in by_second.list_keys()] == [second]


def test_config_changes_are_caught():
    backend, _ = encrypted_repo()
    doc = json.loads(backend.get("config"))
    doc["block_size"] = 1 << 20
    backend.put("config", json.dumps(doc).encode())
    with pytest.raises(RepositoryError, match="checksum mismatch"):
        Repository.open(backend, lambda: "pw one")
    doc["checksum"] = canonical_checksum(doc)  # a deliberate edit: only the MAC catches it
    backend.put("config", json.dumps(doc).encode())
    with pytest.raises(RepositoryError, match=r"config .* fails authentication"):
        Repository.open(backend, lambda: "pw one")


def test_a_plain_only_reader_refuses_an_encrypted_repository(monkeypatch):
    backend, _ = encrypted_repo()
    monkeypatch.setattr(repository, "FORMAT_VERSION", 1)  # what stackvault knew before encryption
    with pytest.raises(RepositoryError, match="upgrade stackvault"):
        Repository.open(backend, lambda: "pw one")


@pytest.mark.parametrize("encrypted", [True, False])
def test_a_repository_of_an_older_format_is_raised_to_3_by_its_first_sparse_index(encrypted):
    """Versions 1 (plain) and 2 (encrypted) as they were written; the first block index written makes
    the config say 3 (authenticated anew when encrypted), and everything else in it stays."""
    from stackvault.engine.blockindex import IndexBuilder

    backend = MemoryBackend()
    repo = Repository.init(backend, 64 << 10, passphrase="pw one" if encrypted else None)
    doc = json.loads(backend.get("config"))
    doc["version"] = 2 if encrypted else 1
    if encrypted:
        doc["mac"] = repo.cipher.mac({k: v for k, v in doc.items() if k not in ("mac", "checksum")})
    doc["checksum"] = canonical_checksum(doc)
    backend.put("config", json.dumps(doc).encode())
    old = Repository.open(backend, lambda: "pw one")
    assert old.config.version == doc["version"] and old.encrypted == encrypted
    old.put_index("x", 0, IndexBuilder(1 << 20, 64 << 10, "x").finish())
    raised = json.loads(backend.get("config"))
    assert raised["version"] == 3
    assert {k: v for k, v in raised.items() if k not in ("version", "mac", "checksum")} == \
        {k: v for k, v in doc.items() if k not in ("version", "mac", "checksum")}
    again = Repository.open(backend, lambda: "pw one")
    assert again.config.version == 3 and again.encrypted == encrypted


@pytest.mark.parametrize("encrypted", [True, False])
def test_saved_config_keeps_secrets_only_when_encrypted(tmp_path, encrypted):
    from stackvault.config import Settings
    from stackvault.jobs import proxy_state
    from stackvault.jobs.context import JobContext

    config = tmp_path / "stackvault.toml"
    config.write_text('repo = "memory://r"\nswift_password = "s3cret"\n')  # as a future secret setting would
    ctx = JobContext(Settings(repo="memory://r", workdir=tmp_path / "work", config_path=config))
    ctx.__dict__["repo"] = ctx.init_repository(64 << 10, 1, passphrase="pw" if encrypted else None)
    saved = proxy_state.backup_state(ctx)
    (obj,) = ctx.repo.store.list("proxy-state/")
    assert (ctx.repo.store.get(obj.key)[:4] == b"SVE1") is encrypted
    out = tmp_path / "out.toml"
    proxy_state.restore_state(ctx, config_out=out, confirm=lambda _question: True)  # plain: the operator's yes
    if encrypted:
        assert saved["warnings"] == [] and out.read_text() == config.read_text()
    else:
        assert "swift_password" in saved["warnings"][0] and "s3cret" not in out.read_text()

"""The proxy's memory of repositories: a repository at a known location whose master key changed is
refused, as one whose id changed or that became plain; nothing of the key is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stackvault.config import Settings
from stackvault.engine.crypto import RepositoryCipher
from stackvault.engine.repository import RepoConfig, Repository
from stackvault.jobs import trust
from stackvault.jobs.context import JobContext
from stackvault.storage.local import LocalBackend


def _repo(root: Path, master: bytes | None, repo_id: str = "a" * 32) -> Repository:
    config = RepoConfig(id=repo_id, created="2026-12-01T00:00:00+00:00", block_size=1 << 16)
    if master is None:
        return Repository(LocalBackend(str(root)), config)
    config.version, config.encryption = 2, {"cipher": "aes-256-gcm", "kdf": "scrypt", "key_slots": "keys/"}
    return Repository(LocalBackend(str(root)), config, cipher=RepositoryCipher(master))


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobContext:
    monkeypatch.delenv("STACKVAULT_PASSPHRASE", raising=False)
    return JobContext(Settings(repo=str(tmp_path / "repo"), workdir=tmp_path / "work"))


@pytest.mark.parametrize("later, said", [
    (lambda root: _repo(root, os.urandom(32)), "key changed"),
    (lambda root: _repo(root, None), "now plain"),
    (lambda root: _repo(root, bytes(32), "b" * 32), "id changed"),
])
def test_changed_repository_is_refused(ctx: JobContext, tmp_path: Path, later, said: str) -> None:
    master = bytes(32)
    trust.check(ctx, _repo(tmp_path / "repo", master))
    with pytest.raises(trust.TrustError, match=said) as err:
        trust.check(ctx, later(tmp_path / "repo"))
    assert "trust accept" in str(err.value)
    trust.check(ctx, _repo(tmp_path / "repo", master))  # the same one is still fine


def test_memory_holds_no_key_material(ctx: JobContext, tmp_path: Path) -> None:
    master = os.urandom(32)
    trust.check(ctx, _repo(tmp_path / "repo", master))
    (path,) = (tmp_path / "work" / trust.DIR).iterdir()
    text = path.read_bytes()
    assert master.hex().encode() not in text and master not in text
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_unwritable_workdir_only_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKVAULT_PASSPHRASE", raising=False)
    blocker = tmp_path / "work"
    blocker.write_text("a file where the working directory should be")
    ctx = JobContext(Settings(repo=str(tmp_path / "repo"), workdir=blocker))
    trust.check(ctx, _repo(tmp_path / "repo", None))
    assert "stackvault: warning: cannot remember" in capsys.readouterr().err

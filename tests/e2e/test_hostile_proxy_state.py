"""Saved proxy state in a repository whose store is not trusted.

A plain repository's store reads and writes every object. So `state backup` keeps no secret there
(the catalog URL's password is taken out), and `recover` / `state restore` take saved state from it
only when the operator accepts it (`--yes`, or y/N on a terminal) after being shown the repository
id and what the saved config points to; a saved config whose `repo` is another repository needs
that yes even when the repository is encrypted. Nothing is written before that, and an existing
`--config-out` is never replaced without `--force`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import zstandard

from .helpers import MIB, Stackvault, make_random_image, tree_listing
from .test_bad_input import assert_clear_error
from .test_encryption import EncryptedSv

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow

PASSWORD = "Sup3r-s3cret-catalog-pw"
PG_URL = f"postgresql+psycopg://stackvault:{PASSWORD}@db.example.net:5432/stackvault"


def _saved_objects(sv: Stackvault) -> list[bytes]:
    """What the store holds of the saved states, decompressed as the store itself can (plain repository)."""
    return [zstandard.ZstdDecompressor().decompress(p.read_bytes()[40:], max_output_size=1 << 26)
            for p in sorted((sv.repo / "proxy-state").iterdir())]


def _config(tmp_path: Path, sv: Stackvault, **settings: str) -> Path:
    cfg = tmp_path / "saved.toml"
    cfg.write_text(f'repo = "{settings.get("repo", sv.repo)}"\nworkdir = "{sv.workdir}"\n'
                   f'catalog = "{settings.get("catalog", PG_URL)}"\n[retention]\nkeep_last = 3\n')
    return cfg


def _save(sv: Stackvault, cfg: Path) -> dict:
    """`state backup` with that config; the run's own catalog stays the test's SQLite one (--catalog wins)."""
    return sv.run("state", "backup", globals_=["--config", str(cfg)]).data


@pytest.fixture
def plain(tmp_path: Path) -> Stackvault:
    sv = Stackvault(tmp_path / "sv")
    sv.init("64KiB")
    sv.backup(make_random_image(tmp_path / "disk.img", MIB, random.Random(5)))
    return sv


def test_the_catalog_password_is_not_saved_in_a_plain_repository(plain: Stackvault, tmp_path: Path) -> None:
    saved = _save(plain, _config(tmp_path, plain))
    assert saved["config_saved"], saved
    assert any("catalog" in w for w in saved["warnings"]), saved["warnings"]
    (blob,) = _saved_objects(plain)
    assert PASSWORD.encode() not in blob, "the store can read the catalog password"
    assert b"stackvault@db.example.net:5432/stackvault" in blob, "the rest of the catalog URL is kept"

    out = tmp_path / "recovered.toml"
    plain.run("state", "restore", "--config-out", str(out), "--yes")
    assert PASSWORD not in out.read_text()
    assert 'catalog = "postgresql+psycopg://stackvault@db.example.net:5432/stackvault"' in out.read_text()
    assert "keep_last = 3" in out.read_text()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://stackvault@db.example.net/stackvault?password=" + PASSWORD,
    "postgresql+psycopg://stackvault@db.example.net/stackvault?sslmode=require&password=" + PASSWORD,
])
def test_a_config_whose_secret_cannot_be_taken_out_is_not_saved(plain: Stackvault, tmp_path: Path, url: str) -> None:
    saved = _save(plain, _config(tmp_path, plain, catalog=url))
    assert not saved["config_saved"], saved
    assert any("catalog" in w for w in saved["warnings"]), saved["warnings"]
    assert all(PASSWORD.encode() not in blob for blob in _saved_objects(plain))


def test_recover_from_a_plain_repository_asks_first(plain: Stackvault, tmp_path: Path) -> None:
    _save(plain, _config(tmp_path, plain))
    repo_id = json.loads((plain.repo / "config").read_text())["id"]
    before = tree_listing(plain.repo)
    out = tmp_path / "new-proxy" / "stackvault.toml"
    fresh = Stackvault(tmp_path / "new-proxy")
    fresh.repo = plain.repo
    res = fresh.run("recover", "--config-out", str(out), expect=None)
    line = assert_clear_error(res, "--yes", "not encrypted", repo_id, str(plain.repo), "db.example.net")
    assert PASSWORD not in line
    assert not out.exists(), "a refused recover wrote the config"
    assert not fresh.catalog_file.exists(), "a refused recover built a catalog"
    assert tree_listing(plain.repo) == before

    done = fresh.run("recover", "--config-out", str(out), "--yes").data
    assert done["config"] == str(out) and done["catalog"]["backups"] == 1, done
    assert PASSWORD not in out.read_text()


def test_state_restore_from_a_plain_repository_asks_first(plain: Stackvault, tmp_path: Path) -> None:
    plain.run("state", "backup")
    state_before = tree_listing(plain.workdir)
    for sha in plain.workdir.rglob("*.sha"):
        sha.unlink()
    res = plain.run("state", "restore", expect=None)
    assert_clear_error(res, "--yes", "not encrypted")
    assert not list(plain.workdir.rglob("*.sha")), "a refused state restore wrote state files"
    plain.run("state", "restore", "--yes")
    assert tree_listing(plain.workdir).keys() >= {k for k in state_before if k.endswith(".sha")}


def test_a_saved_config_pointing_to_another_repository_is_not_taken_silently(tmp_path: Path) -> None:
    """Even authenticated: an encrypted repository's saved config whose `repo` is elsewhere needs a yes."""
    esv = EncryptedSv(tmp_path / "sv")
    esv.run("init", "--encrypt", "--block-size", "64KiB")
    elsewhere = tmp_path / "attacker-repo"
    esv.run("state", "backup", globals_=["--config", str(_config(tmp_path, esv, repo=str(elsewhere)))])
    out = tmp_path / "recovered.toml"
    res = esv.run("state", "restore", "--config-out", str(out), expect=None)
    assert_clear_error(res, "another repository", str(elsewhere), "--yes")
    assert not out.exists()
    res = esv.run("recover", "--config-out", str(out), expect=None)
    assert_clear_error(res, "another repository", str(elsewhere))
    assert not out.exists()
    esv.run("recover", "--config-out", str(out), "--yes")
    assert str(elsewhere) in out.read_text()


def test_an_authenticated_state_of_this_repository_needs_no_question(tmp_path: Path) -> None:
    esv = EncryptedSv(tmp_path / "sv")
    esv.run("init", "--encrypt", "--block-size", "64KiB")
    cfg = _config(tmp_path, esv)
    esv.run("state", "backup", globals_=["--config", str(cfg)])
    out = tmp_path / "recovered.toml"
    esv.run("recover", "--config-out", str(out))
    assert out.read_text() == cfg.read_text(), "an encrypted repository keeps the config whole"


@pytest.mark.parametrize("command", [["recover"], ["state", "restore", "--yes"], ["recover", "--yes"]])
def test_config_out_over_an_existing_file_needs_force(plain: Stackvault, tmp_path: Path, command: list[str]) -> None:
    plain.run("state", "backup", globals_=["--config", str(_config(tmp_path, plain))])
    existing = tmp_path / "mine.toml"
    existing.write_text("# the operator's own config\n")
    work_before = tree_listing(plain.workdir)
    res = plain.run(*command, "--config-out", str(existing), expect=None)
    assert_clear_error(res, str(existing), "--force")
    assert existing.read_text() == "# the operator's own config\n"
    assert tree_listing(plain.workdir) == work_before, "a refused command changed the working state"
    plain.run(*command, "--config-out", str(existing), "--force", "--yes" if "--yes" not in command else "--force")
    assert "keep_last = 3" in existing.read_text()


def test_config_out_that_is_a_directory(plain: Stackvault, tmp_path: Path) -> None:
    plain.run("state", "backup", globals_=["--config", str(_config(tmp_path, plain))])
    res = plain.run("recover", "--config-out", str(tmp_path), "--force", "--yes", expect=None)
    assert_clear_error(res, str(tmp_path), "directory")


def _planted_state(size: int) -> bytes:
    """What a hostile store can plant in a plain repository (docs/repository-format.md's `proxy-state/`
    layout): a state file of `size` zero bytes in a tar, zstd-compressed to a few hundred KiB."""
    import io
    import tarfile

    import blake3

    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as w:
        info = tarfile.TarInfo("state/file_planted.sha")
        info.size = size
        w.write(info.tobuf(format=tarfile.PAX_FORMAT))
        zero = bytes(MIB)
        for _ in range(size // MIB):
            w.write(zero)
        w.write(bytes(1024))  # the tar's end
    body = out.getvalue()
    return b"SVSTATE1" + blake3.blake3(body).digest() + body


def test_a_planted_huge_state_is_read_in_bounded_memory(plain: Stackvault, tmp_path: Path) -> None:
    """2 GiB of state in 200 KiB: recover and state restore stream it under a 1 GiB address-space limit."""
    import resource
    import subprocess

    from .helpers import Result

    (plain.repo / "proxy-state").mkdir(exist_ok=True)
    (plain.repo / "proxy-state" / "20991231T000000Z.tar.zst").write_bytes(_planted_state(2048 * MIB))
    before = tree_listing(plain.workdir)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    def run(*args: str) -> Result:
        argv = plain.argv(list(args))
        proc = subprocess.run(argv, capture_output=True, text=True, env=plain.env(), timeout=180, preexec_fn=limit)
        return Result(argv, proc.returncode, proc.stdout, proc.stderr)

    res = run("state", "restore")
    assert_clear_error(res, "not encrypted", "--yes")
    assert tree_listing(plain.workdir) == before, "a refused state restore wrote state files"
    res = run("recover", "--config-out", str(tmp_path / "out.toml"))
    assert res.rc == 0, res.describe()  # it takes no state file from the saved state, and it holds no config
    assert not (plain.workdir / "file_planted.sha").exists()


def _on_terminal(sv: Stackvault, args: list[str], answer: str, timeout: float = 120) -> tuple[int, str]:
    """Run a command on a pseudo-terminal and type `answer` once it asks its y/N question."""
    import os
    import pty
    import select
    import signal
    import time

    argv = sv.argv(args, json_out=False)
    env = sv.env()
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env)
    out, answered, deadline = b"", False, time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closes when the command exits
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"[y/N]" in out:
            os.write(fd, answer.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_on_a_terminal_the_operator_answers(plain: Stackvault, tmp_path: Path) -> None:
    _save(plain, _config(tmp_path, plain))
    out = tmp_path / "recovered.toml"
    rc, text = _on_terminal(plain, ["recover", "--config-out", str(out)], "n")
    assert rc == 2 and "not taken" in text and "db.example.net" in text and "[y/N]" in text, text
    assert not out.exists()
    rc, text = _on_terminal(plain, ["recover", "--config-out", str(out)], "y")
    assert rc == 0, text
    assert "keep_last = 3" in out.read_text() and PASSWORD not in out.read_text()

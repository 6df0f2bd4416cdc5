"""A passphrase file others can read is refused, as ssh refuses such a private key.

The passphrase opens every backup in the repository: a file with it that other local users can
read gives them all of it. `--passphrase-file` and `--new-passphrase-file` refuse a regular file
with any group or other permission, naming the fix (`chmod 600 FILE`); a pipe (`<(vault read ...)`)
is not a file others can open and is taken. A file given by mistake (a device) is not read whole.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from .helpers import Result, Stackvault, tree_listing
from .test_bad_input import assert_clear_error

PASSPHRASE = "correct horse battery staple"


def _file(tmp_path: Path, name: str, text: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_init_refuses_a_passphrase_file_others_can_read(sv: Stackvault, tmp_path: Path, mode: int) -> None:
    pfile = _file(tmp_path, "pass", PASSPHRASE, mode)
    res = sv.run("init", "--encrypt", expect=None, globals_=["--passphrase-file", str(pfile)])
    line = assert_clear_error(res, str(pfile), f"chmod 600 {pfile}")
    assert f"{mode:04o}" in line, line
    assert not (sv.repo / "config").exists(), "a refused init must not leave a repository"


def test_open_and_key_add_refuse_it_too(sv: Stackvault, tmp_path: Path) -> None:
    good = _file(tmp_path, "good", PASSPHRASE, 0o600)
    sv.run("init", "--encrypt", "--block-size", "64KiB", globals_=["--passphrase-file", str(good)])
    before = tree_listing(sv.repo)
    loose = _file(tmp_path, "loose", PASSPHRASE, 0o644)
    assert_clear_error(sv.run("list", expect=None, globals_=["--passphrase-file", str(loose)]),
                       str(loose), "chmod 600")
    new_loose = _file(tmp_path, "new", "another passphrase", 0o640)
    res = sv.run("key", "add", "--new-passphrase-file", str(new_loose), expect=None,
                 globals_=["--passphrase-file", str(good)])
    assert_clear_error(res, str(new_loose), "chmod 600")
    assert tree_listing(sv.repo) == before, "a refused command wrote to the repository"
    # the private files work
    sv.run("list", globals_=["--passphrase-file", str(good)])
    new_private = _file(tmp_path, "new-private", "another passphrase", 0o400)
    sv.run("key", "add", "--new-passphrase-file", str(new_private), globals_=["--passphrase-file", str(good)])
    sv.run("list", globals_=["--passphrase-file", str(new_private)])


def test_a_pipe_is_taken(sv: Stackvault, tmp_path: Path) -> None:
    """`--passphrase-file <(...)` from a secrets manager: a pipe no other user can open later."""
    good = _file(tmp_path, "good", PASSPHRASE, 0o600)
    sv.run("init", "--encrypt", "--block-size", "64KiB", globals_=["--passphrase-file", str(good)])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o644)
    argv = sv.argv(["list"], globals_=["--passphrase-file", str(fifo)])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sv.env())
    with open(fifo, "w") as w:
        w.write(PASSPHRASE + "\n")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, Result(argv, proc.returncode, out, err).describe()


def test_a_device_is_not_read_whole(sv: Stackvault, tmp_path: Path) -> None:
    """`--passphrase-file /dev/zero` by mistake: refused after a bounded read, under a 1 GiB address space."""
    argv = sv.argv(["init", "--encrypt"], globals_=["--passphrase-file", "/dev/zero"])

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run(argv, capture_output=True, text=True, env=sv.env(), timeout=60, preexec_fn=limit)
    assert_clear_error(Result(argv, proc.returncode, proc.stdout, proc.stderr), "/dev/zero")
    assert not (sv.repo / "config").exists()

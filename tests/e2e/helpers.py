"""Helpers for the block engine's end-to-end tests: run the real `stackvault` CLI, make and change images.

The tests check what a user checks, so everything here goes through the command line as a user types
it (a subprocess, global options before the command, `--json` where output is parsed) and through
plain files (hashes of bytes, allocated size, files under the repository). Nothing imports the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * KIB

#: Block size the tests give `stackvault init`: small, so 1% churn on a small image is many blocks.
BLOCK = 64 * KIB

SRC_DIR = Path(__file__).resolve().parents[2] / "src"


def stackvault_command() -> list[str]:
    """The command a user runs: the installed console script, else the same entry point from the tree.

    The script is preferred because that is what users run; the fallback keeps the tests runnable
    before the package is installed into the venv (it calls the entry point named in pyproject).
    """
    script = Path(sys.executable).parent / "stackvault"
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'stackvault'; from stackvault.cli import main; sys.exit(main())",
    ]


@dataclass
class Result:
    """One finished CLI run: exit code, both streams, and the parsed JSON document when there is one."""

    args: list[str]
    rc: int
    stdout: str
    stderr: str
    data: Any = None

    def describe(self) -> str:
        """Everything needed to reproduce and understand a failure, for assertion messages."""
        return (
            f"$ {' '.join(self.args)}\nexit {self.rc}\n--- stdout ---\n{self.stdout[-4000:]}"
            f"\n--- stderr ---\n{self.stderr[-4000:]}"
        )

    def error_lines(self) -> list[str]:
        """The `stackvault: error: ...` lines the contract promises for every error a user can meet."""
        return [line for line in self.stderr.splitlines() if line.startswith("stackvault: error:")]


@dataclass
class Stackvault:
    """A user's setup: one repository, one working directory and one catalog, all under a test's tmp dir."""

    root: Path
    repo: Path = field(init=False)
    workdir: Path = field(init=False)
    catalog_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.repo = self.root / "repo"
        self.workdir = self.root / "work"
        self.catalog_file = self.root / "catalog.db"

    @property
    def catalog_url(self) -> str:
        return f"sqlite:///{self.catalog_file}"

    def env(self) -> dict[str, str]:
        """A clean environment: no STACKVAULT_* from the caller, HOME inside the test so defaults stay there."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACKVAULT_")}
        env["HOME"] = str(self.root / "home")
        env["PYTHONPATH"] = str(SRC_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("COLUMNS", None)
        return env

    def argv(self, args: Sequence[str], json_out: bool = True, globals_: Sequence[str] = (),
             catalog: str | None = None) -> list[str]:
        base = stackvault_command() + [
            "--repo", str(self.repo), "--workdir", str(self.workdir), "--catalog", catalog or self.catalog_url,
        ]
        base += list(globals_)
        if json_out:
            base.append("--json")
        return base + [str(a) for a in args]

    def run(
        self,
        *args: Any,
        json_out: bool = True,
        expect: int | None = 0,
        globals_: Sequence[str] = (),
        timeout: float = 300,
        catalog: str | None = None,
    ) -> Result:
        """Run one command; with `expect` set, fail the test (showing the output) on another exit code."""
        argv = self.argv([str(a) for a in args], json_out, globals_, catalog)
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=timeout)
        res = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        if json_out and proc.stdout.strip():
            try:
                res.data = json.loads(proc.stdout)
            except json.JSONDecodeError:
                res.data = None
        if expect is not None:
            assert res.rc == expect, f"expected exit {expect}\n{res.describe()}"
            if json_out and expect == 0:
                assert res.data is not None, f"--json output is not one JSON document\n{res.describe()}"
        return res

    def popen(self, *args: Any) -> subprocess.Popen[str]:
        """Start a command without waiting (for the SIGKILL tests); its own session so the kill reaches children."""
        argv = self.argv([str(a) for a in args], json_out=True)
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env(),
            start_new_session=True,
        )

    # --- the commands the tests use most, each asserting success ---------------------------------

    def init(self, block_size: str = "64KiB") -> Result:
        # SV_TEST_REPO_FORMAT=4 runs the tests that use this on pack files instead of chunk objects.
        fmt = os.environ.get("SV_TEST_REPO_FORMAT")
        return self.run("init", "--block-size", block_size, *(["--format", fmt] if fmt else []))

    def backup(self, *sources: Path | str, level: str | None = None, extra: Sequence[str] = ()) -> dict:
        args: list[str] = ["backup"]
        for src in sources:
            args += ["--source", src if isinstance(src, str) else f"file:{src}"]
        if level:
            args += ["--level", level]
        report = self.run(*args, *extra).data
        assert report["status"] in ("success", "warning"), report
        return report

    def restore(self, backup_id: str, target: Path, fmt: str | None = None, extra: Sequence[str] = ()) -> Path:
        args = ["restore", backup_id, "--to", f"file:{target}"]
        if fmt:
            args += ["--format", fmt]
        self.run(*args, *extra)
        assert target.exists(), f"restore exited 0 but wrote no {target}"
        return target

    def list_ids(self) -> list[str]:
        return [b["backup_id"] for b in self.run("list").data["backups"]]

    def repository_ids(self) -> list[str]:
        """The backups the repository itself holds: `list` from a catalog freshly rebuilt from it alone."""
        scratch = self.root / "truth.db"
        for p in self.root.glob("truth.db*"):
            p.unlink()
        url = f"sqlite:///{scratch}"
        self.run("catalog", "rebuild", catalog=url)
        return [b["backup_id"] for b in self.run("list", catalog=url).data["backups"]]


def measured(sv: Stackvault, *args: str) -> tuple[Result, int]:
    """Run one command; its result and the peak resident memory of its process, in bytes.

    Measured by GNU time, whose child is forked from a small process: a child forked from pytest
    itself inherits pytest's peak (Linux keeps it across fork and exec), whatever the command does.
    """
    argv = sv.argv(list(args))
    out, err, peak = sv.root / "out.txt", sv.root / "err.txt", sv.root / "peak.txt"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak), *argv], stdout=o, stderr=e,
                              env=sv.env())
    res = Result(argv, proc.returncode, out.read_text(), err.read_text())
    try:
        res.data = json.loads(res.stdout)
    except ValueError:
        pass
    return res, int(peak.read_text().split()[-1]) * 1024


def one_error(res: Result, *words: str, rc: int | None = None) -> str:
    """The one `stackvault: error:` line a failed command must print (no traceback), naming `words`;
    with `rc`, also the documented exit code."""
    assert "Traceback" not in res.stderr, res.describe()
    assert res.rc != 0, res.describe()
    if rc is not None:
        assert res.rc == rc, res.describe()
    lines = res.error_lines()
    assert len(lines) == 1, f"one `stackvault: error:` line expected\n{res.describe()}"
    for word in words:
        assert word.lower() in lines[0].lower(), f"the error must say {word!r}: {lines[0]}"
    return lines[0]


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[Path]:
    """`backing` attached as a block device for the test (skipped where loop devices cannot be had)."""
    import pytest

    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {r.stderr.strip()}")
    dev = Path(r.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)], capture_output=True)


# --- images ------------------------------------------------------------------------------------


def write_at(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place (never truncates), as a guest writing to its disk does."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def make_random_image(path: Path, size: int, rng: random.Random) -> Path:
    """A fully allocated image of incompressible data: every changed block costs a full block to store."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MIB)
            f.write(rng.randbytes(n))
            left -= n
    return path


def make_sparse_image(path: Path, size: int, rng: random.Random, extents: Iterable[tuple[int, int, str]]) -> Path:
    """A sparse image: holes everywhere except `extents` of (offset, length, kind) where kind is
    `random` (incompressible), `text` (compressible) or `zero` (written zeros, allocated but all-zero)."""
    with open(path, "wb") as f:
        f.truncate(size)
    for offset, length, kind in extents:
        write_at(path, offset, fill(kind, length, rng))
    return path


def fill(kind: str, length: int, rng: random.Random) -> bytes:
    if kind == "random":
        return rng.randbytes(length)
    if kind == "zero":
        return bytes(length)
    if kind == "text":
        words = [b"kernel", b"module", b"libc.so.6", b"/usr/lib", b"config", b"\x00\x00\x00\x01", b"ELF"]
        out = bytearray()
        while len(out) < length:
            out += rng.choice(words) + b" "
        return bytes(out[:length])
    raise ValueError(kind)


def churn(path: Path, rng: random.Random, writes: int, max_len: int = 4 * KIB, block: int = BLOCK) -> set[int]:
    """Scatter `writes` random writes of random data over the image; return the indexes of the blocks touched.

    Each touched block is certain to change (random bytes), so the set is exactly what an
    incremental must find.
    """
    size = path.stat().st_size
    touched: set[int] = set()
    for _ in range(writes):
        length = rng.randint(1, max_len)
        offset = rng.randrange(0, size - length)
        write_at(path, offset, rng.randbytes(length))
        touched.update(range(offset // block, (offset + length - 1) // block + 1))
    return touched


def change_blocks(path: Path, blocks: Iterable[int], rng: random.Random, block: int = BLOCK) -> set[int]:
    """Rewrite a small random piece inside each given block; return the blocks (all certain to change)."""
    done = set()
    for b in blocks:
        length = rng.randint(1, 512)
        write_at(path, b * block + rng.randrange(0, block - length), rng.randbytes(length))
        done.add(b)
    return done


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def block_digests(path: Path, block: int = BLOCK) -> list[bytes]:
    """Per-block digests of an image, to count the blocks that differ between two versions."""
    out = []
    with open(path, "rb") as f:
        while chunk := f.read(block):
            out.append(hashlib.blake2b(chunk, digest_size=16).digest())
    return out


def allocated_bytes(path: Path) -> int:
    return path.stat().st_blocks * 512


def tree_bytes(root: Path) -> int:
    """Bytes a directory really uses on disk (allocated, so sparse files count for what they hold)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def tree_listing(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under a directory with its size and content hash, to prove a failed command changed nothing."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, sha256_file(p))
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=120)


def to_qcow2(raw: Path, qcow: Path) -> Path:
    """Convert a raw image to qcow2 (a fresh file each time, so its on-disk layout differs between versions)."""
    if qcow.exists():
        qcow.unlink()
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow))
    return qcow


def qcow2_guest_sha256(qcow: Path, scratch: Path) -> str:
    """Hash of the guest-visible bytes of a qcow2 image (what a VM reads), via a raw conversion."""
    raw = scratch.with_suffix(".guest.raw")
    qemu_img("convert", "-f", "qcow2", "-O", "raw", str(qcow), str(raw))
    try:
        return sha256_file(raw)
    finally:
        raw.unlink()


def qemu_img_info(path: Path) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a process we started and everything in its session (qemu-img helpers included)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=60)


def announced(process: subprocess.Popen, pattern: str) -> re.Match:
    """The first line on a server's stderr that matches `pattern` (its address): log lines may come
    before it (a retry while another process writes the catalog, on a loaded machine)."""
    assert process.stderr is not None
    seen: list[str] = []
    while line := process.stderr.readline():
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"no line matching {pattern!r} before the output ended: {seen}")

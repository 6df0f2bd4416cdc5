"""Several proxies at once lose nothing: one repository, one catalog, concurrent backups, prune and gc.

Each proxy is a separate `stackvault` process with its own working directory (as separate proxy
hosts would have), all pointed at the same repository and the same catalog file. While they back
up different disks, `prune` and `gc` start too: they need the exclusive lock, so they must wait
for the backups (`--wait`), neither fail nor delete anything a backup needs. One proxy is
SIGKILLed mid-backup. A user then checks what they would check: every other backup is listed and
restores byte for byte, `verify --deep` passes, the killed proxy's next run works without waiting
for its lease (its dead pid is seen on this host), a dead proxy of *another* host blocks only until
its lease runs out, and `list` equals a catalog rebuilt from the repository alone.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, change_blocks, kill_group, make_sparse_image, sha256_file

PROXIES = 3
SIZE = 64 * MIB
VICTIM_SIZE = 4 * SIZE
WAIT = "120"


def _proxy(root: Path, name: str, shared: Stackvault) -> Stackvault:
    """A proxy of its own (working directory, HOME) on the shared repository and catalog."""
    p = Stackvault(root / name)
    p.repo = shared.repo
    p.catalog_file = shared.catalog_file
    return p


def _image(path: Path, rng: random.Random, size: int = SIZE) -> Path:
    """Random data with holes between: half the disk is data, the rest reads as zeros."""
    extents = []
    offset = 0
    while offset < size:
        length = rng.randrange(1, 4) * MIB
        if rng.random() < 0.6:
            extents.append((offset, min(length, size - offset), "random"))
        offset += length + rng.randrange(0, 2) * MIB
    return make_sparse_image(path, size, rng, extents)


def _finish(proc: subprocess.Popen[str], what: str) -> dict:
    """Wait for a started command; fail the test with its output unless it exited 0; its --json report."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{err[-3000:]}\n{out[-2000:]}"
    return json.loads(out)


def _lock_pids(repo: Path) -> set[int]:
    """The pids holding repository locks now (a lock file may vanish while it is read)."""
    pids = set()
    for path in _locks(repo):
        try:
            pids.add(int(json.loads(path.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            continue
    return pids


def _chunk_count(repo: Path) -> int:
    """Chunk objects in a local repository (`chunks/<h2>/<h64>`), counted while others write there."""
    root = repo / "chunks"
    if not root.exists():
        return 0
    total = 0
    for d in root.iterdir():
        try:
            total += sum(1 for name in os.listdir(d) if len(name) == 64)
        except (NotADirectoryError, FileNotFoundError):
            continue
    return total


def _locks(repo: Path) -> list[Path]:
    return sorted((repo / "locks").glob("*.json")) if (repo / "locks").exists() else []


@pytest.mark.slow  # ~25 s: three concurrent proxies, prune, gc, restores and a lease to sit out
def test_several_proxies_with_prune_gc_and_a_killed_proxy(sv: Stackvault, rng: random.Random,
                                                          tmp_path: Path) -> None:
    sv.init("64KiB")
    proxies = [_proxy(tmp_path, f"proxy{i}", sv) for i in range(PROXIES)]
    admin = _proxy(tmp_path, "admin", sv)
    # The victim's disk is bigger, so that its Full is still writing chunks when it is killed: reading
    # with four threads, a 64 MiB Full once finished before the test could kill it.
    victim = 1
    sizes = [VICTIM_SIZE if i == victim else SIZE for i in range(PROXIES)]
    images = [_image(tmp_path / f"disk{i}.img", rng, sizes[i]) for i in range(PROXIES)]

    # Round 1: all proxies back up at once, each its own disk.
    started = time.monotonic()
    procs = [p.popen("backup", "--wait", WAIT, "--source", f"file:{img}")
             for p, img in zip(proxies, images, strict=True)]
    first = [_finish(proc, f"round-1 backup of proxy{i}")["backup_id"] for i, proc in enumerate(procs)]
    duration = time.monotonic() - started
    first_sha = [sha256_file(img) for img in images]
    assert len(set(first)) == PROXIES, f"two proxies made the same backup id: {first}"

    # Round 2: change a third of each disk, then back up again while prune and gc try to run. The
    # victim's disk gets all new data and a full, so it has a whole disk of chunks to write when killed.
    nblocks = SIZE // (64 * 1024)
    for i, img in enumerate(images):
        if i == victim:
            _image(img, rng, VICTIM_SIZE)
        else:
            change_blocks(img, rng.sample(range(nblocks), nblocks // 3), rng)
    chunks_before = _chunk_count(sv.repo)
    procs = []
    for i, (p, img) in enumerate(zip(proxies, images, strict=True)):
        level = ["--level", "full"] if i == victim else []
        procs.append(p.popen("backup", "--wait", WAIT, "--source", f"file:{img}", *level))
    # prune and gc start once every backup has taken its shared lock, so they really have to wait for them
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while not {p.pid for p in procs} <= seen and time.monotonic() < deadline:
        seen |= _lock_pids(sv.repo)
        time.sleep(0.01)
    assert {p.pid for p in procs} <= seen, f"not every backup took a lock: {seen}"
    pruning = admin.popen("prune", "--keep-last", "1", "--wait", WAIT)
    collecting = admin.popen("gc", "--wait", WAIT)
    # the victim is killed while it holds its lock and is writing chunks
    # (it has some 2,400 new chunks to write; killed once 16 new ones exist, it is far from its commit)
    while procs[victim].poll() is None and time.monotonic() < deadline:
        if procs[victim].pid in _lock_pids(sv.repo) and _chunk_count(sv.repo) >= chunks_before + 16:
            break
        time.sleep(0.005)
    assert procs[victim].poll() is None, "the victim finished before it could be killed: make its disk bigger"
    kill_group(procs[victim])
    second = {i: _finish(proc, f"round-2 backup of proxy{i}") for i, proc in enumerate(procs) if i != victim}
    pruned = _finish(pruning, "prune --keep-last 1 next to running backups")
    collected = _finish(collecting, "gc next to running backups")
    second_sha = {i: sha256_file(images[i]) for i in second}
    # prune waited for the backups, so it saw round 2 and forgot round 1 of every survivor; gc then
    # ran on that: the round-2 incrementals still point at round-1 chunks for unchanged blocks.
    assert sorted(pruned["removed"]) == sorted(first[i] for i in second), pruned
    print(f"round 1 (3 proxies at once) {duration:.1f}s; prune {pruned}; gc {collected}")

    # No lock is left behind: the finished jobs released theirs, and the killed proxy's (dead pid on
    # this host) was removed by prune/gc instead of holding them up for the whole lease.
    leftover = [p.name for p in _locks(sv.repo)]
    assert not leftover, f"locks left in the repository after every job ended: {leftover}"

    # What prune may have forgotten depends on when it got the lock; what must be there is the
    # newest committed backup of every disk: round 2 of the survivors, round 1 of the victim.
    listed = sv.list_ids()
    must = [r["backup_id"] for r in second.values()] + [first[victim]]
    missing = [b for b in must if b not in listed]
    assert not missing, f"backups lost next to prune/gc: {missing} (list: {listed}; prune: {pruned})"
    for i, report in second.items():
        out = tmp_path / f"restore{i}.raw"
        admin.restore(report["backup_id"], out)
        assert sha256_file(out) == second_sha[i], f"proxy{i}'s backup {report['backup_id']} restores wrong bytes"
        out.unlink()
    out = tmp_path / "restore-victim.raw"
    admin.restore(first[victim], out)
    assert sha256_file(out) == first_sha[victim], "the killed proxy's last committed backup restores wrong bytes"
    out.unlink()

    # gc again: whatever the killed backup wrote after the concurrent gc started is garbage now (that
    # gc keeps every chunk newer than its own start). Afterwards the repository holds exactly the
    # chunks committed backups reference, and all of them re-hash correctly.
    swept = admin.run("gc").data
    assert _chunk_count(sv.repo) == swept["chunks_kept"], f"chunks left that no backup references: {swept}"
    deep = admin.run("verify", "--deep")
    assert deep.data.get("ok") is True, deep.describe()

    # The killed proxy's next run: no --wait needed, an incremental on its last committed backup.
    nxt = proxies[victim].backup(images[victim])
    out = tmp_path / "restore-victim2.raw"
    admin.restore(nxt["backup_id"], out)
    assert sha256_file(out) == sha256_file(images[victim]), "the killed proxy's next backup restores wrong bytes"
    out.unlink()

    # A proxy on another host died holding the exclusive lock (a gc, say): its pid means nothing
    # here, so only its lease ends it. A backup that will not wait is told who holds the lock; one
    # with --wait goes ahead once the lease has run out, and the next exclusive job clears it away.
    lease = 8.0
    (sv.repo / "locks").mkdir(exist_ok=True)
    foreign = sv.repo / "locks" / f"{int(time.time())}-0badc0de.json"
    expires = time.time() + lease
    foreign.write_text(json.dumps({"kind": "exclusive", "host": "proxy-az2.invalid", "pid": 1, "job": "gc",
                                   "expires": expires}))
    refused = proxies[0].run("backup", "--source", f"file:{images[0]}", expect=None)
    assert refused.rc != 0, f"a backup ran under another host's live exclusive lock\n{refused.describe()}"
    assert any("proxy-az2.invalid" in line for line in refused.error_lines()), refused.describe()
    waited = proxies[0].backup(images[0], extra=["--wait", "60"])
    assert time.time() >= expires, "the backup finished before the foreign lease ran out: it did not wait"
    assert foreign.exists(), "a shared (backup) lock removed another host's lock: only exclusive jobs clear them"
    admin.run("gc")
    assert not foreign.exists(), "an expired lock of another host survived an exclusive job"
    out = tmp_path / "restore0.raw"
    admin.restore(waited["backup_id"], out)
    assert sha256_file(out) == sha256_file(images[0])

    # The catalog all these processes wrote at once says what the repository holds.
    assert sv.list_ids() == sv.repository_ids()
    assert not _locks(sv.repo)

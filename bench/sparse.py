"""A huge, nearly empty disk: what a Full, an unchanged Incremental, verify and a restore cost.

A sparse raw file of `--size` (4 TiB by default) holds `--data` MiB at scattered offsets. Every
command runs under GNU time (the kernel's peak RSS of the process), so the numbers are those of the
CLI a user runs. Memory, the stored block index and the working state must follow the data, not the
provisioned size (docs/performance.md, "Huge sparse disks").

    .venv/bin/python bench/sparse.py --dir /var/tmp/sparse --size 4T --data 64
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

UNITS = {"K": 10, "M": 20, "G": 30, "T": 40}


def parse_size(text: str) -> int:
    return int(text[:-1]) << UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


def make_disk(path: Path, size: int, data: int, seed: int = 1) -> None:
    """`data` bytes in 4 MiB pieces at random 1 MiB-aligned offsets of a sparse file of `size`."""
    rng = random.Random(seed)
    piece = 4 << 20
    with open(path, "wb") as f:
        f.truncate(size)
        for _ in range(data // piece):
            f.seek(rng.randrange(size // (1 << 20) - 4) << 20)
            f.write(rng.randbytes(piece))


def run(base: list[str], *args: str) -> tuple[dict, int, float]:
    """A CLI command's JSON report, its peak RSS in bytes, and its wall time."""
    peak = Path(os.environ.get("TMPDIR", "/tmp")) / f"sv-peak-{os.getpid()}"
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak), *base, "--json", *args],
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss = int(peak.read_text().split()[-1]) * 1024
    peak.unlink()
    return json.loads(proc.stdout), rss, wall


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/var/tmp/stackvault-sparse", help="scratch directory (removed first)")
    p.add_argument("--size", default="4T", help="provisioned size of the disk")
    p.add_argument("--data", type=int, default=64, help="MiB of data in it")
    p.add_argument("--stackvault", default=str(Path(sys.executable).parent / "stackvault"))
    args = p.parse_args(argv)
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    disk = root / "disk.raw"
    make_disk(disk, parse_size(args.size), args.data << 20)
    base = [args.stackvault, "--repo", str(root / "repo"), "--workdir", str(root / "work"),
            "--catalog", f"sqlite:///{root / 'catalog.db'}"]
    run(base, "init")
    out: dict = {"size": args.size, "data_mib": args.data}
    _, out["full_rss"], out["full_wall_s"] = run(base, "backup", "--source", f"file:{disk}", "--level", "full")
    inc, out["incremental_rss"], out["incremental_wall_s"] = run(base, "backup", "--source", f"file:{disk}")
    out["incremental_duration_s"] = inc["duration_s"]
    out["incremental_bytes_read"] = inc["bytes_read"]
    _, out["verify_rss"], out["verify_wall_s"] = run(base, "verify")
    target = root / "restored.raw"
    _, out["restore_rss"], out["restore_wall_s"] = run(base, "restore", inc["backup_id"], "--to", f"file:{target}")
    out["restored_allocated"] = target.stat().st_blocks * 512
    out["index_bytes"] = tree_size(root / "repo" / "indexes" / inc["backup_id"])
    out["working_state_bytes"] = sum(f.stat().st_size for f in (root / "work").rglob("*")
                                     if f.suffix in (".sha", ".bmp"))
    print(json.dumps({k: (f"{v / (1 << 20):.1f} MiB" if k.endswith(("_rss", "_allocated")) else v)
                      for k, v in out.items()}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

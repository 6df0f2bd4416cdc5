"""File restore against whole-disk restore: the time to a first listing of /etc, the time to extract
one large file against a full restore, sequential reads of a mounted disk against a restore, and the
mount's peak memory.

The disk is an ext4 file system of `--size` (sparse) made by `mke2fs -d` from a small /etc and one
file of `--file-size` random bytes, backed up once into a fresh local repository. Every command runs
under GNU time (peak RSS of the CLI process; the libguestfs appliance is a separate QEMU process).

    LIBGUESTFS_BACKEND_SETTINGS=force_tcg .venv/bin/python bench/file_restore.py --dir /var/tmp/fr \\
        --size 10G --file-size 1G
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

UNITS = {"K": 10, "M": 20, "G": 30, "T": 40}


def parse_size(text: str) -> int:
    return int(text[:-1]) << UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


def timed(argv: list[str], **kw: object) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall seconds and peak RSS (bytes) of one command run under GNU time."""
    peak = Path(os.environ.get("TMPDIR", "/tmp")) / f"peak-{os.getpid()}"
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak), *argv], capture_output=True, check=False,
                          **kw)  # type: ignore[call-overload]
    took = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return took, int(peak.read_text().split()[-1]) * 1024, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--size", default="10G")
    ap.add_argument("--file-size", default="1G")
    args = ap.parse_args()
    root: Path = args.dir
    shutil.rmtree(root, ignore_errors=True)
    (root / "tree" / "etc").mkdir(parents=True)
    for i in range(200):
        (root / "tree" / "etc" / f"conf{i:03}.conf").write_text(f"setting = {i}\n" * 20)
    with open(root / "tree" / "big.bin", "wb") as f:
        left = parse_size(args.file_size)
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
    disk = root / "disk.raw"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root / "tree"), str(disk), args.size], check=True)
    sv = [str(Path(sys.executable).parent / "stackvault"), "--repo", str(root / "repo"), "--workdir",
          str(root / "work"), "--catalog", f"sqlite:///{root / 'catalog.db'}"]
    subprocess.run([*sv, "-q", "init"], check=True)
    result: dict[str, object] = {"disk_size": parse_size(args.size), "file_size": parse_size(args.file_size)}
    result["backup_s"], _, proc = timed([*sv, "--json", "backup", "--source", f"file:{disk}"])
    bid = json.loads(proc.stdout)["backup_id"]

    result["ls_etc_s"], result["ls_etc_peak"], _ = timed([*sv, "files", bid, "ls", "/etc"])
    (root / "out").mkdir()
    result["get_file_s"], result["get_file_peak"], _ = timed([*sv, "files", bid, "get", "/big.bin", "--to",
                                                               str(root / "out")])
    result["restore_s"], result["restore_peak"], _ = timed([*sv, "-q", "restore", bid, "--to",
                                                            f"file:{root / 'restored.raw'}"])

    mnt = root / "mnt"
    mnt.mkdir()
    peak_file = root / "mount-peak"
    mount = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *sv, "mount", str(mnt)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(line.split()[1] == str(mnt) for line in Path("/proc/mounts").read_text().splitlines()):
            if time.monotonic() > deadline or mount.poll() is not None:
                sys.exit("mount did not appear")
            time.sleep(0.1)
        image = next(mnt.glob(f"*/{bid}/*.raw"))
        started = time.monotonic()
        subprocess.run(["dd", f"if={image}", "of=/dev/null", "bs=4M", "status=none"], check=True)
        result["mounted_read_s"] = time.monotonic() - started
    finally:
        # GNU time would die of a SIGTERM itself: the mount (its child) gets it, and unmounts
        child = subprocess.run(["pgrep", "-P", str(mount.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(child[0]) if child else mount.pid, signal.SIGTERM)
        mount.wait(60)
    result["mount_peak"] = int(peak_file.read_text().split()[-1]) * 1024
    for key in [k for k in result if k.endswith("_s")]:
        result[key] = round(float(result[key]), 2)  # type: ignore[arg-type]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

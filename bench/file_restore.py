"""File restore against whole-disk restore: the time to a first listing of /etc (and to the next one,
which finds the disk's layout kept in the working directory), the time to extract
one large file against a full restore, sequential reads of a mounted disk against a restore, and the
mount's peak memory.

The disk is an ext4 file system of `--size` (sparse) made by `mke2fs -d` from a small /etc and one
file of `--file-size` random bytes, backed up once into a fresh local repository. Every command runs
under GNU time: CPU seconds (user + system) of the command and its children, and the peak RSS of the
largest process among them (for `files`, the libguestfs appliance's QEMU). The mounted image is read
twice: by `dd` (every byte, holes included, through FUSE) and by `cp --sparse=always` (holes skipped
by SEEK_DATA/SEEK_HOLE, as the restore skips them).

    make bench-files BENCH_DIR=/var/tmp/fr BENCH_ARGS="--size 10G --file-size 1G"
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


#: GNU time's report: CPU seconds (user + system) and peak RSS in KiB of the command it ran.
TIME_FORMAT = "%U %S %M"


def time_report(text: str) -> tuple[float, int]:
    """CPU seconds and peak RSS (bytes) from GNU time's last line (earlier lines are the command's
    own exit status notes, e.g. "Command terminated by signal 15")."""
    user, system, peak_kib = text.strip().splitlines()[-1].split()
    return float(user) + float(system), int(peak_kib) * 1024


def load1() -> float:
    """The 1-minute load average: the machine is shared, so every phase records what it ran beside."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def timed(result: dict[str, object], phase: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Runs one command under GNU time; records its wall and CPU seconds, peak RSS and the load."""
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"time-{os.getpid()}"
    result[f"{phase}_load"] = load1()
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", TIME_FORMAT, "-o", str(report), *argv], capture_output=True,
                          check=False)
    result[f"{phase}_s"] = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    result[f"{phase}_cpu_s"], result[f"{phase}_peak"] = time_report(report.read_text())
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--size", default="10G")
    ap.add_argument("--file-size", default="1G")
    ap.add_argument("--keep", action="store_true", help="leave --dir in place (it holds the disk twice)")
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
    proc = timed(result, "backup", [*sv, "--json", "backup", "--source", f"file:{disk}"])
    bid = json.loads(proc.stdout)["backup_id"]

    timed(result, "ls_etc", [*sv, "files", bid, "ls", "/etc"])
    # the next command on that backup's disk finds its file systems kept in the working directory
    timed(result, "ls_etc_again", [*sv, "files", bid, "ls", "/etc"])
    (root / "out").mkdir()
    timed(result, "get_file", [*sv, "files", bid, "get", "/big.bin", "--to", str(root / "out")])
    timed(result, "restore", [*sv, "-q", "restore", bid, "--to", f"file:{root / 'restored.raw'}"])

    mnt = root / "mnt"
    mnt.mkdir()
    peak_file = root / "mount-peak"
    mount = subprocess.Popen(["/usr/bin/time", "-f", TIME_FORMAT, "-o", str(peak_file), *sv, "mount", str(mnt)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(line.split()[1] == str(mnt) for line in Path("/proc/mounts").read_text().splitlines()):
            if time.monotonic() > deadline or mount.poll() is not None:
                sys.exit("mount did not appear")
            time.sleep(0.1)
        image = next(mnt.glob(f"*/{bid}/*.raw"))
        result["mounted_read_load"] = load1()
        started = time.monotonic()
        subprocess.run(["dd", f"if={image}", "of=/dev/null", "bs=4M", "status=none"], check=True)
        result["mounted_read_s"] = time.monotonic() - started
        # a hole-aware reader (SEEK_DATA/SEEK_HOLE, as qemu-img and backup tools are) skips the holes
        # as the restore does; dd reads every zero through FUSE
        started = time.monotonic()
        subprocess.run(["cp", "--sparse=always", str(image), str(root / "copied.raw")], check=True)
        result["mounted_copy_s"] = time.monotonic() - started
        (root / "copied.raw").unlink()
    finally:
        # GNU time would die of a SIGTERM itself: the mount (its child) gets it, and unmounts
        child = subprocess.run(["pgrep", "-P", str(mount.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(child[0]) if child else mount.pid, signal.SIGTERM)
        mount.wait(60)
    # the mount's CPU time covers its whole life: start, the read, the unmount
    result["mount_cpu_s"], result["mount_peak"] = time_report(peak_file.read_text())
    for key in [k for k in result if k.endswith("_s")]:
        result[key] = round(float(result[key]), 2)  # type: ignore[arg-type]
    for phase in ("restore", "mounted_read", "mounted_copy"):
        result[f"{phase}_mb_s"] = round(result["disk_size"] / 1e6 / result[f"{phase}_s"], 1)  # type: ignore[operator]
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()

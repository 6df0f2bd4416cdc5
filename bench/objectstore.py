"""stackvault on object storage: a local Swift over S3 and over the Swift API, a local directory,
and restic on the same S3 endpoint, in one run.

Run with `make bench-storage` (options after `BENCH_ARGS=`), e.g.

    make bench-storage                              # 1 GiB image, every target (~4 min here)
    make bench-storage BENCH_ARGS="--size 2G"       # the image size of `make bench`
    make bench-storage BENCH_ARGS="--targets s3,restic-s3 --profile"

What one run does:
1. generates (or reuses) the image of `bench/run.py` (`imagegen`: 40% holes, 40% OS-like data,
   20% random) in `.state/bench-objectstore`;
2. starts the Swift all-in-one the storage tests use (`devcloud.swift`, PyPI `swift` with s3api,
   tempauth) in a free slot `.state/bench-swift-N` on free ports, and stops it at the end;
3. measures 1 MiB PUTs through stackvault's own S3 and Swift backends, one after the other and 8
   at a time: the price of one call, and what overlapping calls gain on this store;
4. per target, with `run.Bench.run_tool` (the same phases, measurements and restore check as
   `make bench`): init, Full, change 1% of the image, Incremental, Restore (the restored image
   must hash equal to the changed one), targets
   `dir` (stackvault, a local directory), `s3` (stackvault, `s3://` through boto3's AWS_*
   variables), `swift` (stackvault, `swift://` with tempauth ST_* variables), `restic-s3`
   (restic, `s3:http://127.0.0.1:PORT/bucket`), and `s3@4M` (stackvault S3 with `init
   --block-size 4MiB`: 8x fewer objects than the default 512 KiB); a stackvault target with `+packs`
   (`dir+packs`, `s3+packs`, `swift+packs`) makes its repository with `init --format 4` (pack files);
5. reads the Swift proxy's access log after each phase: the client's PUTs, HEADs and GETs, their
   bytes, mean latency, and how many were in flight (peak and mean), so the parallelism of every
   tool is seen from the server, restic's as well as stackvault's; and the CPU time the Swift
   processes spent (from /proc), to tell a busy store from a slow client;
6. prints the table and the ratios (stackvault/restic on S3, S3/dir, Swift/S3), writes JSON to
   bench/out/objectstore-latest.json, and with `--profile` runs one more stackvault S3 Full under
   py-spy and prints where its time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import hotspots
import imagegen
import run
import swiftlog
from measure import CommandFailed, PhaseResult, dir_size
from tools import Command, Restic, Stackvault, Tool

from devcloud import processes
from devcloud.context import DevcloudError
from devcloud.swift import SwiftAllInOne

TARGETS = ("dir", "s3", "swift", "restic-s3")
# s3@4M: the same S3 run with 8x fewer, larger objects, to show what the number of calls costs.
DEFAULT_TARGETS = "dir,dir+packs,s3,s3+packs,swift,swift+packs,restic-s3"
#: A stackvault target's suffix for a repository of pack files (`init --format 4`).
PACKED = "+packs"
LABELS = {"dir": "stackvault dir", "s3": "stackvault S3", "swift": "stackvault Swift",
          "restic-s3": "restic S3"}
SEQ_PUTS = 48
SWIFT_PROCESSES = ("swift-proxy", "swift-object", "swift-container", "swift-account", "memcached")


def log(msg: str) -> None:
    print(f"[bench-storage {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="1G", help="image size (default 1G)")
    p.add_argument("--seed", type=int, default=20261201, help="image seed (default 20261201)")
    p.add_argument("--change", type=float, default=0.01, help="fraction rewritten (default 0.01)")
    p.add_argument("--targets", default=DEFAULT_TARGETS,
                   help=f"comma list of {','.join(TARGETS)}; a stackvault target may name its "
                        f"repository's block size, e.g. s3@4M (default {DEFAULT_TARGETS})")
    p.add_argument("--scratch", default=os.path.join(ROOT, ".state", "bench-objectstore"),
                   help="image and local repositories (default .state/bench-objectstore)")
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="results directory (bench/out)")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, one more stackvault S3 Full under py-spy; print its hot spots")
    p.add_argument("--no-drop-caches", action="store_true", help="keep the page cache (warm runs)")
    p.add_argument("--keep", action="store_true", help="keep repositories and the Swift's data")
    a = p.parse_args(argv)
    a.target_list = [t.strip() for t in a.targets.split(",") if t.strip()]
    for target in a.target_list:
        kind, _, block = target.partition("@")
        packed = kind.endswith(PACKED)
        kind = kind.removesuffix(PACKED)
        if kind not in TARGETS or ((block or packed) and kind == "restic-s3"):
            p.error(f"unknown target {target!r} (choose from {','.join(TARGETS)}, "
                    f"stackvault ones with {PACKED} and/or @BLOCKSIZE)")
        if block:
            imagegen.parse_size(block)
    # The phases are run.Bench's, so it gets its own arguments (image, scratch, caches, keep).
    a.bench = run.parse_args(["--size", a.size, "--seed", str(a.seed), "--change", str(a.change),
                              "--scratch", a.scratch, "--out", a.out]
                             + ["--no-drop-caches"] * a.no_drop_caches + ["--keep"] * a.keep)
    a.bench.engine_commit = None
    return a


@contextmanager
def local_swift(keep: bool) -> Iterator[SwiftAllInOne]:
    """A fresh Swift all-in-one in the first free `.state/bench-swift-N`, stopped (by pid) at the end,
    also on SIGTERM; its data is removed unless `keep`."""
    state_dir, lock = processes.claim_slot(Path(ROOT, ".state"), "bench-swift")
    processes.stop_all(state_dir)  # leftovers of a run that was killed
    shutil.rmtree(state_dir, ignore_errors=True)
    swift = SwiftAllInOne.load(state_dir, free_ports=True)
    try:
        with processes.stopped_at_exit(swift.stop):
            swift.start()
            yield swift
    finally:
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)
        lock.close()


def use_only(swift: SwiftAllInOne) -> None:
    """Point every tool at this Swift and nothing of the caller's AWS / OpenStack setup: boto3's and
    restic's AWS_* for S3, swiftclient's ST_* (tempauth) for swift://."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "ST_", "OS_"))]:
        del os.environ[name]
    os.environ.update(swift.s3_env(), **swift.tempauth_env(), AWS_CONFIG_FILE="/nonexistent",
                      AWS_SHARED_CREDENTIALS_FILE="/nonexistent")


def put_rates(location: str, count: int = SEQ_PUTS, threads: int = 8) -> dict[str, float]:
    """Seconds per 1 MiB PUT through stackvault's backend (retries included), one after the other
    and `threads` at a time: the price of one call, and how much this store gains from overlap."""
    from concurrent.futures import ThreadPoolExecutor

    from stackvault.storage import open_backend

    backend = open_backend(location)
    backend.create()
    body = os.urandom(1 << 20)
    backend.put("warm-up", body)
    rates = {}
    for mode, width in (("sequential", 1), (f"{threads} at a time", threads)):
        started = time.monotonic()
        with ThreadPoolExecutor(width) as pool:
            list(pool.map(lambda i: backend.put(f"{width}/{i}", body), range(count)))  # noqa: B023 - run here
        rates[mode] = (time.monotonic() - started) / count
    for obj in list(backend.list("")):
        backend.delete(obj.key)
    backend.close()
    return rates


class PackedStackvault(Stackvault):
    """stackvault with a repository of pack files (`init --format 4`)."""

    def init(self) -> Command:
        cmd = super().init()
        return Command([*cmd.argv, "--format", "4"], cmd.env)


class ObjectStoreBench(run.Bench):
    """`run.Bench`'s phases against object stores, with the proxy's view of every phase."""

    def __init__(self, args: argparse.Namespace, swift: SwiftAllInOne) -> None:
        super().__init__(args.bench)
        self.swift = swift
        self.targets = args.target_list
        self.proxy_log = swiftlog.LogTail(os.path.join(swift.state_dir, "logs", "swift-proxy.log"))
        self.calls: dict[tuple[str, str], dict[str, swiftlog.Calls]] = {}
        self.server_cpu: dict[tuple[str, str], float] = {}  # CPU seconds the Swift processes spent
        self.stores: dict[str, str] = {}  # a tool's --repo -> the object store location holding it

    def make_target(self, target: str) -> tuple[Tool, str]:
        """The tool for a target (`s3`, `s3@4M`, ...) with its repository location, and its label."""
        kind, _, block = target.partition("@")
        packed = kind.endswith(PACKED)
        kind = kind.removesuffix(PACKED)
        root = os.path.join(self.scratch, "tools", target)
        block_size = imagegen.parse_size(block) if block else None
        tool: Tool = (Restic(root) if kind == "restic-s3" else
                      (PackedStackvault if packed else Stackvault)(root, self.args.stackvault, block_size))
        prefix = "repo" + (f"-{block}" if block else "") + ("-packs" if packed else "")
        location = {"s3": f"s3://sv-bench-s3/{prefix}", "swift": f"swift://sv-bench-swift/{prefix}",
                    "restic-s3": f"s3:{self.swift.s3_endpoint}/restic-bench"}.get(kind)
        if location:
            tool.repo = location
            self.stores[location] = "s3://restic-bench" if kind == "restic-s3" else location
        return tool, LABELS[kind] + (" packs" if packed else "") + (f" @{block}" if block else "")

    def measure(self, tool: str, phase: str, cmd, sink: list[PhaseResult]) -> tuple[PhaseResult, bytes]:
        self.proxy_log.take()  # whatever came before this phase
        cpu = self.swift_cpu()
        res, out = super().measure(tool, phase, cmd, sink)
        time.sleep(0.5)  # the proxy logs a request after its response has gone out
        self.server_cpu[(tool, phase)] = self.swift_cpu() - cpu
        self.calls[(tool, phase)] = swiftlog.by_method(swiftlog.parse(self.proxy_log.take()))
        return res, out

    def swift_cpu(self) -> float:
        """CPU seconds (user + system) used so far by the Swift servers and memcached: whether the
        store, rather than the client, is the bottleneck (all share the machine's cores)."""
        total = 0.0
        for name in SWIFT_PROCESSES:
            pid = self.swift.pid(name)
            if pid is not None:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def repo_size(self, tool: Tool) -> tuple[int, int]:
        store = self.stores.get(tool.repo)
        if store is None:
            return dir_size(tool.repo)
        from stackvault.storage.base import open_driver

        backend = open_driver(store)
        try:
            total = sum(o.size for o in backend.list(""))
        finally:
            backend.close()
        return total, total

    def profile_s3_full(self) -> str:
        """py-spy over one more stackvault Full into a fresh S3 prefix: where the time goes."""
        root = os.path.join(self.scratch, "tools", "profile")
        tool = Stackvault(root, self.args.stackvault)
        tool.repo = "s3://sv-bench-s3/profile"
        init = tool.init()
        subprocess.run(init.argv, env=init.env, check=True, capture_output=True)
        raw = os.path.join(os.path.abspath(self.args.out), "profile-objectstore-s3-full.txt")
        cmd = tool.backup(self.image, "full")
        self.cold_start()
        with open(self.log_path, "ab") as logf:
            if not hotspots.record(cmd.argv, raw, env=cmd.env, log=logf):
                return "py-spy is not installed (pip install py-spy): no profile"
        shutil.rmtree(root, ignore_errors=True)
        return hotspots.summarise(raw)

    def go(self, seq: dict[str, dict[str, float]]) -> dict:
        os.makedirs(self.args.out, exist_ok=True)
        open(self.log_path, "w").close()
        self.prepare_image()
        for target in self.targets:
            tool, label = self.make_target(target)
            self.run_tool(tool, self.results, label)
        return {"put_1MiB_s": seq, "results": [vars(r) for r in self.results],
                "swift_cpu_s": {f"{t} {p}": round(v, 2) for (t, p), v in self.server_cpu.items()},
                "calls": {f"{t} {p}": {m: calls_doc(c) for m, c in cs.items()}
                          for (t, p), cs in self.calls.items()}}


def calls_doc(c: swiftlog.Calls) -> dict:
    return {"count": c.count, "bytes": c.bytes, "mean_latency_s": round(c.mean_latency, 4),
            "peak_in_flight": c.peak_in_flight, "mean_in_flight": round(c.mean_in_flight, 2)}


def in_flight(calls: swiftlog.Calls) -> str:
    return f"{calls.mean_in_flight:.1f} / {calls.peak_in_flight}" if calls.count else "-"


def render(bench: ObjectStoreBench, seq: dict[str, dict[str, float]]) -> str:
    size = bench.layout.size
    lines = [f"image {imagegen.human(size)} ({imagegen.human(size - bench.layout.bytes_of(imagegen.HOLE))} "
             f"data), change {bench.change.bytes_changed >> 20} MiB; {os.cpu_count()} CPUs, "
             f"load {os.getloadavg()[0]:.2f}; page cache {'dropped' if bench.cold else 'warm'} per phase", ""]
    for api, rates in seq.items():
        lines.append(f"1 MiB PUTs over {api}: " + ", ".join(
            f"{mode} {s * 1000:.1f} ms each = {1 / s:.0f} MiB/s" for mode, s in rates.items()))
    lines += ["", "| run | phase | s | image MiB/s | client CPU s | Swift CPU s | PUTs | MiB up | mean PUT ms "
              "| PUTs in flight mean / peak | HEADs | GETs | MiB down | GETs in flight mean / peak |",
              "|---|---|" + "---:|" * 12]
    for r in bench.results:
        calls = bench.calls.get((r.tool, r.phase), {})
        put, get, head = (calls.get(m, swiftlog.Calls(m)) for m in ("PUT", "GET", "HEAD"))
        server = bench.server_cpu.get((r.tool, r.phase), 0.0)
        lines.append(f"| {r.tool} | {r.phase} | {r.wall_s:.2f} | {size / r.wall_s / 2**20:.0f} | "
                     f"{r.cpu_s:.1f} | {server:.1f} | {put.count or '-'} | {put.bytes / 2**20:.0f} | "
                     f"{put.mean_latency * 1000:.0f} | {in_flight(put)} | {head.count or '-'} | "
                     f"{get.count or '-'} | {get.bytes / 2**20:.0f} | {in_flight(get)} |")
    lines += ["", "| ratio (time) | full | incremental | restore |", "|---|---:|---:|---:|"]
    wall = {(r.tool, r.phase): r.wall_s for r in bench.results}
    s3_runs = sorted({r.tool for r in bench.results if r.tool.startswith("stackvault S3")})
    pairs = [(a, "restic S3") for a in s3_runs] + [
        ("stackvault S3", "stackvault dir"), ("stackvault Swift", "stackvault S3"),
        ("stackvault dir packs", "stackvault dir"), ("stackvault S3 packs", "stackvault S3"),
        ("stackvault Swift packs", "stackvault Swift")]
    for a, b in pairs:
        cells = [f"{wall[(a, p)] / wall[(b, p)]:.2f}x" if (a, p) in wall and (b, p) in wall else "-"
                 for p in run.PHASES]
        if any(c != "-" for c in cells):
            lines.append(f"| {a} / {b} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    try:
        with local_swift(args.keep) as swift:
            log(f"Swift all-in-one up: S3 at {swift.s3_endpoint}, Swift at {swift.tempauth_url}")
            use_only(swift)
            seq = {api: put_rates(f"{api.lower()}://sv-bench-puts/p") for api in ("S3", "Swift")}
            bench = ObjectStoreBench(args, swift)
            doc = bench.go(seq)
            text = render(bench, seq)
            print(text)
            if args.profile:
                summary = bench.profile_s3_full()
                print(f"\n## profile of stackvault S3 full\n{summary}")
                doc["profile"] = summary
    except (run.BenchError, CommandFailed, DevcloudError) as e:
        print(f"bench-storage: error: {e}", file=sys.stderr)
        return 1
    doc.update(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               duration_s=round(time.time() - started, 1), machine=run.machine(),
               stackvault_commit=f"{run.git_head()} + working tree", image=bench.image_facts(),
               table=text)
    with open(os.path.join(args.out, "objectstore-latest.json"), "w") as f:
        json.dump(doc, f, indent=1)
    log(f"results in {os.path.join(args.out, 'objectstore-latest.json')} ({doc['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""stackvault against restic and borg on one generated disk image: Full, Incremental, Restore.

Run with `make bench` (options after `BENCH_ARGS=`), e.g.

    make bench                                  # 2 GiB image, all three tools
    make bench BENCH_ARGS="--quick"             # 256 MiB smoke run
    make bench BENCH_ARGS="--block-sizes 256K,1M,4M --tools stackvault"

What one run does (see docs/performance.md for why each choice):
1. generates the image from a seed (40% holes, 40% OS-like compressible data, 20% random), or
   reuses the one already generated when its BLAKE3 matches;
2. measures the baselines on it: read + BLAKE3 of the non-hole data, `cat`, `b3sum`;
3. per tool, in a fresh scratch directory: init, Full, rewrite 1% of the image in scattered 64 KiB
   extents, Incremental, Restore; wall time, peak RSS of the process tree, CPU time and repository
   size after each; the restored image must hash equal to the source or the run fails;
   then the image is put back to its first version for the next tool;
4. optionally the same stackvault phases at several block sizes;
5. prints the table, the time ratios and the performance targets as PASS/MISS, writes JSON to
   bench/out/, and profiles stackvault on each phase that missed its target.
The page cache is dropped before every measured phase when the bench may (root); otherwise the
report says the numbers are warm-cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import hotspots
import imagegen
import report
from measure import CommandFailed, PhaseResult, dir_size, drop_caches, file_allocated, file_digest, run_measured
from tools import Borg, Command, Restic, Stackvault, Tool

GENERATOR_VERSION = 2  # bump when imagegen's output changes, so a cached image is not reused
PHASES = ("full", "incremental", "restore")


class BenchError(RuntimeError):
    """The benchmark cannot give a meaningful answer (wrong restore, missing tool, bad option)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def default_stackvault() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "stackvault")
    return exe if os.path.exists(exe) else f"{sys.executable} -m stackvault"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="2G", help="image size (default 2G)")
    p.add_argument("--quick", action="store_true", help="256 MiB image: a smoke run of a minute")
    p.add_argument("--seed", type=int, default=20261201, help="image seed (default 20261201)")
    p.add_argument("--tools", default="stackvault,restic,borg", help="comma list (default all three)")
    p.add_argument("--stackvault", default=None, help="stackvault command (default: the venv's)")
    p.add_argument("--engine-ref", default=None,
                   help="measure stackvault as committed at this git ref (e.g. HEAD), exported to the "
                        "scratch dir, instead of the working tree")
    p.add_argument("--block-size", default=None,
                   help="block size of the main stackvault run (default: stackvault's own default)")
    p.add_argument("--block-sizes", default=None,
                   help="also run stackvault at these block sizes, e.g. 256K,1M,4M")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every tool N times, alternating, and keep each phase's fastest (default 1)")
    p.add_argument("--encrypt", action="store_true",
                   help="stackvault repositories encrypted (init --encrypt), as restic's always are")
    p.add_argument("--change", type=float, default=0.01, help="fraction rewritten (default 0.01)")
    p.add_argument("--scratch", default=os.path.join(ROOT, ".state", "bench"),
                   help="scratch directory for the image and repositories (default .state/bench)")
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="results directory (bench/out)")
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                   help="profile stackvault phases: when a target is missed (auto), always, never")
    p.add_argument("--no-drop-caches", action="store_true", help="keep the page cache (warm runs)")
    p.add_argument("--keep", action="store_true", help="keep repositories after the run")
    a = p.parse_args(argv)
    a.size_bytes = imagegen.parse_size("256M" if a.quick else a.size)
    a.tool_list = [t.strip() for t in a.tools.split(",") if t.strip()]
    unknown = set(a.tool_list) - {"stackvault", "restic", "borg"}
    if unknown:
        p.error(f"unknown tool(s) {', '.join(sorted(unknown))} (choose from stackvault,restic,borg)")
    a.block_size_bytes = imagegen.parse_size(a.block_size) if a.block_size else None
    a.sweep = [imagegen.parse_size(s) for s in a.block_sizes.split(",")] if a.block_sizes else []
    if a.engine_ref and a.stackvault:
        p.error("give --engine-ref or --stackvault, not both")
    a.stackvault = a.stackvault or default_stackvault()
    return a


def export_engine(ref: str, scratch: str) -> tuple[str, str]:
    """Check out `src/` at `ref` into the scratch dir; returns (the command, the resolved commit).

    So a run measures exactly a commit, whatever is being edited in the working tree meanwhile.
    """
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", f"{ref}^{{commit}}"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError:
        raise BenchError(f"--engine-ref {ref} is not a commit of {ROOT} (try HEAD)") from None
    dest = os.path.join(scratch, "engine", commit)
    if not os.path.isdir(os.path.join(dest, "src", "stackvault")):
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "src"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    os.environ["PYTHONPATH"] = os.path.join(dest, "src")
    return f"{sys.executable} -m stackvault", commit


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scratch = os.path.abspath(args.scratch)
        self.image = os.path.join(self.scratch, "image", "disk.img")
        self.log_path = os.path.join(os.path.abspath(args.out), "commands.log")
        self.layout = imagegen.plan_layout(args.size_bytes, args.seed)
        self.change = imagegen.ImageChange(self.layout, args.change)
        self.cold = False
        self.results: list[PhaseResult] = []
        self.sweep: list[PhaseResult] = []
        self.baselines: list[PhaseResult] = []
        self.digest_v1 = self.digest_v2 = ""

    # -- the image -------------------------------------------------------------------------------

    def prepare_image(self) -> None:
        os.makedirs(os.path.dirname(self.image), exist_ok=True)
        stamp_path = self.image + ".stamp.json"
        want = {"size": self.layout.size, "seed": self.layout.seed, "generator": GENERATOR_VERSION,
                "change": self.args.change}
        stamp = {}
        if os.path.exists(stamp_path) and os.path.exists(self.image):
            with open(stamp_path) as f:
                stamp = json.load(f)
        if {k: stamp.get(k) for k in want} == want and file_digest(self.image) == stamp.get("v1"):
            log(f"reusing the generated image {self.image}")
            self.digest_v1, self.digest_v2 = stamp["v1"], stamp["v2"]
            return
        log(f"generating a {imagegen.human(self.layout.size)} image ({len(self.layout.extents)} "
            f"extents, seed {self.layout.seed}) at {self.image}")
        t = time.monotonic()
        imagegen.write_image(self.image, self.layout)
        log(f"generated in {time.monotonic() - t:.1f} s")
        self.digest_v1 = file_digest(self.image)
        self.change.apply(self.image)
        self.digest_v2 = file_digest(self.image)
        self.change.revert(self.image)
        if file_digest(self.image) != self.digest_v1:
            raise BenchError("putting the first image version back failed: its hash differs")
        with open(stamp_path, "w") as f:
            json.dump({**want, "v1": self.digest_v1, "v2": self.digest_v2}, f)

    def image_facts(self) -> dict:
        """What the image holds, measured: allocated bytes and how well its OS-like data compresses."""
        import zstandard

        rng = random.Random(self.layout.seed)
        comp = [e for e in self.layout.extents if e.kind == imagegen.COMPRESSIBLE]
        zc = zstandard.ZstdCompressor(level=3)
        raw = packed = 0
        with open(self.image, "rb") as f:
            for e in rng.sample(comp, min(16, len(comp))):
                f.seek(e.offset)
                block = f.read(min(e.length, 1 << 20))
                raw += len(block)
                packed += len(zc.compress(block))
        return {
            "size": self.layout.size, "seed": self.layout.seed,
            "extents": len(self.layout.extents),
            "bytes": {k: self.layout.bytes_of(k) for k in imagegen.DEFAULT_MIX},
            "allocated": file_allocated(self.image),
            "compressible_zstd3_ratio_1MiB": round(raw / packed, 2) if packed else None,
            "change_extents": len(self.change.offsets),
            "change_bytes": self.change.bytes_changed,
            "blake3_v1": self.digest_v1, "blake3_v2": self.digest_v2,
        }

    # -- measuring ---------------------------------------------------------------------------------

    def cold_start(self) -> None:
        if not self.args.no_drop_caches:
            self.cold = drop_caches()

    def measure(self, tool: str, phase: str, cmd, sink: list[PhaseResult]) -> tuple[PhaseResult, bytes]:
        self.cold_start()
        res, out = run_measured(tool, phase, cmd.argv, env=cmd.env, cwd=cmd.cwd,
                                log_path=self.log_path)
        sink.append(res)
        return res, out

    def run_baselines(self) -> None:
        bs = self.args.block_size_bytes or (1 << 20)
        py = [sys.executable, os.path.join(HERE, "baseline_read_hash.py"), self.image, str(bs)]
        res, out = self.measure("baseline", "read+blake3", Command(py), self.baselines)
        res.extra = json.loads(out)
        log(f"baseline read+BLAKE3 (python, 1 thread, holes skipped): {res.wall_s:.2f} s")
        res, _ = self.measure("baseline", "cat", Command(["sh", "-c", f"cat '{self.image}' > /dev/null"]),
                              self.baselines)
        log(f"baseline cat (holes read as zeros): {res.wall_s:.2f} s")
        if shutil.which("b3sum"):
            res, _ = self.measure("baseline", "b3sum", Command(["b3sum", "--no-names", self.image]),
                                  self.baselines)
            log(f"baseline b3sum (mmap, all threads): {res.wall_s:.2f} s")

    def run_tool(self, tool: Tool, sink: list[PhaseResult], label: str) -> None:
        """Full, change, Incremental, Restore, check, put the image back."""
        shutil.rmtree(tool.root, ignore_errors=True)
        os.makedirs(tool.root)
        init = tool.init()
        with open(self.log_path, "ab") as logf:
            subprocess.run(init.argv, env=init.env, cwd=init.cwd, check=True,
                           stdout=subprocess.DEVNULL, stderr=logf)
        before = self.repo_size(tool)[0]
        try:
            for phase in ("full", "incremental"):
                if phase == "incremental":
                    self.change.apply(self.image)
                res, out = self.measure(label, phase, tool.backup(self.image, phase), sink)
                res.repo_bytes, res.repo_apparent_bytes = self.repo_size(tool)
                res.extra = {**tool.report(out), "repo_growth": res.repo_bytes - before}
                before = res.repo_bytes
                log(f"{label} {phase}: {res.wall_s:.2f} s, peak {imagegen.human(res.peak_rss)}, "
                    f"repo {imagegen.human(res.repo_bytes)}")
            out_dir = os.path.join(tool.root, "restored")
            os.makedirs(out_dir)
            cmd, restored = tool.restore(self.image, out_dir)
            res, out = self.measure(label, "restore", cmd, sink)
            # Durable output for every tool alike: the restore is done when its bytes are on disk.
            t = time.monotonic()
            fd = os.open(restored, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            res.wall_s += time.monotonic() - t
            res.repo_bytes, res.repo_apparent_bytes = self.repo_size(tool)
            res.extra = {"restored_allocated": file_allocated(restored)}
            got = file_digest(restored)
            if got != self.digest_v2:
                raise BenchError(f"{label} restored a WRONG image: BLAKE3 {got} != source {self.digest_v2}"
                                 f" ({restored} kept for inspection)")
            res.extra["verified"] = True
            log(f"{label} restore: {res.wall_s:.2f} s, peak {imagegen.human(res.peak_rss)}, "
                f"restored image hash OK, allocated {imagegen.human(res.extra['restored_allocated'])}")
            os.unlink(restored)
        finally:
            if self.change.saved:
                self.change.revert(self.image)
        if not self.args.keep:
            shutil.rmtree(tool.root, ignore_errors=True)

    def repo_size(self, tool: Tool) -> tuple[int, int]:
        """(allocated, apparent) bytes of the tool's repository; a subclass measures object stores."""
        return dir_size(tool.repo)

    def main_block_size(self, rep: int) -> int | None:
        """The block size the main stackvault run used (stackvault says it in its report)."""
        full = [r for r in self.results if r.tool == "stackvault" and r.phase == "full"]
        return full[rep].extra.get("block_size") if len(full) > rep else None

    def make_tool(self, name: str, block_size: int | None = None) -> Tool:
        root = os.path.join(self.scratch, "tools", name if block_size is None else
                            f"{name}-{block_size >> 10}K")
        if name == "stackvault":
            return Stackvault(root, self.args.stackvault, block_size, self.args.encrypt)
        if not shutil.which(name):
            raise BenchError(f"{name} is not installed (apt-get install "
                             f"{'borgbackup' if name == 'borg' else name}, or leave it out with --tools)")
        return Restic(root) if name == "restic" else Borg(root)

    # -- profiling ---------------------------------------------------------------------------------

    def profile(self, phases: list[str]) -> dict[str, str]:
        """Re-run stackvault's phases, each listed one under py-spy; summaries by phase."""
        out_dir = os.path.abspath(self.args.out)
        root = os.path.join(self.scratch, "tools", "stackvault-profile")
        tool = Stackvault(root, self.args.stackvault, self.args.block_size_bytes, self.args.encrypt)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        summaries: dict[str, str] = {}
        logf = open(self.log_path, "ab")  # noqa: SIM115 - closed below
        init = tool.init()
        subprocess.run(init.argv, env=init.env, check=True, stdout=subprocess.DEVNULL, stderr=logf)
        try:
            steps = [("full", tool.backup(self.image, "full")), ("incremental", None), ("restore", None)]
            for phase, cmd in steps:
                if phase == "incremental":
                    self.change.apply(self.image)
                    cmd = tool.backup(self.image, "incremental")
                if phase == "restore":
                    os.makedirs(os.path.join(root, "restored"), exist_ok=True)
                    cmd, _ = tool.restore(self.image, os.path.join(root, "restored"))
                self.cold_start()
                if phase in phases:
                    raw = os.path.join(out_dir, f"profile-{phase}.txt")
                    log(f"profiling stackvault {phase} with py-spy -> {raw}")
                    if not hotspots.record(cmd.argv, raw, env=cmd.env, log=logf):
                        log("py-spy is not installed (pip install py-spy): no profile")
                        return summaries
                    summaries[phase] = hotspots.summarise(raw)
                    with open(os.path.join(out_dir, f"profile-{phase}-summary.txt"), "w") as f:
                        f.write(summaries[phase])
                else:
                    subprocess.run(cmd.argv, env=cmd.env, check=True, stdout=subprocess.DEVNULL,
                                   stderr=logf)
        finally:
            if self.change.saved:
                self.change.revert(self.image)
            shutil.rmtree(root, ignore_errors=True)
            logf.close()
        return summaries

    # -- the whole run -----------------------------------------------------------------------------

    def run(self) -> int:
        os.makedirs(self.args.out, exist_ok=True)
        open(self.log_path, "w").close()
        started = time.time()
        self.prepare_image()
        facts = self.image_facts()
        shown = ("bytes", "allocated", "compressible_zstd3_ratio_1MiB", "change_extents")
        log(f"image: {json.dumps({k: facts[k] for k in shown})}")
        for rep in range(self.args.repeat):
            if self.args.repeat > 1:
                log(f"round {rep + 1} of {self.args.repeat}")
            self.run_baselines()
            if not self.cold:
                log("page cache NOT dropped (not root, or --no-drop-caches): numbers are warm-cache")
            for name in self.args.tool_list:
                self.run_tool(self.make_tool(name, self.args.block_size_bytes if name == "stackvault"
                                             else None), self.results, name)
            for bs in self.args.sweep:
                label = f"stackvault@{bs >> 10}K"
                if bs == self.main_block_size(rep):
                    # The main run already measured this block size in this round: reuse it.
                    self.sweep += [PhaseResult(**{**vars(r), "tool": label}) for r in self.results
                                   if r.tool == "stackvault"][-len(PHASES):]
                    continue
                self.run_tool(self.make_tool("stackvault", bs), self.sweep, label)
        results, baselines, sweep = (report.best_of(x) for x in (self.results, self.baselines, self.sweep))
        verdict = report.evaluate(results, baselines)
        text = report.render(results, baselines, sweep, verdict, facts, self.cold)
        print(text)
        missed = [t["phase"] for t in verdict["targets"] if t["status"] == "MISS" and t.get("phase")]
        profile_phases = list(PHASES) if self.args.profile == "always" else (
            sorted(set(missed), key=PHASES.index) if self.args.profile == "auto" else [])
        profiles = self.profile(profile_phases) if profile_phases and "stackvault" in self.args.tool_list else {}
        for phase, summary in profiles.items():
            print(f"\n## profile of stackvault {phase}\n{summary}")
        doc = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_s": round(time.time() - started, 1),
            "machine": machine(),
            "cold_cache": self.cold,
            "stackvault_command": self.args.stackvault,
            "stackvault_commit": self.args.engine_commit or f"{git_head()} + working tree",
            "block_size": self.args.block_size_bytes,
            "stackvault_encrypted": self.args.encrypt,
            "image": facts,
            "repeat": self.args.repeat,
            "baselines": [vars(r) for r in baselines],
            "results": [vars(r) for r in results],
            "block_size_sweep": [vars(r) for r in sweep],
            "all_runs": [vars(r) for r in self.results + self.baselines + self.sweep],
            "verdict": verdict,
            "profiles": profiles,
            "table": text,
        }
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
        for name in (f"results-{stamp}.json", "latest.json"):
            with open(os.path.join(self.args.out, name), "w") as f:
                json.dump(doc, f, indent=1)
        log(f"results in {os.path.join(self.args.out, 'latest.json')}")
        return 0


def machine() -> dict:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for exe, flag in (("restic", "version"), ("borg", "--version")):
        try:
            versions[exe] = subprocess.run([exe, flag], capture_output=True, text=True).stdout.strip()
        except OSError:
            versions[exe] = None
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "load_1m": os.getloadavg()[0], **versions}


def git_head() -> str | None:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.engine_commit = None
        if args.engine_ref:
            args.stackvault, args.engine_commit = export_engine(args.engine_ref, os.path.abspath(args.scratch))
            log(f"measuring stackvault as committed at {args.engine_commit}")
        return Bench(args).run()
    except (BenchError, CommandFailed) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

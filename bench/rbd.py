"""Changed-block Incrementals of an RBD image against a full read and against reading the change itself.

On a single-node Ceph started alone (devcloud.ceph: one monitor, one bluestore OSD on a sparse file,
in a temporary directory), for each image size:

1. an RBD image `--written` bytes are written into, in 4 MiB objects at random places of the image
   (random data: no tool gains by compression), snapshot s1, a Full into two repositories;
2. `--change` of the written bytes rewritten in `--extent` pieces at scattered aligned offsets,
   snapshot s2;
3. measured: (a) the changed-block Incremental of s2 (the default path) into the first repository;
   (b) the same Incremental read in full (`--no-changed-blocks`) into the second, seeded by the
   same Full; (c) the floor: one process listing the changed extents with librbd's `diff_iterate`
   and reading exactly those bytes (four threads), nothing else; (d) how long the listing takes
   inside (a) (the report's `read.listing_s`).

The image sizes are `--image-factors` times the written bytes (2x and 8x by default): the written
and changed data are the same in each, so what follows the image size rather than the change shows
up as a difference between the rows. Every command runs under GNU time (peak RSS of the CLI), and
the OSD is restarted before each measured phase, so no phase reads from a cache another one warmed.

    make bench-rbd                                   # 2 GiB written, images of 4 and 16 GiB
    make bench-rbd BENCH_ARGS="--written 8G"         # the target scenario (~11 min, ~35 GiB of disk)
    .venv/bin/python bench/rbd.py --written 256M     # a smoke run (1-2 min)

Targets: full read / changed-block >= 20x at 1% change; changed-block / floor <= 2x.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from measure import PhaseResult, dir_size, run_measured

MiB = 1 << 20
GiB = 1 << 30
OBJECT = 4 * MiB  # librbd's default object size: the data is written in whole objects
UNITS = {"K": 10, "M": 20, "G": 30, "T": 40}
SPEEDUP_TARGET = 20.0  # full read / changed-block
FLOOR_FACTOR = 2.0  # changed-block / floor
FLOOR_THREADS = 4


class BenchError(RuntimeError):
    """The benchmark cannot give a meaningful answer."""


def log(msg: str) -> None:
    print(f"[bench-rbd {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(text[:-1]) << UNITS[text[-1]] if text and text[-1] in UNITS else int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--written", default="2G", help="bytes written into each image (default 2G; target scenario 8G)")
    p.add_argument("--image-factors", default="2,8",
                   help="image sizes as multiples of --written, comma list (default 2,8)")
    p.add_argument("--change", type=float, default=0.01, help="share of the written bytes rewritten (default 0.01)")
    p.add_argument("--extent", default="64K", help="size of each rewritten extent (default 64K)")
    p.add_argument("--block-size", default=None, help="repository block size (default: stackvault's)")
    p.add_argument("--format", default=None, help="repository format, 4 for pack files (default: stackvault's)")
    p.add_argument("--seed", type=int, default=20261207)
    p.add_argument("--scratch", default=os.path.join(ROOT, ".state", "bench-rbd"),
                   help="repositories (default .state/bench-rbd; about 2x --written per image size at a time)")
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="results directory (bench/out)")
    p.add_argument("--no-restart", action="store_true",
                   help="keep the OSD running between phases (its cache stays warm)")
    p.add_argument("--stackvault", default=str(Path(sys.executable).parent / "stackvault"))
    a = p.parse_args(argv)
    try:
        a.written_bytes = parse_size(a.written)
        a.extent_bytes = parse_size(a.extent)
        a.factors = [int(f) for f in a.image_factors.split(",") if f.strip()]
    except (ValueError, IndexError):
        p.error("sizes are numbers with K, M, G or T; --image-factors whole numbers")
    if a.written_bytes < 16 * OBJECT or a.written_bytes % OBJECT:
        p.error("--written must be a multiple of 4 MiB, at least 64 MiB")
    if not a.factors or min(a.factors) < 1:
        p.error("--image-factors must be whole numbers >= 1")
    if not 0 < a.change <= 0.5:
        p.error("--change must be above 0 and at most 0.5")
    if a.extent_bytes < 4096 or a.extent_bytes % 4096 or OBJECT % a.extent_bytes:
        p.error("--extent must be a multiple of 4K that divides 4M")
    return a


def change_extents(pieces: list[int], written: int, change: float, extent: int, rng: random.Random) -> list[int]:
    """Offsets of the rewritten extents: `change` of the written bytes, distinct `extent`-aligned
    places inside the written objects (`pieces`: their offsets), in disk order."""
    per_piece = OBJECT // extent
    count = max(1, math.ceil(written * change / extent))
    slots = rng.sample(range(len(pieces) * per_piece), count)
    return sorted(pieces[s // per_piece] + (s % per_piece) * extent for s in slots)


# ---- the floor: list the change and read it, nothing else (runs as its own process) ---------------

def floor(conf: str, client: str, keyring: str, pool: str, image: str, base: str, snap: str) -> dict:
    # `import rbd` must find librbd's module, not this file: the bench directory leaves the path
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
    import rados  # Debian's bindings, on the venv's path through scripts/bootstrap
    import rbd

    started = time.monotonic()
    cluster = rados.Rados(conffile=conf, name=client, conf={"keyring": keyring})
    cluster.connect(timeout=30)
    extents: list[tuple[int, int]] = []

    def add(offset: int, length: int, exists: bool) -> None:
        if exists:
            if extents and sum(extents[-1]) == offset:
                extents[-1] = (extents[-1][0], extents[-1][1] + length)
            else:
                extents.append((offset, length))

    try:
        with cluster.open_ioctx(pool) as ioctx, rbd.Image(ioctx, image, snapshot=snap, read_only=True) as img:
            listed = time.monotonic()
            objects: list[tuple[int, int]] = []  # fast-diff's object maps first, as stackvault lists
            img.diff_iterate(0, img.size(), base, lambda o, n, _: objects.append((o, n)), whole_object=True)
            for offset, length in objects:
                img.diff_iterate(offset, length, base, add, whole_object=False)
            listing_s = time.monotonic() - listed
            read = time.monotonic()
            with ThreadPoolExecutor(FLOOR_THREADS) as pool_:
                got = sum(pool_.map(lambda e: len(img.read(e[0], e[1])), extents))
            read_s = time.monotonic() - read
    finally:
        cluster.shutdown()
    return {"extents": len(extents), "bytes_read": got, "listing_s": round(listing_s, 4),
            "read_s": round(read_s, 3), "in_process_s": round(time.monotonic() - started, 3)}


# ---- the cluster --------------------------------------------------------------------------------

class Cluster:
    """A single-node Ceph in a temporary directory, started alone; stopped and removed at the end."""

    def __init__(self, osd_bytes: int) -> None:
        from devcloud import ceph

        self.ceph = ceph
        # Everything written lives in the OSD's sparse block file: big enough for one image at a time.
        ceph.OSD_SIZE = f"{max(10, -(-osd_bytes // GiB))}G"
        self.state = Path(tempfile.mkdtemp(prefix="sv-bench-ceph-"))  # short: admin sockets live under it

    def start(self) -> None:
        from devcloud.context import CloudContext

        self.ceph.start(CloudContext(state_dir=self.state))

    def restart(self) -> None:
        self.ceph.stop(self.state)
        self.start()

    def stop(self) -> None:
        from devcloud import processes

        self.ceph.stop(self.state)
        processes.stop_all(self.state)
        shutil.rmtree(self.state, ignore_errors=True)

    def config(self) -> str:
        ceph = self.ceph
        return (f'[ceph]\nconf = "{ceph.conf_path(self.state)}"\nclient = "client.{ceph.PROXY_USER}"\n'
                f'keyring = "{ceph.keyring_path(self.state, ceph.PROXY_USER)}"\n')


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scratch = Path(args.scratch).absolute()
        self.out = Path(args.out).absolute()
        self.log_path = str(self.out / "rbd-commands.log")
        self.rng = random.Random(args.seed)
        # Room for every image at once: a removed image's space comes back only once the OSD has
        # trimmed its snapshots, which it does in the background, after the next image is written.
        self.cluster = Cluster(int(len(args.factors) * args.written_bytes * (1 + 2 * args.change)) + 2 * GiB)
        self.results: list[dict] = []

    # -- steps ------------------------------------------------------------------------------------

    def sv(self, name: str, *args: str) -> list[str]:
        root = self.scratch / name
        return [self.args.stackvault, "--repo", str(root / "repo"), "--workdir", str(root / "work"),
                "--catalog", f"sqlite:///{root / 'catalog.db'}", "--config", str(self.scratch / "sv.toml"),
                "--json", *args]

    def measured(self, what: str, argv: list[str]) -> tuple[PhaseResult, dict]:
        if not self.args.no_restart:
            self.cluster.restart()  # the OSD's cache holds nothing a phase before left
        res, out = run_measured("stackvault", what, argv, log_path=self.log_path)
        return res, json.loads(out) if out.strip() else {}

    def write_image(self, rbd: Any, ioctx: Any, name: str, size: int) -> list[int]:
        written = self.args.written_bytes
        pieces = sorted(self.rng.sample(range(size // OBJECT), written // OBJECT))
        rbd.RBD().create(ioctx, name, size)
        started = time.monotonic()
        with rbd.Image(ioctx, name) as img:
            for k in pieces:
                img.write(self.rng.randbytes(OBJECT), k * OBJECT)
            img.flush()
            img.create_snap("s1")
        log(f"{name}: {written / MiB:,.0f} MiB written in {time.monotonic() - started:.1f} s")
        return [k * OBJECT for k in pieces]

    def change(self, rbd: Any, ioctx: Any, name: str, pieces: list[int]) -> int:
        a = self.args
        offsets = change_extents(pieces, a.written_bytes, a.change, a.extent_bytes, self.rng)
        with rbd.Image(ioctx, name) as img:
            for offset in offsets:
                img.write(self.rng.randbytes(a.extent_bytes), offset)
            img.flush()
            img.create_snap("s2")
        return len(offsets)

    def one_size(self, factor: int) -> dict:
        a, ceph = self.args, self.cluster.ceph
        size = a.written_bytes * factor
        name = f"bench-{factor}x"
        _, rbd = ceph.import_bindings(self.cluster.state)
        admin = ceph.connect(self.cluster.state, "admin")
        ioctx = admin.open_ioctx(ceph.POOL)
        row: dict[str, Any] = {"image": name, "image_bytes": size, "written_bytes": a.written_bytes}
        try:
            pieces = self.write_image(rbd, ioctx, name, size)
            for repo in ("changed", "fullread"):
                shutil.rmtree(self.scratch / repo, ignore_errors=True)
                init = ["init", *(["--block-size", a.block_size] if a.block_size else []),
                        *(["--format", a.format] if a.format else [])]
                run_measured("stackvault", "init", self.sv(repo, *init), log_path=self.log_path)
            spec = f"rbd:{ceph.POOL}/{name}@"
            for repo in ("changed", "fullread"):
                res, rep = self.measured("full", self.sv(repo, "backup", "--source", spec + "s1", "--level", "full"))
                row[f"full_{repo}"] = phase(res, rep)
                log(f"{name}: Full into {repo}: {res.wall_s:.1f} s, {rep['bytes_read'] / MiB:,.0f} MiB read")
            extents = self.change(rbd, ioctx, name, pieces)
            row["change"] = {"extents": extents, "extent_bytes": a.extent_bytes, "bytes": extents * a.extent_bytes}

            res, rep = self.measured("changed_blocks", self.sv("changed", "backup", "--source", spec + "s2"))
            row["changed_blocks"] = phase(res, rep)
            if rep["disks"][0]["read"].get("path") != "changed_blocks":
                raise BenchError(f"the default Incremental did not take the changed-block path: {rep['disks'][0]}")
            log(f"{name}: changed-block Incremental {res.wall_s:.1f} s, {rep['bytes_read'] / MiB:,.1f} MiB read")

            conf = ceph.conf_path(self.cluster.state)
            keyring = ceph.keyring_path(self.cluster.state, ceph.PROXY_USER)
            floor_argv = [sys.executable, os.path.abspath(__file__), "floor", str(conf), f"client.{ceph.PROXY_USER}",
                          str(keyring), ceph.POOL, name, "s1", "s2"]
            res, rep = self.measured("floor", floor_argv)
            row["floor"] = {**phase(res, {}), **rep}
            log(f"{name}: floor {res.wall_s:.1f} s, {rep['bytes_read'] / MiB:,.1f} MiB read")

            res, rep = self.measured("full_read", self.sv("fullread", "backup", "--source", spec + "s2",
                                                          "--no-changed-blocks"))
            row["full_read"] = phase(res, rep)
            log(f"{name}: full-read Incremental {res.wall_s:.1f} s, {rep['bytes_read'] / MiB:,.0f} MiB read")
            if row["full_read"]["blocks_changed"] != row["changed_blocks"]["blocks_changed"]:
                raise BenchError("the two Incrementals of s2 found different changes: "
                                 f"{row['full_read']} / {row['changed_blocks']}")
            row["repo_bytes"] = dir_size(str(self.scratch / "changed" / "repo"))[0]
        finally:
            try:
                with rbd.Image(ioctx, name) as img:
                    for snap in list(img.list_snaps()):
                        img.remove_snap(snap["name"])
                rbd.RBD().remove(ioctx, name)
            except Exception as exc:  # noqa: BLE001 - the cluster is thrown away anyway
                log(f"could not remove {name}: {exc}")
            ioctx.close()
            admin.shutdown()
            for repo in ("changed", "fullread"):
                shutil.rmtree(self.scratch / repo, ignore_errors=True)
        cb, fr, fl = row["changed_blocks"], row["full_read"], row["floor"]
        row["listing_s"] = cb["read"].get("listing_s")
        row["ratios"] = {"full_read_over_changed": round(fr["wall_s"] / cb["wall_s"], 2),
                         "changed_over_floor": round(cb["wall_s"] / fl["wall_s"], 2),
                         "changed_over_floor_in_process": round(cb["duration_s"] / fl["in_process_s"], 2),
                         "bytes_changed_over_floor": round(cb["bytes_read"] / fl["bytes_read"], 2)}
        return row

    def run(self) -> dict:
        a = self.args
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        from devcloud import processes

        started = time.monotonic()
        with processes.stopped_at_exit(self.cluster.stop):
            self.cluster.start()
            log(f"ceph started in {self.cluster.state}")
            (self.scratch / "sv.toml").write_text(self.cluster.config())
            for factor in a.factors:
                self.results.append(self.one_size(factor))
        return {"written_bytes": a.written_bytes, "change": a.change, "extent_bytes": a.extent_bytes,
                "block_size": a.block_size or "default", "format": a.format or "default",
                "osd_restarted_per_phase": not a.no_restart,
                "seed": a.seed, "runs": self.results, "targets": evaluate(self.results),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "kernel": platform.release()},
                "bench_s": round(time.monotonic() - started, 1),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def phase(res: PhaseResult, rep: dict) -> dict:
    out: dict[str, Any] = {"wall_s": round(res.wall_s, 2), "cpu_s": round(res.cpu_s, 2),
                           "peak_rss": res.peak_rss, "load_1m": round(res.load_1m, 1)}
    if rep:
        disk = rep["disks"][0]
        out.update(duration_s=rep["duration_s"], bytes_read=rep["bytes_read"], bytes_stored=rep["bytes_stored"],
                   blocks_changed=rep["blocks_changed"], level=disk["level"], read=disk["read"])
    return out


def evaluate(runs: list[dict]) -> list[dict]:
    targets = []
    for r in runs:
        got = r["ratios"]["full_read_over_changed"]
        targets.append({"image": r["image"], "target": f"full read / changed-block >= {SPEEDUP_TARGET:g}x",
                        "value": got, "status": "PASS" if got >= SPEEDUP_TARGET else "MISS"})
        got = r["ratios"]["changed_over_floor"]
        targets.append({"image": r["image"], "target": f"changed-block / floor <= {FLOOR_FACTOR:g}x",
                        "value": got, "status": "PASS" if got <= FLOOR_FACTOR else "MISS"})
    return targets


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731 - a one-line helper
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def render(result: dict) -> str:
    osd = "restarted before each phase (cold cache)" if result["osd_restarted_per_phase"] else "kept running (warm)"
    out = [f"Written {result['written_bytes'] / MiB:,.0f} MiB of random data per image; changed "
           f"{result['change']:.1%} of it in {result['extent_bytes'] >> 10} KiB extents; repository block size "
           f"{result['block_size']}, format {result.get('format', 'default')}; OSD {osd}.", ""]
    rows = []
    labels = [("full_changed", "Full (s1)"), ("changed_blocks", "(a) changed-block Incr"),
              ("full_read", "(b) full-read Incr"), ("floor", "(c) floor: list + read")]
    for r in result["runs"]:
        for key, label in labels:
            p = r[key]
            engine = p.get("duration_s", p.get("in_process_s"))
            rows.append([f"{r['image_bytes'] / GiB:g} GiB", label, f"{p['wall_s']:.2f}",
                         "-" if engine is None else f"{engine:.2f}", f"{p['bytes_read'] / MiB:,.1f}",
                         f"{p['peak_rss'] / MiB:,.0f}", f"{p['cpu_s']:.1f}", f"{p['load_1m']:.1f}"])
        read = r["changed_blocks"]["read"]
        rows.append([f"{r['image_bytes'] / GiB:g} GiB", "(d) listing in (a)", f"{r['listing_s']:.3f}", "-",
                     f"{read['blocks_listed']} listed + {read['sample_blocks']} sampled blocks", "-", "-", "-"])
    out += _table(["image", "phase", "wall s", "in process s", "read MiB", "peak RSS MiB", "CPU s", "load"], rows)
    out.append("(in process: the duration stackvault reports, or the floor's own time after its start; "
               "load: 1-min load average at the start)")
    out.append("")
    out += _table(["image", "full read / changed-block", "changed-block / floor", "same, in process",
                   "bytes read changed-block / floor"],
                  [[f"{r['image_bytes'] / GiB:g} GiB", f"{r['ratios']['full_read_over_changed']:.2f}x",
                    f"{r['ratios']['changed_over_floor']:.2f}x", f"{r['ratios']['changed_over_floor_in_process']:.2f}x",
                    f"{r['ratios']['bytes_changed_over_floor']:.2f}x"] for r in result["runs"]])
    out.append("")
    out += _table(["image", "target", "value", "status"],
                  [[t["image"], t["target"], f"{t['value']}x", t["status"]] for t in result["targets"]])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["floor"]:
        print(json.dumps(floor(*argv[1:8])))
        return 0
    args = parse_args(argv)
    if shutil.which("time", path="/usr/bin:/bin") is None:
        log("GNU time is missing: peak RSS comes from polling /proc only")
    result = Bench(args).run()
    text = render(result)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("rbd-latest.json", f"rbd-results-{stamp}.json"):
        (Path(args.out) / name).write_text(json.dumps(result, indent=1) + "\n")
    log(f"results in {Path(args.out) / 'rbd-latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

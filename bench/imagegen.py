"""The benchmark's disk image: generated, changed and put back, all deterministic from one seed.

Why generate instead of downloading an OS image: the benchmark must run offline, at any size, and
the same bytes must come out on every machine so that numbers from two runs compare. The image has
the three kinds of content a real guest disk has, in extents of mixed size laid out in a shuffled
order:

* holes (never written: real sparse holes, which a good reader never reads),
* "OS-like" data that zstd compresses about 2-4x: log/config text, ELF-like code with symbol
  strings, and packed metadata records (inode-table-like structs). Every record carries a unique
  counter, so no two blocks are equal and content-defined chunkers (restic, borg) find no
  duplicates the fixed-block engine would miss: nobody gets an unearned dedup win,
* random data (already-compressed files, encrypted blobs).

The "second version" rewrites 1% of the image in scattered 64 KiB extents, in place, as a guest
would; `ImageChange.revert` puts the first version back so every tool starts from identical bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import struct
from dataclasses import dataclass, field

import blake3

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

EXTENT_ALIGN = 64 * KiB  # extents start and end on 64 KiB: holes must be filesystem-block aligned
CHANGE_EXTENT = 64 * KiB
WRITE_PIECE = 1 * MiB

HOLE, COMPRESSIBLE, RANDOM = "hole", "compressible", "random"
DEFAULT_MIX = {HOLE: 0.40, COMPRESSIBLE: 0.40, RANDOM: 0.20}


def parse_size(text: str) -> int:
    """'2G', '256M', '512K', '1MiB' or a byte count -> bytes (powers of 1024)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": KiB, "M": MiB, "G": GiB, "T": 1024 * GiB}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    kind: str


@dataclass
class ImageLayout:
    size: int
    seed: int
    extents: list[Extent] = field(default_factory=list)

    def bytes_of(self, kind: str) -> int:
        return sum(e.length for e in self.extents if e.kind == kind)


def plan_layout(size: int, seed: int, mix: dict[str, float] = DEFAULT_MIX) -> ImageLayout:
    """Cut the image into extents whose kinds add up exactly to the mix, in a shuffled order.

    Extent sizes are log-uniform between 64 KiB and 32 MiB (a mix of small files, large files and
    free space), so blocks of every size straddle kind boundaries as they do on real disks.
    """
    if size % EXTENT_ALIGN:
        raise ValueError(f"image size {size} is not a multiple of 64 KiB (pick e.g. 256M or 2G)")
    rng = random.Random(f"layout-{seed}")
    units = size // EXTENT_ALIGN
    kinds = list(mix)
    quota = {k: round(units * mix[k]) for k in kinds[1:]}
    quota[kinds[0]] = units - sum(quota.values())
    pieces: list[tuple[str, int]] = []
    max_units = max(1, min(512, units // 16))  # 32 MiB, smaller for small images
    for kind in kinds:
        left = quota[kind]
        while left > 0:
            n = min(left, max(1, int(2 ** rng.uniform(0, max_units.bit_length() - 1))))
            pieces.append((kind, n))
            left -= n
    rng.shuffle(pieces)
    layout = ImageLayout(size=size, seed=seed)
    pos = 0
    for kind, n in pieces:
        layout.extents.append(Extent(pos * EXTENT_ALIGN, n * EXTENT_ALIGN, kind))
        pos += n
    return layout


class OsLikeData:
    """Unique, compressible bytes that look like what an OS disk holds.

    Three generators, switched every 64-512 KiB like files on a filesystem: text lines (logs and
    configs) built from a Zipf-distributed vocabulary, ELF-like code (opcode-skewed bytes with
    embedded addresses and symbol names) and packed metadata records. Fast enough in pure Python
    (~100+ MB/s) because each Python step emits a whole line or record, never a single byte.
    """

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"vocab-{seed}")
        syll = ["ba", "ker", "nel", "sys", "tem", "d", "lib", "usr", "conf", "net", "dev", "ice",
                "mod", "ule", "ser", "vice", "x", "on", "in", "it", "log", "boot", "ssh", "pro",
                "cess", "mem", "ory", "file", "path", "user", "time", "out", "err", "or", "ok"]
        words = sorted({"".join(rng.choices(syll, k=rng.randint(1, 4))) for _ in range(6000)})
        rng.shuffle(words)
        self.words = words
        self.weights = [1 / (i + 1) for i in range(len(words))]  # Zipf: a few words dominate
        cum = []
        total = 0.0
        for w in self.weights:
            total += w
            cum.append(total)
        self.cum = cum
        # Text lines: a pool of sentences reused with unique stamps, as logs and configs repeat.
        self.lines = [" ".join(rng.choices(words, cum_weights=cum, k=rng.randint(3, 14)))
                      for _ in range(30000)]
        # ELF-like code: bytes skewed toward common x86-64 opcodes and small immediates.
        hot = [0x00, 0x48, 0x89, 0x8B, 0xE8, 0xFF, 0x0F, 0x85, 0x84, 0x74, 0x75, 0xC3, 0x83,
               0x45, 0x4C, 0x8D, 0x31, 0xC0, 0x24, 0x08, 0x10, 0x01, 0x41, 0x5D, 0x55, 0xEB]
        table = bytearray(256)
        for i in range(256):
            table[i] = hot[i % len(hot)] if i < 176 else i
        self.code_table = bytes(table)
        self.code_pool = blake3.blake3(f"code-{seed}".encode()).digest(length=4 * MiB).translate(
            self.code_table)
        self.symbols = [f"_ZN{len(w)}{w}{rng.randint(1, 99)}{rng.choice(words)}Ev".encode()
                        for w in rng.choices(words, k=4000)]
        self.record = struct.Struct("<QIIIHHQ24s")

    def generate(self, key: str, length: int) -> bytes:
        """`length` bytes for the extent named `key`; the same key always gives the same bytes."""
        rng = random.Random(key)
        out = bytearray()
        counter = rng.getrandbits(40)
        while len(out) < length:
            want = min(length - len(out), rng.choice((64, 128, 256, 512)) * KiB)
            kind = rng.random()
            if kind < 0.45:
                counter = self._text(rng, out, want, counter)
            elif kind < 0.75:
                counter = self._code(rng, out, want, counter)
            else:
                counter = self._records(rng, out, want, counter)
        return bytes(out[:length])

    def _text(self, rng: random.Random, out: bytearray, want: int, counter: int) -> int:
        end = len(out) + want
        lines = self.lines
        n = len(lines)
        hosts = ("node01", "node02", "ctl")
        procs = ("kernel", "systemd", "sshd", "nova-compute", "cron", "dhclient")
        while len(out) < end:
            counter += rng.randint(1, 5000)
            picks = rng.choices(range(n), k=32)
            host = hosts[counter % 3]
            proc = procs[counter % 6]
            out += "".join(
                f"{counter + i * 7:012d} {host} {proc}[{(counter >> 4) % 32768}]: {lines[p]}\n"
                for i, p in enumerate(picks)).encode()
        return counter

    def _code(self, rng: random.Random, out: bytearray, want: int, counter: int) -> int:
        end = len(out) + want
        pool = self.code_pool
        limit = len(pool) - 512
        syms = self.symbols
        while len(out) < end:
            for _ in range(16):
                counter += rng.randint(16, 400)
                off = rng.randrange(limit)
                out += pool[off:off + rng.randint(24, 200)]
                out += b"\xe8" + (counter & 0xFFFFFFFF).to_bytes(4, "little")
            out += b"\x00".join(rng.choices(syms, k=8)) + b"\x00"
        return counter

    def _records(self, rng: random.Random, out: bytearray, want: int, counter: int) -> int:
        end = len(out) + want
        pack = self.record.pack
        words = self.words
        while len(out) < end:
            for _ in range(32):
                counter += 1
                name = rng.choice(words).encode()[:24]
                out += pack(counter, 0o100644 if counter % 5 else 0o40755, 1000 + counter % 3,
                            rng.randrange(1 << 20), 1, counter % 16, 1_700_000_000 + counter * 3, name)
        return counter


def random_bytes(key: str, length: int) -> bytes:
    """Incompressible bytes (BLAKE3 XOF: fast and deterministic)."""
    return blake3.blake3(key.encode()).digest(length=length)


def write_image(path: str, layout: ImageLayout, progress=None) -> None:
    """Write the image sparsely: holes are never written, only the file is sized over them."""
    gen = OsLikeData(layout.seed)
    with open(path, "wb") as f:
        f.truncate(layout.size)
        for i, ext in enumerate(layout.extents):
            if ext.kind == HOLE:
                continue
            f.seek(ext.offset)
            for pos in range(0, ext.length, WRITE_PIECE):
                n = min(WRITE_PIECE, ext.length - pos)
                key = f"{layout.seed}-{i}-{pos}"
                f.write(gen.generate(key, n) if ext.kind == COMPRESSIBLE else random_bytes(key, n))
            if progress:
                progress(ext.offset + ext.length)
        f.flush()
        os.fsync(f.fileno())


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range so it is a real hole again (fallocate PUNCH_HOLE; Linux)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    if libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot punch a hole into the bench image: {os.strerror(err)}")


@dataclass
class ImageChange:
    """A guest-like rewrite of `fraction` of the image in scattered 64 KiB extents."""

    layout: ImageLayout
    fraction: float = 0.01
    offsets: list[int] = field(default_factory=list)
    saved: dict[int, bytes | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(f"change-{self.layout.seed}")
        slots = self.layout.size // CHANGE_EXTENT
        count = max(1, round(self.layout.size * self.fraction / CHANGE_EXTENT))
        self.offsets = sorted(s * CHANGE_EXTENT for s in rng.sample(range(slots), count))

    @property
    def bytes_changed(self) -> int:
        return len(self.offsets) * CHANGE_EXTENT

    def apply(self, path: str) -> None:
        """Rewrite the extents (2/3 OS-like, 1/3 random, as the data mix); remember the old bytes."""
        gen = OsLikeData(self.layout.seed)
        rng = random.Random(f"change-content-{self.layout.seed}")
        kinds = {e.offset: e.kind for e in self.layout.extents}
        starts = sorted(kinds)
        import bisect
        with open(path, "r+b") as f:
            fd = f.fileno()
            for off in self.offsets:
                kind = kinds[starts[bisect.bisect_right(starts, off) - 1]]
                f.seek(off)
                self.saved[off] = None if kind == HOLE else f.read(CHANGE_EXTENT)
                key = f"change-{self.layout.seed}-{off}"
                data = gen.generate(key, CHANGE_EXTENT) if rng.random() < 2 / 3 else random_bytes(
                    key, CHANGE_EXTENT)
                os.pwrite(fd, data, off)
            f.flush()
            os.fsync(fd)

    def revert(self, path: str) -> None:
        """Put the first version back: old bytes where there was data, real holes where there were none."""
        with open(path, "r+b") as f:
            fd = f.fileno()
            for off, old in self.saved.items():
                if old is None:
                    punch_hole(fd, off, CHANGE_EXTENT)
                else:
                    os.pwrite(fd, old, off)
            os.fsync(fd)
        self.saved.clear()

"""The tools under test, each as the commands a user would type: init, full, incremental, restore.

Every tool gets its own fresh directory (repository, caches, state), so nothing leaks between tools
or runs. Settings are each tool's defaults except where noted, because defaults are what users run:

* stackvault: `--level full`, then `--level incremental`, restore to a sparse raw file; with the
  bench's `--encrypt`, an encrypted repository (`init --encrypt`), as restic's always is.
* restic: always encrypts (cannot be turned off); repository format and compression are its default.
  Its file-level change detection sees a changed mtime and re-reads the whole file, as it must.
* borg: `-e none` (no encryption: the cheaper choice, so a conservative comparison), its default
  buzhash chunker and lz4 compression; `extract --sparse` so its output is sparse as well.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


def size_arg(n: int) -> str:
    """Bytes -> '256KiB' / '4MiB', the spelling `stackvault init --block-size` takes."""
    return f"{n >> 20}MiB" if n % (1 << 20) == 0 else f"{n >> 10}KiB"


class Tool:
    """One backup tool in its own scratch directory `root`."""

    name = "tool"

    def __init__(self, root: str) -> None:
        self.root = root
        self.repo = os.path.join(root, "repo")
        os.makedirs(root, exist_ok=True)

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def init(self) -> Command:
        raise NotImplementedError

    def backup(self, image: str, level: str) -> Command:
        raise NotImplementedError

    def restore(self, image: str, out_dir: str) -> tuple[Command, str]:
        """The restore command and the path where the restored image will be."""
        raise NotImplementedError

    def report(self, stdout: bytes) -> dict:
        """What the tool says about the phase (sizes it counted), when it says it in JSON."""
        return {}


class Stackvault(Tool):
    name = "stackvault"

    def __init__(self, root: str, command: str, block_size: int | None = None,
                 encrypt: bool = False) -> None:
        super().__init__(root)
        self.command = shlex.split(command)
        self.block_size = block_size
        self.encrypt = encrypt
        self.workdir = os.path.join(root, "state")

    def env(self) -> dict[str, str]:
        """With `--encrypt`, the passphrase (restic's cost of encrypting); a plain repository is refused
        when one is given (a config replaced by a plain one looks the same), so it gets none."""
        env = {k: v for k, v in os.environ.items() if k != "STACKVAULT_PASSPHRASE"}
        return {**env, "STACKVAULT_PASSPHRASE": "stackvault-bench"} if self.encrypt else env

    def _base(self) -> list[str]:
        return [*self.command, "--repo", self.repo, "--workdir", self.workdir,
                "--catalog", f"sqlite:///{os.path.join(self.root, 'catalog.db')}"]

    def init(self) -> Command:
        extra = ["--block-size", size_arg(self.block_size)] if self.block_size else []
        if self.encrypt:
            extra.append("--encrypt")
        return Command([*self._base(), "init", *extra], self.env())

    def backup(self, image: str, level: str) -> Command:
        return Command([*self._base(), "--json", "-q", "backup", "--source", f"file:{image}",
                        "--level", level], self.env())

    def restore(self, image: str, out_dir: str) -> tuple[Command, str]:
        out = os.path.join(out_dir, os.path.basename(image))
        return Command([*self._base(), "--json", "-q", "restore", "latest", "--to",
                        f"file:{out}"], self.env()), out

    def report(self, stdout: bytes) -> dict:
        try:
            doc = json.loads(stdout or b"{}")
        except ValueError:
            return {}
        keys = ("backup_id", "level", "bytes_read", "bytes_stored", "blocks_total",
                "blocks_changed", "duration_s", "status")
        out = {k: doc[k] for k in keys if k in doc}
        disks = doc.get("disks") or [{}]
        if "block_size" in disks[0]:
            out["block_size"] = disks[0]["block_size"]
        return out


class Restic(Tool):
    name = "restic"

    def env(self) -> dict[str, str]:
        return {**os.environ, "RESTIC_PASSWORD": "stackvault-bench", "RESTIC_REPOSITORY": self.repo,
                "RESTIC_CACHE_DIR": os.path.join(self.root, "cache")}

    def init(self) -> Command:
        return Command(["restic", "init", "-q"], self.env())

    def backup(self, image: str, level: str) -> Command:
        # restic has no levels: the second run finds the first snapshot as its parent by itself.
        return Command(["restic", "backup", "--json", "-q", "--host", "bench", image], self.env())

    def restore(self, image: str, out_dir: str) -> tuple[Command, str]:
        out = os.path.join(out_dir, os.path.abspath(image).lstrip("/"))
        return Command(["restic", "restore", "latest", "-q", "--host", "bench", "--target",
                        out_dir], self.env()), out

    def report(self, stdout: bytes) -> dict:
        for line in reversed(stdout.splitlines()):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("message_type") == "summary":
                return {"data_added": doc.get("data_added"),
                        "total_bytes_processed": doc.get("total_bytes_processed")}
        return {}


class Borg(Tool):
    name = "borg"

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.archives = 0

    def env(self) -> dict[str, str]:
        return {**os.environ, "BORG_BASE_DIR": os.path.join(self.root, "base"),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "BORG_PASSPHRASE": ""}

    def init(self) -> Command:
        return Command(["borg", "init", "-e", "none", self.repo], self.env())

    def backup(self, image: str, level: str) -> Command:
        self.archives += 1
        # Run from the image's folder so the archive holds just its name.
        return Command(["borg", "create", "--json", f"{self.repo}::v{self.archives}",
                        os.path.basename(image)], self.env(), cwd=os.path.dirname(image))

    def restore(self, image: str, out_dir: str) -> tuple[Command, str]:
        return Command(["borg", "extract", "--sparse", f"{self.repo}::v{self.archives}"],
                       self.env(), cwd=out_dir), os.path.join(out_dir, os.path.basename(image))

    def report(self, stdout: bytes) -> dict:
        try:
            stats = json.loads(stdout or b"{}").get("archive", {}).get("stats", {})
        except ValueError:
            return {}
        return {k: stats[k] for k in ("deduplicated_size", "compressed_size", "original_size")
                if k in stats}

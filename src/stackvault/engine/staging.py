"""Restore staging files of killed processes, found and removed by the next command of any kind.

A restore writes `PATH.partial` wherever the user asked; once the process is killed (SIGKILL, the OOM
killer, a power cut) nothing in it can remove that file, and a restore to another path would never look
there. So a restore notes its staging files in the working directory before writing a byte of them, and
every command starts by removing those whose process is gone. An entry names each file's device and
inode: a file that someone later put at the same path is never removed.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

from . import pids
from .atomic import TEMP_PREFIX, write_atomic


def _running(pid: int, started: str | None) -> bool:
    """The noted process is still the one running under that pid (not a later one that reused it)."""
    return pids.alive(pid) and (started is None or pids.start_time(pid) in (None, started))


class StagingLedger:
    def __init__(self, workdir: str | Path) -> None:
        self.dir = Path(workdir) / "staging"

    def note(self, paths: list[str]) -> str | None:
        """Record the existing files `paths` as this process's staging files; returns the entry's name,
        or None when the working directory cannot be written (the restore goes on: it matters more)."""
        files = []
        for path in dict.fromkeys(paths):
            st = os.lstat(path)
            files.append({"path": path, "dev": st.st_dev, "ino": st.st_ino})
        pid = os.getpid()
        name = f"{pid}-{secrets.token_hex(4)}.json"
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            write_atomic(self.dir / name, json.dumps({"pid": pid, "started": pids.start_time(pid), "files": files})
                         .encode(), durable=False)
        except OSError:
            return None
        return name

    def forget(self, name: str) -> None:
        try:
            os.unlink(self.dir / name)
        except FileNotFoundError:
            pass

    def sweep(self) -> list[str]:
        """Remove the staging files of processes that are gone; returns their paths. Never fails: a
        working directory that cannot be read or written only leaves them for a later run."""
        removed: list[str] = []
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            return removed
        for name in names:
            if name.startswith(TEMP_PREFIX):
                continue
            entry = self.dir / name
            try:
                doc = json.loads(entry.read_bytes())
                if _running(int(doc["pid"]), doc.get("started")):
                    continue
                for f in doc["files"]:
                    try:
                        st = os.lstat(f["path"])
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == (f["dev"], f["ino"]):
                        os.unlink(f["path"])
                        removed.append(f["path"])
                os.unlink(entry)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a killed process, or not ours to remove: left as it is
        return removed

"""A stand-in Hypervisor with fast-mode semantics, used only when devcloud.guest is absent.

It implements the contract's `Hypervisor` interface without QEMU processes: a server is its disk
files; snapshots are `qemu-img convert` copies; quiescing succeeds exactly when the image had an
agent channel and the agent "runs" (`fast_agent_running`). The real module replaces it as soon
as it is importable, so Nova never depends on this file's details.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class DiskSpec:
    path: Path
    format: str
    target: str
    serial: str | None = None
    readonly: bool = False


class GuestError(Exception):
    pass


class QuiesceError(GuestError):
    pass


class Hypervisor:
    def __init__(self, state_dir: Path, *, fast: bool = True, image_cache: Path | None = None):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _file(self, uuid: str) -> Path:
        return self.state_dir / f"{uuid}.json"

    def _load(self, uuid: str) -> dict:
        path = self._file(uuid)
        if not path.exists():
            raise GuestError(f"no guest {uuid}")
        return json.loads(path.read_text())

    def _save(self, uuid: str, data: dict) -> None:
        self._file(uuid).write_text(json.dumps(data, default=str))

    def create(self, uuid: str, *, disks: list[DiskSpec], agent_channel: bool, memory_mb: int,
               vcpus: int, fast_agent_running: bool = True) -> None:
        with self._lock:
            self._save(uuid, {"disks": [asdict(d) for d in disks], "agent": agent_channel,
                              "agent_running": fast_agent_running, "running": True,
                              "frozen": False})

    def start(self, uuid: str) -> None:
        with self._lock:
            data = self._load(uuid)
            data["running"] = True
            self._save(uuid, data)

    def stop(self, uuid: str, timeout: float = 30) -> None:
        with self._lock:
            data = self._load(uuid)
            data["running"] = False
            self._save(uuid, data)

    def destroy(self, uuid: str) -> None:
        with self._lock:
            self._file(uuid).unlink(missing_ok=True)

    def is_running(self, uuid: str) -> bool:
        try:
            return bool(self._load(uuid)["running"])
        except GuestError:
            return False

    def attach_disk(self, uuid: str, disk: DiskSpec) -> None:
        with self._lock:
            data = self._load(uuid)
            data["disks"].append(asdict(disk))
            self._save(uuid, data)

    def detach_disk(self, uuid: str, target: str) -> None:
        with self._lock:
            data = self._load(uuid)
            data["disks"] = [d for d in data["disks"] if d["target"] != target]
            self._save(uuid, data)

    def agent_available(self, uuid: str, timeout: float = 3) -> bool:
        data = self._load(uuid)
        return bool(data["agent"] and data["agent_running"] and data["running"])

    def quiesce(self, uuid: str, timeout: float = 10) -> None:
        data = self._load(uuid)
        if not data["agent"]:
            raise QuiesceError("QEMU guest agent is not configured")
        if not data["agent_running"] or not data["running"]:
            raise QuiesceError("Guest agent is not responding: QEMU guest agent is not connected")

    def unquiesce(self, uuid: str) -> None:
        return None

    def snapshot_disk(self, uuid: str, target: str, dest: Path, fmt: str = "qcow2") -> None:
        data = self._load(uuid)
        disk = next((d for d in data["disks"] if d["target"] == target), None)
        if disk is None:
            raise GuestError(f"guest {uuid} has no disk {target}")
        subprocess.run(["qemu-img", "convert", "-f", disk["format"], "-O", fmt, str(disk["path"]),
                        str(dest)], check=True, capture_output=True)

    def guest_exec(self, uuid: str, argv: list[str], stdin: bytes | None = None,
                   timeout: float = 30) -> tuple[int, bytes, bytes]:
        raise GuestError("fast mode has no guest to run commands in")

    def guest_write_file(self, uuid: str, path: str, data: bytes) -> None:
        raise GuestError("fast mode has no guest filesystem")

    def guest_read_file(self, uuid: str, path: str) -> bytes:
        raise GuestError("fast mode has no guest filesystem")

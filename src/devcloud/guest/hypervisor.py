"""The dev cloud's hypervisor: each server is a `qemu-system-x86_64 -accel tcg` process (or, in fast
mode, only its disk files), driven over QMP and the QEMU guest agent the way libvirt drives them for Nova.

Standard library only: the emulated Nova imports this from the services virtualenv.

State of a guest lives in `<state_dir>/instances/<uuid>/` (`domain.json` is the definition, so a
stopped guest can start again and a restarted Nova finds its guests; `console.log` is the serial
console). Its QMP and agent sockets live in a short per-state-dir directory under /tmp, because a
unix socket path must stay under 108 bytes and state directories can be deep.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from base64 import b64decode, b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devcloud.guest import images, tools
from devcloud.guest.qga import AgentError, AgentTimeout, GuestAgentClient
from devcloud.guest.qmp import QMPClient, QMPError
from devcloud.guest.wire import WireTimeout

LOG = logging.getLogger(__name__)
QEMU = "qemu-system-x86_64"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
BOOTED_MARKER = b"devcloud-guest: booted"
FILE_CHUNK = 48 * 1024  # guest-file-read/write payload per call (base64 in one JSON line)
DISK_FORMATS = ("qcow2", "raw")


@dataclass
class DiskSpec:
    path: Path
    format: str  # 'qcow2' | 'raw'
    target: str  # 'vda', 'vdb', ...
    serial: str | None = None  # volume id for volumes (guest sees /dev/disk/by-id/virtio-<serial[:20]>)
    readonly: bool = False
    #: An RBD image instead of a file, opened by QEMU's own rbd driver (librbd) as libvirt does for
    #: Nova's `rbd` volumes: {"pool", "image", "user", "conf", "servers": [{"host", "port"}]}.
    #: `path` is then only its name (`rbd:<pool>/<image>`), the form qemu-img also understands.
    rbd: dict[str, Any] | None = None


class GuestError(Exception):
    """A guest operation failed; the message names the guest and what to do."""


class QuiesceError(GuestError):
    """Freezing the guest filesystems failed; the message is libvirt's wording, as Nova reports it."""


@dataclass
class _Domain:
    uuid: str
    disks: list[DiskSpec]
    agent_channel: bool
    memory_mb: int
    vcpus: int
    fast_agent_running: bool = True
    fast_running: bool = False  # fast mode only: the "power state" of a guest without a VM

    def disk(self, target: str) -> DiskSpec:
        for disk in self.disks:
            if disk.target == target:
                return disk
        raise GuestError(f"server {self.uuid} has no disk {target}; its disks are "
                         f"{', '.join(d.target for d in self.disks) or 'none'}")

    def to_json(self) -> str:
        raw = asdict(self)
        for disk in raw["disks"]:
            disk["path"] = str(disk["path"])
        return json.dumps(raw, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> _Domain:
        raw = json.loads(text)
        raw["disks"] = [DiskSpec(**{**d, "path": Path(d["path"])}) for d in raw["disks"]]
        return cls(**raw)


def create_overlay(base: Path, dest: Path, base_format: str = "qcow2") -> None:
    """A qcow2 overlay on `base` for an image-backed server's root disk (the base is never written)."""
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(Path(base).resolve()),
          str(dest)], f"creating overlay {dest} on {base}")


class Hypervisor:
    """Guests of one dev cloud (one state directory)."""

    def __init__(self, state_dir: Path, *, fast: bool = False, image_cache: Path | None = None,
                 boot: images.BootFiles | None = None) -> None:
        """`image_cache` is the directory `images.build_all` used (env DEVCLOUD_GUEST_CACHE, else
        <repo>/.state/cache/guest); the kernel and initramfs matching its disks are taken from there,
        unless `boot` names them."""
        self.state_dir = Path(state_dir).resolve()
        self.fast = fast
        self.image_cache = Path(image_cache or os.environ.get("DEVCLOUD_GUEST_CACHE") or images.DEFAULT_CACHE_DIR)
        self._boot = boot
        self.instances_dir = self.state_dir / "instances"
        self.run_dir = _socket_dir(self.state_dir)

    # ----- lifecycle -------------------------------------------------------------------------------

    def create(self, uuid: str, *, disks: list[DiskSpec], agent_channel: bool, memory_mb: int,
               vcpus: int, fast_agent_running: bool = True) -> None:
        """Define the guest and boot it (returns once QEMU runs; see wait_booted for the guest OS)."""
        if (self._dir(uuid) / "domain.json").exists():
            raise GuestError(f"server {uuid} is already defined; destroy it first")
        targets = [d.target for d in disks]
        if len(set(targets)) != len(targets):
            raise GuestError(f"server {uuid}: duplicate disk targets {targets}")
        for disk in disks:
            _check_disk(disk)
        domain = _Domain(uuid=uuid, disks=[_normalised(d) for d in disks], agent_channel=agent_channel,
                         memory_mb=memory_mb, vcpus=vcpus, fast_agent_running=fast_agent_running)
        self._dir(uuid).mkdir(parents=True, exist_ok=True)
        self._save(domain)
        self.start(uuid)

    def start(self, uuid: str) -> None:
        with self._locked(uuid):
            domain = self._load(uuid)
            if self.fast:
                domain.fast_running = True
                self._save(domain)
                return
            if self._pid(uuid):
                return
            self._launch(domain)

    def stop(self, uuid: str, timeout: float = 30) -> None:
        """ACPI power button (a clean guest shutdown), then a hard stop after `timeout` seconds."""
        with self._locked(uuid):
            domain = self._load(uuid)
            if self.fast:
                domain.fast_running = False
                self._save(domain)
                return
            pid = self._pid(uuid)
            if not pid:
                return
            try:
                with self._qmp(uuid) as qmp:
                    qmp.command("system_powerdown")
            except GuestError:
                pass  # QEMU is going away anyway; the kill below finishes the job
            if not _wait_gone(pid, timeout):
                _kill(pid)
            self._cleanup_sockets(uuid)

    def destroy(self, uuid: str) -> None:
        """Hard stop and forget the guest; its disk files are the caller's and stay."""
        with self._locked(uuid):
            pid = None if self.fast else self._pid(uuid)
            if pid:
                _kill(pid)
            self._cleanup_sockets(uuid)
        shutil.rmtree(self._dir(uuid), ignore_errors=True)
        if self.instances_dir.is_dir() and not any(self.instances_dir.iterdir()):
            try:
                self.run_dir.rmdir()  # the last guest of this state dir is gone: leave /tmp tidy
            except OSError:
                pass

    def is_running(self, uuid: str) -> bool:
        if self.fast:
            return self._load(uuid).fast_running
        return self._pid(uuid) is not None

    def wait_booted(self, uuid: str, timeout: float = 120) -> float:
        """Wait for the guest's boot marker on its serial console; returns seconds since QEMU started."""
        started = self._dir(uuid) / "started"
        offset, t0 = (json.loads(started.read_text()) if started.exists() else (0, time.time()))
        deadline = time.monotonic() + timeout
        console = self.console_log(uuid)
        while time.monotonic() < deadline:
            if console.exists():
                with open(console, "rb") as log:
                    log.seek(offset)
                    if BOOTED_MARKER in log.read():
                        return time.time() - t0
            if not self.is_running(uuid):
                raise GuestError(f"server {uuid} stopped before booting; see {console}")
            time.sleep(0.2)
        raise GuestError(f"server {uuid} did not boot within {timeout:.0f} s; see {console}")

    def console_log(self, uuid: str) -> Path:
        return self._dir(uuid) / "console.log"

    def disks(self, uuid: str) -> list[DiskSpec]:
        return list(self._load(uuid).disks)

    # ----- disks -----------------------------------------------------------------------------------

    def attach_disk(self, uuid: str, disk: DiskSpec) -> None:
        _check_disk(disk)
        disk = _normalised(disk)
        with self._locked(uuid):
            domain = self._load(uuid)
            if any(d.target == disk.target for d in domain.disks):
                raise GuestError(f"server {uuid} already has a disk {disk.target}")
            if not self.fast and self._pid(uuid):
                with self._qmp(uuid) as qmp:
                    _hotplug(qmp, disk)
            domain.disks.append(disk)
            self._save(domain)

    def detach_disk(self, uuid: str, target: str, timeout: float = 30) -> None:
        with self._locked(uuid):
            domain = self._load(uuid)
            disk = domain.disk(target)
            if not self.fast and self._pid(uuid):
                with self._qmp(uuid) as qmp:
                    _unplug(qmp, uuid, disk, timeout)
            domain.disks = [d for d in domain.disks if d.target != target]
            self._save(domain)

    def snapshot_disk(self, uuid: str, target: str, dest: Path, fmt: str = "qcow2") -> None:
        """A point-in-time, self-contained copy of one disk (backing chain flattened) at `dest`.

        Running: a QMP full backup job into a new file (the copy is consistent as of the job's
        start); stopped or fast mode: `qemu-img convert`.
        """
        if fmt not in DISK_FORMATS:
            raise GuestError(f"snapshot format {fmt!r} is not one of {', '.join(DISK_FORMATS)}")
        dest = Path(dest)
        with self._locked(uuid):
            disk = self._load(uuid).disk(target)
            if self.fast or not self._pid(uuid):
                source = rbd_filename(disk.rbd) if disk.rbd is not None else str(disk.path)
                _run(["qemu-img", "convert", "-q", "-f", disk.format, "-O", fmt, source, str(dest)],
                     f"copying disk {target} of server {uuid}")
                return
            try:
                with self._qmp(uuid) as qmp:
                    _backup(qmp, disk, dest, fmt)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise

    # ----- guest agent -----------------------------------------------------------------------------

    def agent_available(self, uuid: str, timeout: float = 3) -> bool:
        domain = self._load(uuid)
        if self.fast:
            return domain.agent_channel and domain.fast_agent_running and domain.fast_running
        if not domain.agent_channel or not self._pid(uuid):
            return False
        with self._locked(uuid):
            try:
                if not self._agent_connected(uuid):
                    return False
                with GuestAgentClient(self._socket(uuid, "qga"), sync_timeout=timeout):
                    return True
            except (OSError, GuestError, AgentTimeout):
                return False

    def wait_agent(self, uuid: str, timeout: float = 120) -> float:
        """Wait until the guest agent answers; returns the seconds waited."""
        t0 = time.monotonic()
        last = ""
        while time.monotonic() - t0 < timeout:
            try:
                if self.agent_available(uuid, timeout=2):
                    return time.monotonic() - t0
            except GuestError as exc:  # not defined here yet: Nova may answer ACTIVE before the domain is
                last = f" ({exc})"
            time.sleep(0.5)
        raise GuestError(f"the guest agent of server {uuid} did not answer within {timeout:.0f} s{last}")

    def quiesce(self, uuid: str, timeout: float = 10) -> None:
        """guest-fsfreeze-freeze (the guest's fsfreeze-hook.d scripts run first); QuiesceError if not possible."""
        domain = self._load(uuid)
        if not domain.agent_channel:
            raise QuiesceError("argument unsupported: QEMU guest agent is not configured")
        if self.fast:
            if not domain.fast_running:
                raise QuiesceError("Requested operation is not valid: domain is not running")
            if not domain.fast_agent_running:
                raise QuiesceError("Guest agent is not responding: QEMU guest agent is not connected")
            return
        with self._locked(uuid):
            if not self._pid(uuid):
                raise QuiesceError("Requested operation is not valid: domain is not running")
            try:
                connected = self._agent_connected(uuid)
            except GuestError as exc:
                raise QuiesceError(f"Guest agent is not responding: {exc}") from exc
            if not connected:
                raise QuiesceError("Guest agent is not responding: QEMU guest agent is not connected")
            try:
                agent = GuestAgentClient(self._socket(uuid, "qga"), sync_timeout=min(timeout, 5))
            except (OSError, AgentTimeout) as exc:
                raise QuiesceError("Guest agent is not responding: Guest agent not available for now") from exc
            with agent:
                try:
                    agent.command("guest-fsfreeze-freeze", timeout=timeout)
                except AgentError as exc:
                    _thaw_quietly(agent)
                    raise QuiesceError(f"internal error: unable to execute QEMU agent command "
                                       f"'guest-fsfreeze-freeze': {exc.desc}") from exc
                except AgentTimeout as exc:
                    # The freeze may still complete later: queue a thaw behind it and wait for both.
                    agent.send_only("guest-fsfreeze-thaw")
                    try:
                        agent.sync(60)
                    except AgentTimeout:
                        pass
                    raise QuiesceError("Guest agent is not responding: Guest agent not available for now") from exc

    def unquiesce(self, uuid: str) -> None:
        """guest-fsfreeze-thaw. Never raises (callers use it on their error paths, as Nova does):
        a no-op without an agent to talk to, and a failed thaw is logged."""
        try:
            domain = self._load(uuid)
        except GuestError:
            return
        if self.fast or not domain.agent_channel:
            return
        with self._locked(uuid):
            try:
                if not self._pid(uuid) or not self._agent_connected(uuid):
                    return
                with GuestAgentClient(self._socket(uuid, "qga"), sync_timeout=10) as agent:
                    agent.command("guest-fsfreeze-thaw", timeout=60)
            except (OSError, GuestError, AgentTimeout, AgentError) as exc:
                LOG.warning("could not thaw the filesystems of server %s: %s", uuid, exc)

    def guest_exec(self, uuid: str, argv: list[str], stdin: bytes | None = None,
                   timeout: float = 30) -> tuple[int, bytes, bytes]:
        """Run argv in the guest (guest-exec); returns (exit code, stdout, stderr)."""
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if stdin is not None:
            args["input-data"] = b64encode(stdin).decode()
        deadline = time.monotonic() + timeout
        with self._agent(uuid) as agent:
            pid = _agent_call(agent, uuid, "guest-exec", **args)["pid"]
            while True:
                status = _agent_call(agent, uuid, "guest-exec-status", pid=pid)
                if status.get("exited"):
                    break
                if time.monotonic() > deadline:
                    raise GuestError(f"{argv[0]} in server {uuid} did not finish within {timeout:.0f} s")
                time.sleep(0.1)
        # Killed by a signal: a negative code, as subprocess reports it.
        code = status["exitcode"] if "exitcode" in status else -int(status.get("signal", 1))
        return code, b64decode(status.get("out-data", "")), b64decode(status.get("err-data", ""))

    def guest_write_file(self, uuid: str, path: str, data: bytes) -> None:
        with self._agent(uuid) as agent:
            handle = _agent_call(agent, uuid, "guest-file-open", path=path, mode="w")
            try:
                for start in range(0, len(data), FILE_CHUNK):
                    chunk = data[start:start + FILE_CHUNK]
                    _agent_call(agent, uuid, "guest-file-write", handle=handle,
                                **{"buf-b64": b64encode(chunk).decode()})
                _agent_call(agent, uuid, "guest-file-flush", handle=handle)
            finally:
                _agent_call(agent, uuid, "guest-file-close", handle=handle)

    def guest_read_file(self, uuid: str, path: str) -> bytes:
        out = bytearray()
        with self._agent(uuid) as agent:
            handle = _agent_call(agent, uuid, "guest-file-open", path=path, mode="r")
            try:
                while True:
                    part = _agent_call(agent, uuid, "guest-file-read", handle=handle, count=FILE_CHUNK)
                    out += b64decode(part.get("buf-b64", ""))
                    if part.get("eof") or not part.get("count"):
                        break
            finally:
                _agent_call(agent, uuid, "guest-file-close", handle=handle)
        return bytes(out)

    # ----- internals -------------------------------------------------------------------------------

    def boot_files(self) -> images.BootFiles:
        """Asked of the image cache at every boot (cheap when built): a rebuild may replace the files."""
        if self._boot is not None:
            return self._boot
        try:
            return images.boot_files(self.image_cache)
        except images.ImageBuildError as exc:
            raise GuestError(f"no guest kernel: {exc}") from exc

    def _launch(self, domain: _Domain) -> None:
        boot = self.boot_files()
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cleanup_sockets(domain.uuid)
        instance = self._dir(domain.uuid)
        console = instance / "console.log"
        pidfile = instance / "qemu.pid"
        pidfile.unlink(missing_ok=True)
        argv = [
            QEMU, "-name", f"guest={domain.uuid},debug-threads=off", "-uuid", domain.uuid,
            "-accel", "tcg",  # never KVM here: /dev/kvm opens but nested guests crawl and die
            "-machine", "pc", "-m", str(domain.memory_mb), "-smp", str(domain.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(boot.kernel), "-initrd", str(boot.initrd), "-append", boot.cmdline,
            "-chardev", f"file,id=serial0,path={_opt(console)},append=on", "-serial", "chardev:serial0",
            "-chardev", f"socket,id=qmp,path={_opt(self._socket(domain.uuid, 'qmp'))},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-pidfile", str(pidfile), "-daemonize",
        ]
        if domain.agent_channel:
            argv += ["-device", "virtio-serial-pci,id=virtio-serial0,bus=pci.0,addr=0x4",
                     "-chardev", f"socket,id=qga0,path={_opt(self._socket(domain.uuid, 'qga'))},server=on,wait=off",
                     "-device",
                     f"virtserialport,bus=virtio-serial0.0,nr=1,chardev=qga0,id=channel0,name={AGENT_CHANNEL}"]
        for disk in domain.disks:
            for node in _blockdev_nodes(disk):
                argv += ["-blockdev", json.dumps(node)]
            argv += ["-device", _disk_device_arg(disk)]
        offset = console.stat().st_size if console.exists() else 0
        (instance / "started").write_text(json.dumps([offset, time.time()]))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except FileNotFoundError as exc:
            raise GuestError(f"{QEMU} not found: install qemu-system-x86 (deps/apt-devcloud.txt)") from exc
        if done.returncode != 0:
            raise GuestError(f"QEMU failed to start server {domain.uuid}: "
                             f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")

    def _dir(self, uuid: str) -> Path:
        return self.instances_dir / uuid

    def _load(self, uuid: str) -> _Domain:
        try:
            return _Domain.from_json((self._dir(uuid) / "domain.json").read_text())
        except FileNotFoundError:
            raise GuestError(f"server {uuid} is not defined on this hypervisor ({self.instances_dir})") from None

    def _save(self, domain: _Domain) -> None:
        path = self._dir(domain.uuid) / "domain.json"
        tmp = path.with_name("domain.json.tmp")
        tmp.write_text(domain.to_json())
        tmp.replace(path)

    def _socket(self, uuid: str, kind: str) -> str:
        return str(self.run_dir / f"{uuid}.{kind}")

    def _cleanup_sockets(self, uuid: str) -> None:
        for kind in ("qmp", "qga"):
            Path(self._socket(uuid, kind)).unlink(missing_ok=True)

    def _pid(self, uuid: str) -> int | None:
        """The QEMU pid of this guest if it runs (checked against its command line, never trusted blindly)."""
        try:
            pid = int((self._dir(uuid) / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_qemu_of(pid, uuid) else None

    @contextmanager
    def _locked(self, uuid: str) -> Iterator[None]:
        # QMP and the agent socket serve one client at a time: one operation per guest at a time,
        # across threads and processes (flock locks belong to each open file description).
        self._dir(uuid).mkdir(parents=True, exist_ok=True)
        with open(self._dir(uuid) / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _qmp(self, uuid: str) -> Iterator[QMPClient]:
        """A QMP connection; protocol failures become GuestError naming the server."""
        try:
            with QMPClient(self._socket(uuid, "qmp")) as qmp:
                yield qmp
        except (OSError, QMPError) as exc:  # OSError covers WireTimeout and WireClosed
            raise GuestError(f"QMP of server {uuid}: {exc}") from exc

    def _agent_connected(self, uuid: str) -> bool:
        """Is the guest side of the agent channel open? (The host socket accepts connections regardless.)"""
        with self._qmp(uuid) as qmp:
            for chardev in qmp.command("query-chardev"):
                if chardev.get("label") == "qga0":
                    return bool(chardev.get("frontend-open"))
        return False

    @contextmanager
    def _agent(self, uuid: str) -> Iterator[GuestAgentClient]:
        if self.fast:
            raise GuestError("fast mode has no guest: guest-exec and guest files need a real VM "
                             "(devcloud without --fast)")
        domain = self._load(uuid)
        if not domain.agent_channel:
            raise GuestError(f"server {uuid} has no guest agent channel: its image lacks hw_qemu_guest_agent=yes")
        with self._locked(uuid):
            if not self._pid(uuid):
                raise GuestError(f"server {uuid} is not running; start it first")
            if not self._agent_connected(uuid):
                raise GuestError(f"the guest agent of server {uuid} is not connected (not running in the guest)")
            try:
                agent = GuestAgentClient(self._socket(uuid, "qga"), sync_timeout=10)
            except (OSError, AgentTimeout) as exc:
                raise GuestError(f"the guest agent of server {uuid} does not answer: {exc}") from exc
            with agent:
                yield agent


# ----- helpers (no Hypervisor state) -----------------------------------------------------------


def _socket_dir(state_dir: Path) -> Path:
    """A short directory for this state dir's sockets: /tmp/dc-<hash of the state dir>."""
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:10]
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 40:
        base = Path("/tmp")
    return base / f"dc-{digest}"


def _opt(value: object) -> str:
    """A value inside a QEMU `key=value,...` option: commas are doubled, or QEMU splits there."""
    return str(value).replace(",", ",,")


def _check_disk(disk: DiskSpec) -> None:
    if disk.format not in DISK_FORMATS:
        raise GuestError(f"disk {disk.target}: format {disk.format!r} is not one of {', '.join(DISK_FORMATS)}")
    if not disk.target.startswith("vd") or len(disk.target) != 3 or not disk.target[2].isalpha():
        raise GuestError(f"disk target {disk.target!r} must look like vda, vdb, ...")
    if disk.rbd is not None:
        missing = [key for key in ("pool", "image", "user", "conf") if not disk.rbd.get(key)]
        if missing:
            raise GuestError(f"disk {disk.target}: RBD source without {', '.join(missing)}")
    elif not Path(disk.path).exists():
        raise GuestError(f"disk {disk.target}: {disk.path} does not exist")


def _normalised(disk: DiskSpec) -> DiskSpec:
    path = Path(disk.path) if disk.rbd is not None else Path(disk.path).resolve()
    return DiskSpec(path=path, format=disk.format, target=disk.target, serial=disk.serial,
                    readonly=disk.readonly, rbd=dict(disk.rbd) if disk.rbd is not None else None)


def rbd_filename(rbd: dict[str, Any]) -> str:
    """The `rbd:pool/image:id=user:conf=path` pseudo-filename of qemu-img (stopped-guest copies)."""
    return f"rbd:{rbd['pool']}/{rbd['image']}:id={rbd['user']}:conf={rbd['conf']}"


def _protocol_node(disk: DiskSpec) -> dict[str, Any]:
    """The bottom node: the file, or the RBD image through QEMU's rbd driver (monitors from
    the connection info, cephx key from the keyring that `conf` names for `user`)."""
    if disk.rbd is None:
        return {"driver": "file", "filename": str(disk.path)}
    node: dict[str, Any] = {"driver": "rbd", "pool": disk.rbd["pool"], "image": disk.rbd["image"],
                            "conf": str(disk.rbd["conf"]), "user": disk.rbd["user"]}
    servers = [{"host": str(s["host"]), "port": str(s["port"])} for s in disk.rbd.get("servers") or []]
    if servers:
        node["server"] = servers
    return node


def _blockdev_nodes(disk: DiskSpec) -> list[dict[str, Any]]:
    return [
        {**_protocol_node(disk), "node-name": f"file-{disk.target}", "read-only": disk.readonly,
         "discard": "unmap"},
        {"driver": disk.format, "file": f"file-{disk.target}", "node-name": f"drive-{disk.target}",
         "read-only": disk.readonly, "discard": "unmap"},
    ]


def _disk_pci_slot(target: str) -> str:
    # vda at 0x5, vdb at 0x6, ...: a fixed slot per target keeps the guest's probe order = target order.
    return hex(5 + ord(target[2]) - ord("a"))


def _disk_device_props(disk: DiskSpec) -> dict[str, Any]:
    props: dict[str, Any] = {"driver": "virtio-blk-pci", "drive": f"drive-{disk.target}", "id": f"disk-{disk.target}",
                             "bus": "pci.0", "addr": _disk_pci_slot(disk.target)}
    if disk.serial:
        props["serial"] = disk.serial[:20]  # all virtio-blk carries; the guest's by-id name uses it
    return props


def _disk_device_arg(disk: DiskSpec) -> str:
    return ",".join(f"{key}={_opt(value)}" if key != "driver" else value
                    for key, value in _disk_device_props(disk).items())


def _hotplug(qmp: QMPClient, disk: DiskSpec) -> None:
    added: list[str] = []
    try:
        for node in _blockdev_nodes(disk):
            qmp.command("blockdev-add", **node)
            added.append(node["node-name"])
        qmp.command("device_add", **_disk_device_props(disk))
    except QMPError as exc:
        for node_name in reversed(added):
            _quiet_qmp(qmp, "blockdev-del", node_name=node_name)
        raise GuestError(f"attaching {disk.path} as {disk.target}: {exc.desc}") from exc


def _unplug(qmp: QMPClient, uuid: str, disk: DiskSpec, timeout: float) -> None:
    device = f"disk-{disk.target}"
    gone = False
    try:
        try:
            qmp.command("device_del", id=device)
        except QMPError as exc:  # a re-sent unplug: still pending (wait again), or done meanwhile
            gone = "not found" in exc.desc
            if not gone and "already in the process of unplug" not in exc.desc:
                raise
        if not gone:
            qmp.wait_event("DEVICE_DELETED", timeout, lambda event: event.get("data", {}).get("device") == device)
    except QMPError as exc:
        raise GuestError(f"detaching {disk.target} from server {uuid}: {exc.desc}") from exc
    except WireTimeout as exc:
        raise GuestError(f"server {uuid} did not release disk {disk.target} within {timeout:.0f} s "
                         "(the guest must acknowledge the ACPI unplug; is it booted?)") from exc
    for node in reversed(_blockdev_nodes(disk)):
        qmp.command("blockdev-del", **{"node-name": node["node-name"]})


def _backup(qmp: QMPClient, disk: DiskSpec, dest: Path, fmt: str) -> None:
    source = f"drive-{disk.target}"
    size = None
    for node in qmp.command("query-named-block-nodes", flat=True):
        if node.get("node-name") == source:
            size = node["image"]["virtual-size"]
    if size is None:
        raise GuestError(f"QEMU has no block node {source}")
    _run(["qemu-img", "create", "-q", "-f", fmt, str(dest), str(size)], f"creating {dest}")
    tag = secrets.token_hex(4)
    file_node, fmt_node, job = f"snapf-{tag}", f"snap-{tag}", f"backup-{disk.target}-{tag}"
    qmp.command("blockdev-add", driver="file", filename=str(dest.resolve()), **{"node-name": file_node})  # type: ignore[arg-type]  # not a timeout
    try:
        qmp.command("blockdev-add", driver=fmt, file=file_node, **{"node-name": fmt_node})  # type: ignore[arg-type]  # not a timeout
        try:
            qmp.command("blockdev-backup", device=source, target=fmt_node, sync="full", **{"job-id": job})  # type: ignore[arg-type]  # not a timeout
            event = qmp.wait_event("BLOCK_JOB_COMPLETED", 3600, lambda e: e.get("data", {}).get("device") == job)
            if event["data"].get("error"):
                raise GuestError(f"backup of {disk.target} to {dest} failed: {event['data']['error']}")
        finally:
            # The target file is only consistent on disk (and openable by qemu-img) once QEMU lets go.
            _quiet_qmp(qmp, "blockdev-del", node_name=fmt_node)
    finally:
        _quiet_qmp(qmp, "blockdev-del", node_name=file_node)


def _quiet_qmp(qmp: QMPClient, command: str, node_name: str) -> None:
    try:
        qmp.command(command, **{"node-name": node_name})  # type: ignore[arg-type]  # not a timeout
    except QMPError:
        pass


def _agent_call(agent: GuestAgentClient, uuid: str, command: str, **arguments: Any) -> Any:
    try:
        return agent.command(command, **arguments)
    except AgentError as exc:
        if "frozen" in exc.desc:
            raise GuestError(f"{command} is refused while the filesystems of server {uuid} are frozen "
                             f"(call unquiesce first): {exc.desc}") from exc
        raise GuestError(f"{command} in server {uuid} failed: {exc.desc}") from exc
    except AgentTimeout as exc:
        raise GuestError(f"{command} in server {uuid}: {exc}") from exc


def _thaw_quietly(agent: GuestAgentClient) -> None:
    try:
        agent.command("guest-fsfreeze-thaw", timeout=30)
    except (AgentError, AgentTimeout):
        pass


def _is_qemu_of(pid: int, uuid: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(") ", 1)[-1].startswith("Z"):
        return False
    return f"guest={uuid},".encode() in cmdline


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def _kill(pid: int) -> None:
    """SIGTERM (QEMU exits at once, flushing its disks), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, wait):
            return


def _run(argv: list[str], what: str) -> None:
    tools.run(argv, what, GuestError)

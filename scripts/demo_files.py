"""`make demo`'s file-level restore: a directory of a backed-up server's disk listed, one file of it
extracted, and the file's checksum printed beside the one the running guest computes of its own
copy (through the guest agent). Nothing is restored to a disk first: the backup is read in place by
a libguestfs appliance (docs/file-restore.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

#: The file the demo's guests write (scripts/demo.py) and the directory that holds it.
DIRECTORY = "/root"
FILE = "/root/demo.txt"


def show_file_restore(sv: str, hv: Any, server: Any, env: dict, out: Path) -> bool:
    """List DIRECTORY in `server`'s newest backup and extract FILE; True when its bytes are the guest's."""
    # The dev cloud's guests and libguestfs' appliance both run under TCG: /dev/kvm opens here but
    # cannot run nested guests (a proxy with working KVM leaves this unset).
    env = {**env, "LIBGUESTFS_BACKEND_SETTINGS": env.get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")}
    listed = subprocess.run([sv, "--json", "list", "--server", server.name], env=env, capture_output=True,
                            text=True, check=True)
    backup = json.loads(listed.stdout)["backups"][-1]["backup_id"]
    print(f"+ stackvault files {backup} ls {DIRECTORY}", flush=True)
    if subprocess.run([sv, "files", backup, "ls", DIRECTORY], env=env).returncode != 0:
        return False
    to = out / "files"
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    print(f"+ stackvault files {backup} get {FILE} --to {to}", flush=True)
    if subprocess.run([sv, "files", backup, "get", FILE, "--to", str(to)], env=env).returncode != 0:
        return False
    got = hashlib.sha256((to / os.path.basename(FILE)).read_bytes()).hexdigest()
    guest = _guest_sha256(hv, server.id)
    ok = got == guest
    print(f"  sha256 of {FILE} extracted from backup {backup}: {got}\n"
          f"  sha256 the guest {server.name} computes of its own copy:  {guest} {'OK' if ok else 'WRONG'}")
    return ok


def _guest_sha256(hv: Any, server_id: str) -> str:
    """The guest's own sha256 of FILE (busybox's sha256sum, run through the guest agent)."""
    code, out, err = hv.guest_exec(server_id, ["/bin/sha256sum", FILE])
    if code != 0:
        raise SystemExit(f"demo: sha256sum in the guest failed: {err.decode().strip()}")
    return out.decode().split()[0]

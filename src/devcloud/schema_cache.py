"""Empty, migrated SQLite databases of Keystone and Glance, made once and copied per cloud.

`keystone-manage db_sync` and `glance-manage db_sync` each cost 10-15 s on a busy machine for a
result that depends only on the installed versions; the cache is keyed like the services venv.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devcloud import services_venv
from devcloud.context import CloudContext, DevcloudError

MANAGE = {"keystone": "keystone-manage", "glance": "glance-manage"}


def _template(ctx: CloudContext, service: str) -> Path:
    folder = ctx.cache_dir / f"schemas-{services_venv.requirements_hash()}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{service}.sqlite"
    if target.exists():
        return target
    with open(folder / f"{service}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            db = Path(tmp) / "db.sqlite"
            conf = Path(tmp) / "manage.conf"
            conf.write_text(f"[DEFAULT]\nuse_stderr = true\n[database]\n"
                            f"connection = sqlite:///{db}\n")
            proc = subprocess.run([str(ctx.services_bin(MANAGE[service])), "--config-file",
                                   str(conf), "db_sync"], cwd=tmp, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0 or not db.exists():
                raise DevcloudError(f"{MANAGE[service]} db_sync failed:\n{proc.stdout[-2000:]}")
            os.replace(db, target)
    return target


def install(ctx: CloudContext, service: str, dest: Path) -> bool:
    """Copy the migrated empty database to `dest` unless it exists; True if copied."""
    if dest.exists():
        return False
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(_template(ctx, service), tmp)
    os.replace(tmp, dest)
    return True

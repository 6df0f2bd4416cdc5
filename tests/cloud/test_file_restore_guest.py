"""File-level restore from a real guest's backups: a TCG guest of the dev cloud writes files into its
root file system (ext4 inside partition 1 of an MBR disk, as a cloud image has it), the server is
backed up, one file is changed and it is backed up again; `files ls` lists the files, and `files get`
gives back each backup's version of the file byte-identical to what the guest's own sha256sum said
then (through its agent), with the mode and modification time the guest's stat shows.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from .conftest import GuestShell
from .test_quiesce_proof import booted_guest
from .test_server_backup import _leftovers

pytestmark = [pytest.mark.guest, pytest.mark.slow]


def test_files_of_a_real_guest_come_back_as_each_backup_held_them(user, devcloud, conn, cloud_objects,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    name, server, hv = booted_guest(devcloud, conn, cloud_objects, "files")

    guest = GuestShell(hv, server.id, timeout=60)
    sh, in_guest = guest.sh, guest.file_facts

    # libguestfs' appliance under TCG, as the dev cloud's guests (nested KVM hangs here)
    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"))
    hv.guest_write_file(server.id, "/root/report.txt", os.urandom(300_000))
    sh("mkdir -p /root/data && echo first > /root/data/notes && chmod 640 /root/report.txt && sync")
    before = in_guest("/root/report.txt")
    first = user.run("backup", "--server", name, "--level", "full", timeout=900).data["servers"][0]
    assert first["status"] == "success", first

    hv.guest_write_file(server.id, "/root/report.txt", os.urandom(200_000))
    sh("chmod 600 /root/report.txt && sync")
    after = in_guest("/root/report.txt")
    assert after[0] != before[0]
    second = user.run("backup", "--server", name, timeout=900).data["servers"][0]
    assert second["status"] == "success", second

    listed = user.run("files", second["backup_id"], "ls", "/root", timeout=600).data
    paths = {entry["path"] for entry in listed["entries"]}
    assert {"/root/report.txt", "/root/data"} <= paths, listed

    for backup, (digest, mode, mtime) in ((first, before), (second, after)):
        to = tmp_path / backup["backup_id"]
        to.mkdir()
        user.run("files", backup["backup_id"], "get", "/root/report.txt", "--to", str(to), timeout=600)
        got = to / "report.txt"
        assert hashlib.sha256(got.read_bytes()).hexdigest() == digest, f"backup {backup['backup_id']}"
        st = got.stat()
        assert (st.st_mode & 0o7777, int(st.st_mtime)) == (mode, mtime), f"backup {backup['backup_id']}"
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}

"""`[cloud] lock_servers`: a server is locked with Nova's lock while it is backed up and unlocked on
every path, a failed backup's included; a server its owner had locked stays locked.

What the user checks: the server's lock state after the backup, and Nova's own record of what was
done to the server (its instance actions, in order).
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.devcloud


def _boot(conn, made: list, name: str):
    server = conn.compute.create_server(
        name=name, image_id=conn.image.find_image("sv-agent", ignore_missing=False).id,
        flavor_id=conn.compute.find_flavor("m1.tiny").id,
        networks=[{"uuid": conn.network.find_network("private").id}])
    server = conn.compute.wait_for_server(server, wait=300)
    made.append(server)
    return server


def _actions(conn, server) -> list[str]:
    """The server's instance actions, oldest first (Nova lists the newest first)."""
    listed = sorted(conn.compute.server_actions(server), key=lambda a: (a.start_time, a.request_id))
    return [a.action for a in listed]


@pytest.fixture
def locking_user(user):
    user.config.write_text(user.config.read_text().replace("[cloud]\n", "[cloud]\nlock_servers = true\n", 1))
    return user


def test_a_server_is_locked_for_its_backup_and_unlocked_after(locking_user, fast_cloud, conn, cloud_objects):
    server = _boot(conn, cloud_objects, f"lock-{uuid.uuid4().hex[:6]}")
    report = locking_user.run("backup", "--server", server.id, "--level", "full").data
    [item] = report["servers"]
    assert item["status"] == "success", item
    assert not conn.compute.get_server(server.id).is_locked
    actions = _actions(conn, server)
    assert actions[-3:] == ["lock", "createImage", "unlock"], actions


@pytest.mark.slow  # the download's retries take their backoff
def test_a_failed_backup_unlocks_its_server(locking_user, fast_cloud, faults, conn, cloud_objects):
    server = _boot(conn, cloud_objects, f"lockf-{uuid.uuid4().hex[:6]}")
    # The snapshot is taken, then every download of it fails: the backup fails after the lock.
    faults.add_fault("glance", "status", 503, method="GET", path_regex=r"/file$")
    report = locking_user.run("backup", "--server", server.id, "--level", "full", expect=1).data
    faults.clear_faults()
    [item] = report["servers"]
    assert item["status"] == "failed" and "503" in item["error"], item
    assert not conn.compute.get_server(server.id).is_locked
    actions = _actions(conn, server)
    assert actions[-3:] == ["lock", "createImage", "unlock"], actions


def test_a_server_its_owner_locked_stays_locked(locking_user, fast_cloud, conn, cloud_objects):
    server = _boot(conn, cloud_objects, f"lockk-{uuid.uuid4().hex[:6]}")
    conn.compute.lock_server(server, locked_reason="owner's maintenance")
    report = locking_user.run("backup", "--server", server.id, "--level", "full").data
    [item] = report["servers"]
    assert item["status"] == "success", item
    after = conn.compute.get_server(server.id)
    assert after.is_locked and after.locked_reason == "owner's maintenance"
    actions = _actions(conn, server)
    assert actions[-2:] == ["lock", "createImage"], actions
    conn.compute.unlock_server(server)

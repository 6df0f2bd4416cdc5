"""`stackvault doctor` and the `require_consistency` policy against the dev cloud.

What a user checks: the doctor names, per server, the two image properties, the consistency its next
backup will have and the exact `openstack image set` fix; `--json` for scripts; exit 1 when the
policy is not met; `--fix-images --yes` really sets the properties on the image and says the
servers must be recreated; a backup under `require_consistency = "application"` refuses a
crash-consistent server before snapshotting it, and backs up the others.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from .test_server_backup import _boot, _leftovers

pytestmark = pytest.mark.devcloud

FIX = "openstack image set --property hw_qemu_guest_agent=yes --property os_require_quiesce=yes"


def _image_id(conn, name: str) -> str:
    return conn.image.find_image(name, ignore_missing=False).id


@pytest.mark.slow
def test_doctor_table_json_and_exit_codes(user, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    crash = _boot(conn, cloud_objects, f"doc-noagent-{tag}", "sv-noagent")
    unknown = _boot(conn, cloud_objects, f"doc-agent-{tag}", "sv-agent")
    app = _boot(conn, cloud_objects, f"doc-quiesce-{tag}", "sv-agent-quiesce", volume_backed=True)

    report = user.run("doctor", "--server", f"doc-*-{tag}").data  # default policy: crash, anything passes
    assert report["ok"] is True and report["require_consistency"] == "crash"
    by_name = {s["name"]: s for s in report["servers"]}
    assert set(by_name) == {crash.name, unknown.name, app.name}

    assert by_name[crash.name]["consistency"] == "crash"
    assert by_name[crash.name]["hw_qemu_guest_agent"] is None
    assert by_name[crash.name]["fix"] == [f"{FIX} {_image_id(conn, 'sv-noagent')}"]

    assert by_name[unknown.name]["consistency"] == "unknown"
    assert str(by_name[unknown.name]["hw_qemu_guest_agent"]).lower() in ("yes", "true")
    assert by_name[unknown.name]["fix"] == [f"{FIX} {_image_id(conn, 'sv-agent')}"]

    quiesce = by_name[app.name]
    assert quiesce["boot"] == "volume" and quiesce["properties_source"].startswith("volume ")
    assert quiesce["consistency"] == "application" and quiesce["fix"] == [] and quiesce["meets_policy"]
    assert all(not s["flags"] for s in report["servers"]), report

    strict = user.run("doctor", "--server", f"doc-*-{tag}", "--require-consistency", "application", expect=1).data
    assert strict["ok"] is False and sorted(strict["failing"]) == sorted([crash.name, unknown.name])
    assert strict["fixes"] == [f"{FIX} {_image_id(conn, 'sv-agent')}", f"{FIX} {_image_id(conn, 'sv-noagent')}"]

    middle = user.run("doctor", "--server", f"doc-*-{tag}", "--require-consistency", "unknown", expect=1).data
    assert middle["failing"] == [crash.name]

    table = user.run("doctor", "--server", f"doc-*-{tag}", "--require-consistency", "application",
                     json_out=False, expect=1).stdout
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["SERVER", "BOOT", "AGENT", "QUIESCE", "NEXT"]
    row = next(line for line in lines if line.startswith(crash.name))
    assert row.split()[-2:] == ["NOT", "MET"] and " crash " in row
    assert f"  fix: {FIX} {_image_id(conn, 'sv-noagent')}" in lines
    assert lines[-1] == f"3 servers; policy not met by {unknown.name}, {crash.name}"  # in name order


def _copy_image(conn, source: str, name: str):
    """A private copy of a seeded image (same disk, same properties but the agent ones): ours to change."""
    src = conn.image.find_image(source, ignore_missing=False)
    data = b"".join(conn.image.download_image(src, stream=True).iter_content(1 << 20))
    image = conn.image.create_image(name=name, disk_format=src.disk_format, container_format=src.container_format,
                                    data=data, devcloud_agent_running="yes", visibility="private")
    return conn.image.wait_for_status(conn.image.get_image(image.id), "active", wait=120)


def test_fix_images_sets_the_properties_after_confirmation_and_says_to_recreate(user, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    image = _copy_image(conn, "sv-noagent", f"doc-img-{tag}")
    try:
        server = _boot(conn, cloud_objects, f"doc-fix-{tag}", image.name)

        declined = subprocess.run(user.argv(["doctor", "--server", server.name, "--fix-images"]), input="n\n",
                                  capture_output=True, text=True, env=user.env(), timeout=300)
        assert declined.returncode == 0, declined.stderr
        assert "[y/N]" in declined.stderr and image.name in declined.stderr
        assert '"confirmed": false' in declined.stdout
        assert getattr(conn.image.get_image(image.id), "hw_qemu_guest_agent", None) in (None, "")

        fixed = user.run("doctor", "--server", server.name, "--fix-images", "--yes").data["fix_images"]
        assert fixed["confirmed"] and [i["status"] for i in fixed["images"]] == ["updated"]
        assert fixed["images"][0]["image_id"] == image.id and fixed["images"][0]["servers"] == [server.name]
        assert "recreate" in fixed["note"]
        now = conn.image.get_image(image.id)
        props = {**(now.properties or {}), "hw_qemu_guest_agent": now.hw_qemu_guest_agent,
                 "os_require_quiesce": now.os_require_quiesce}
        assert str(props["hw_qemu_guest_agent"]).lower() == "yes"
        assert str(props["os_require_quiesce"]).lower() in ("yes", "true")

        after = user.run("doctor", "--server", server.name, json_out=False).stdout
        assert "was changed after server" in after and server.name in after  # the server keeps what it had
        again = user.run("doctor", "--server", server.name, "--fix-images", "--yes", json_out=False).stdout
        assert "no image to fix" in again
    finally:
        for s in list(cloud_objects):
            conn.compute.delete_server(s, ignore_missing=True)
            conn.compute.wait_for_delete(s, wait=120)
        cloud_objects.clear()
        conn.image.delete_image(image.id, ignore_missing=True)


@pytest.mark.slow  # a refused server beside backed-up ones
def test_policy_refuses_a_crash_server_before_any_snapshot_and_backs_up_the_others(user, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    crash = _boot(conn, cloud_objects, f"pol-noagent-{tag}", "sv-noagent")
    app = _boot(conn, cloud_objects, f"pol-quiesce-{tag}", "sv-agent-quiesce")
    with open(user.config, "a") as f:  # the config ends in its [cloud] section
        f.write('require_consistency = "application"\n')

    result = user.run("backup", "--server", f"pol-*-{tag}", "--level", "full", expect=1).data
    by_name = {s["name"]: s for s in result["servers"]}
    assert result["status"] == "partial"
    refused = by_name[crash.name]
    assert refused["status"] == "failed" and refused["consistency"] == "crash"
    assert crash.name in refused["error"] and "crash-consistent" in refused["error"]
    assert "required application" in refused["error"]
    assert f"{FIX} {_image_id(conn, 'sv-noagent')}" in refused["error"]
    assert not any(a.action == "createImage" for a in conn.compute.server_actions(crash))  # no snapshot at all
    assert by_name[app.name]["status"] in ("success", "warning")
    assert by_name[app.name]["consistency"].startswith("application")

    per_job = user.run("backup", "--server", crash.name, "--require-consistency", "crash", "--level", "full").data
    assert per_job["servers"][0]["status"] == "success" and per_job["servers"][0]["consistency"] == "crash"
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}


def test_bad_policy_in_config_is_one_clear_error(user):
    with open(user.config, "a") as f:
        f.write('require_consistency = "perfect"\n')
    res = user.run("doctor", json_out=False, expect=2)
    assert res.error_lines() and "require_consistency" in res.error_lines()[0]
    assert "application, unknown, crash" in res.error_lines()[0]


def test_image_backed_application_is_flagged_as_a_claim_until_proven(user, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    image_backed = _boot(conn, cloud_objects, f"claim-img-{tag}", "sv-agent-quiesce")
    volume_backed = _boot(conn, cloud_objects, f"claim-vol-{tag}", "sv-agent-quiesce", volume_backed=True)

    report = user.run("doctor", "--server", f"claim-*-{tag}", "--require-consistency", "application").data
    by_name = {s["name"]: s for s in report["servers"]}
    assert report["ok"] and {s["consistency"] for s in report["servers"]} == {"application"}
    [flag] = by_name[image_backed.name]["flags"]
    assert "Xena" in flag and "stackvault guest-hook" in flag and "verify_quiesce" in flag
    assert by_name[volume_backed.name]["flags"] == []  # Nova's compute API refuses a failed quiesce: enforced

    table = user.run("doctor", "--server", f"claim-*-{tag}", json_out=False).stdout
    assert f"  ! {flag}" in table.splitlines()

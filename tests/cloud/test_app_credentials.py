"""Application credentials from clouds.yaml: what operators give a backup proxy instead of a password.

What a user checks: a clouds.yaml entry with `auth_type: v3applicationcredential` backs up and
restores a server byte for byte through the real Keystone (every token of the job comes from the
credential), and a revoked or mistyped secret, or an unreachable Keystone, is one clear line naming the cloud and
the fix.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
import yaml

from .conftest import qemu_io_write, raw_copy
from .test_server_backup import _boot, _disks

pytestmark = pytest.mark.devcloud


def _with_app_credential(user, conn, name: str, secret: str, cred_id: str) -> None:
    """Adds a clouds.yaml entry `name` for the credential, beside the dev cloud's own entries."""
    clouds = yaml.safe_load(user.clouds_yaml.read_text())
    auth_url = clouds["clouds"]["devcloud"]["auth"]["auth_url"]
    clouds["clouds"][name] = {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": auth_url, "application_credential_id": cred_id,
                 "application_credential_secret": secret},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3,
    }
    own = user.root / "clouds.yaml"
    own.write_text(yaml.safe_dump(clouds))
    own.chmod(0o600)
    user.clouds_yaml = own


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_backup_and_restore_with_an_application_credential(user, fast_cloud, devcloud, conn, cloud_objects, tmp_path):
    tag = uuid.uuid4().hex[:6]
    server = _boot(conn, cloud_objects, f"appcred-{tag}", "sv-agent")
    secret = uuid.uuid4().hex
    cred = conn.identity.create_application_credential(conn.current_user_id, name=f"stackvault-{tag}",
                                                       secret=secret, description="stackvault backup proxy")
    try:
        _with_app_credential(user, conn, "backup-proxy", secret, cred.id)
        path, fmt = _disks(devcloud, conn, server)["vda"]
        qemu_io_write(path, fmt, offset=7 << 20, pattern=0x3C, length=1 << 20)
        want = _sha256(raw_copy(path, fmt, tmp_path / "before.raw"))

        done = user.run("--os-cloud", "backup-proxy", "backup", "--server", server.name, "--level", "full").data
        [item] = done["servers"]
        assert item["status"] == "success", item
        backup_id = item["backup_id"]
        user.run("--os-cloud", "backup-proxy", "restore", backup_id, "--disk", "vda",
                 "--to", f"file:{tmp_path / 'restored.raw'}")
        assert _sha256(tmp_path / "restored.raw") == want

        _with_app_credential(user, conn, "backup-proxy", "not-the-secret", cred.id)
        res = user.run("--os-cloud", "backup-proxy", "backup", "--server", server.name, json_out=False, expect=2)
        [line] = res.error_lines()
        assert "cloud backup-proxy refused the credentials" in line and "application credential" in line

        clouds = yaml.safe_load(user.clouds_yaml.read_text())
        clouds["clouds"]["backup-proxy"]["auth"]["auth_url"] = "http://127.0.0.1:9/v3"  # nothing listens there
        user.clouds_yaml.write_text(yaml.safe_dump(clouds))
        res = user.run("--os-cloud", "backup-proxy", "backup", "--server", server.name, json_out=False, expect=2)
        [line] = res.error_lines()
        assert "cannot reach the identity service of cloud backup-proxy" in line and "auth_url" in line
    finally:
        conn.identity.delete_application_credential(conn.current_user_id, cred.id)

"""`--debug` against the dev cloud: the cloud API calls are in the log, the credential's secret and
its tokens never are (a proxy's log goes to journald and into support tickets)."""

from __future__ import annotations

import re
import uuid

import pytest

from .test_app_credentials import _with_app_credential

pytestmark = pytest.mark.devcloud

#: A Keystone Fernet token, as it would appear if one leaked (they all begin so).
FERNET = re.compile(r"gAAAAA[A-Za-z0-9_-]{20,}")


def test_debug_logs_api_calls_and_no_secret(user, devcloud, conn):
    tag = uuid.uuid4().hex[:6]
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    cred = conn.identity.create_application_credential(conn.current_user_id, name=f"stackvault-log-{tag}",
                                                       secret=secret, description="stackvault --debug test")
    try:
        _with_app_credential(user, conn, "backup-proxy", secret, cred.id)
        res = user.run("--debug", "--os-cloud", "backup-proxy", "cleanup", "--dry-run")
    finally:
        conn.identity.delete_application_credential(conn.current_user_id, cred.id)
    log = res.stderr
    assert re.search(r"REQ: curl .* GET http\S+/(snapshots|images|volumes)", log), res.describe()
    assert "X-Auth-Token: ***" in log, "the token header is written, redacted\n" + res.describe()
    assert secret not in log and secret not in res.stdout
    assert not FERNET.search(log), f"a token leaked: {FERNET.search(log)}"


def test_without_debug_the_cloud_is_not_logged(user, devcloud):
    res = user.run("cleanup", "--dry-run")
    assert "REQ:" not in res.stderr and "curl" not in res.stderr, res.describe()

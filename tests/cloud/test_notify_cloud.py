"""A server refused by `require_consistency` (no guest agent where application consistency is
required) is a failed cloud backup: the local SMTP server and the HTTP receiver both get a
notification naming the job id, the server, the reason and the fix."""

from __future__ import annotations

import json
import uuid

import pytest
from e2e.test_notify import _wait_for, http_receiver, smtp  # noqa: F401 - fixtures used by name

from .test_server_backup import _boot

pytestmark = pytest.mark.devcloud


def test_a_refused_server_is_notified_by_mail_and_webhook(user, conn, cloud_objects, smtp, http_receiver):  # noqa: F811 - the fixtures
    box, smtp_port = smtp
    posts, http_port = http_receiver
    tag = uuid.uuid4().hex[:6]
    crash = _boot(conn, cloud_objects, f"ntf-noagent-{tag}", "sv-noagent")
    urls = [f"mailto://127.0.0.1:{smtp_port}?from=stackvault@example.com&to=ops@example.com",
            f"json://127.0.0.1:{http_port}/hook"]
    with open(user.config, "a") as f:  # the config ends in its [cloud] section
        f.write('require_consistency = "application"\n[notify]\nurls = ' + json.dumps(urls) + "\n")

    result = user.run("backup", "--server", crash.name, "--level", "full", expect=1).data
    assert result["status"] == "failed", result
    reason = result["servers"][0]["error"]
    assert "crash-consistent" in reason and "required application" in reason, reason

    [post] = _wait_for("the webhook", lambda: list(posts))
    assert post["type"] == "failure" and "backup failed" in post["title"], post
    for words in (result["job_id"], crash.name, "crash-consistent", "hw_qemu_guest_agent=yes"):
        assert words in post["message"], (words, post["message"])
    [mail] = _wait_for("the e-mail", lambda: list(box.messages))
    text = mail.get_body(preferencelist=("plain", "html")).get_content()
    assert result["job_id"] in text and crash.name in text and "crash-consistent" in text, text

"""Notifications as an operator receives them: a real local SMTP server (aiosmtpd) and a real HTTP
receiver get the message of a failed backup, with its job id and reason; a target that is down
neither fails nor holds up the job, and no token is printed or stored; the daily summary arrives."""

from __future__ import annotations

import email
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from .helpers import MIB, Stackvault, one_error

# Secrets in the notification URLs: they must never be printed or stored.
TOKEN = "s3cr3t-T0KEN-abcdef0123"
PASSWORD = "mailPa55word-xyz"


class Mailbox:
    """An aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email_policy))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture
def http_receiver() -> Iterator[tuple[list[dict], int]]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A target that is down in the worst way: it takes the connection and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _configure(sv: Stackvault, *urls: str, extra: str = "") -> None:
    config = sv.root / "sv.toml"
    config.write_text("[notify]\nurls = [" + ", ".join(json.dumps(u) for u in urls) + "]\n" + extra)


def _run(sv: Stackvault, *args: object, expect: int | None = 0):
    return sv.run(*args, "--config", sv.root / "sv.toml", expect=expect)


def _refused_backup(sv: Stackvault, image: Path):
    """A backup that fails inside its job: another proxy's gc holds the repository's exclusive lock."""
    (sv.repo / "locks").mkdir(exist_ok=True)
    lock = sv.repo / "locks" / f"{int(time.time())}-0badc0de.json"
    lock.write_text(json.dumps({"kind": "exclusive", "host": "proxy-az2.invalid", "pid": 1, "job": "gc",
                                "expires": time.time() + 600}))
    try:
        res = _run(sv, "backup", "--source", f"file:{image}", expect=None)
    finally:
        lock.unlink()
    assert res.rc != 0, res.describe()
    return res


def _failed_job_ids(sv: Stackvault) -> list[str]:
    with sqlite3.connect(sv.catalog_file) as db:
        return [row[0] for row in db.execute("SELECT id FROM jobs WHERE status = 'failed'")]


def _wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not arrive within {timeout} s")


def test_a_failed_backup_is_mailed_and_posted_with_its_job_id_and_reason(
        repo: Stackvault, smtp, http_receiver, tmp_path: Path) -> None:
    box, smtp_port = smtp
    posts, http_port = http_receiver
    _configure(repo, f"mailto://127.0.0.1:{smtp_port}?from=stackvault@example.com&to=ops@example.com",
               f"json://127.0.0.1:{http_port}/hooks/{TOKEN}")
    image = tmp_path / "a.img"
    image.write_bytes(b"\x17" * MIB)
    res = _refused_backup(repo, image)
    one_error(res, "locked by gc")
    assert "warning" not in res.stderr, res.describe()
    [job_id] = _failed_job_ids(repo)

    [post] = _wait_for("the webhook", lambda: list(posts))
    assert post["path"] == f"/hooks/{TOKEN}"
    assert post["type"] == "failure"
    assert "backup failed" in post["title"]
    assert job_id in post["message"] and "locked by gc" in post["message"], post
    [mail] = _wait_for("the e-mail", lambda: list(box.messages))
    assert mail["To"] == "ops@example.com"
    assert "backup failed" in mail["Subject"]
    text = mail.get_body(preferencelist=("plain", "html")).get_content()
    assert job_id in text and "locked by gc" in text, text


def test_a_target_that_is_down_neither_fails_nor_holds_up_the_job_nor_shows_its_token(
        repo: Stackvault, http_receiver, black_hole: int, tmp_path: Path) -> None:
    posts, http_port = http_receiver
    _configure(repo, f"json://127.0.0.1:{black_hole}/hooks/{TOKEN}",
               f"mailto://alerts:{PASSWORD}@127.0.0.1:{_free_port()}?from=sv@example.com&to=ops@example.com",
               f"json://127.0.0.1:{http_port}/ok", extra="timeout = 3\n")
    image = tmp_path / "a.img"
    image.write_bytes(b"\x01" * MIB)
    started = time.monotonic()
    res = _refused_backup(repo, image)
    elapsed = time.monotonic() - started
    # The job's own error and exit code, as without notifications; the live target still got it.
    one_error(res, "locked by gc", rc=75)  # a held lock: try again later
    assert elapsed < 60, f"a dead target held the job up for {elapsed:.0f} s (timeout is 3 s)"
    assert len(_wait_for("the webhook", lambda: list(posts))) == 1
    warnings = [line for line in res.stderr.splitlines() if line.startswith("stackvault: warning:")]
    assert len(warnings) == 2, res.describe()
    hole = next(w for w in warnings if f"127.0.0.1:{black_hole}" in w)
    assert "did not finish within 3 s" in hole, hole
    refused = next(w for w in warnings if "mailto://" in w)
    assert "failed" in refused, refused
    for secret in (TOKEN, PASSWORD):
        assert secret not in res.stderr + res.stdout, res.describe()
        assert secret.encode() not in repo.catalog_file.read_bytes(), "a notification secret is in the catalog"


def test_the_daily_summary_names_the_failed_job_and_counts_the_rest(
        repo: Stackvault, http_receiver, tmp_path: Path) -> None:
    posts, http_port = http_receiver
    _configure(repo, f"json://127.0.0.1:{http_port}/summary", extra='on = ["summary"]\n')
    image = tmp_path / "a.img"
    image.write_bytes(b"\x02" * MIB)
    _run(repo, "backup", "--source", f"file:{image}", "--level", "full")
    _refused_backup(repo, image)
    assert not posts, "on = [\"summary\"]: a failure alone must not be sent"
    [job_id] = _failed_job_ids(repo)
    res = _run(repo, "notify", "--summary")
    assert res.data["sent_to"] == [f"json://127.0.0.1:{http_port}"], res.describe()
    [post] = _wait_for("the summary", lambda: list(posts))
    assert post["type"] == "info"
    assert "1 failed, 0 with warnings, 1 succeeded in 24 h" in post["title"], post
    assert job_id in post["message"] and "locked by gc" in post["message"], post
    assert "New backups: 1" in post["message"], post


def test_notify_settings_are_checked_like_the_others(repo: Stackvault) -> None:
    _configure(repo, "json://127.0.0.1:9/x", extra='on = ["failures"]\n')
    one_error(_run(repo, "notify", "--summary", expect=None), "notify.on", "failures", rc=2)
    _configure(repo)
    one_error(_run(repo, "notify", "--summary", expect=None), "no notification targets", rc=2)

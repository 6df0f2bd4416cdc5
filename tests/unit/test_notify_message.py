"""What a job's end says in a notification, from the report its command prints (one function each)."""

from __future__ import annotations

import pytest

from stackvault.observe.job_end import job_end
from stackvault.observe.notify import Event, scrub, target_name


@pytest.mark.parametrize(("status", "event"), [("failed", Event.FAILURE), ("partial", Event.FAILURE),
                                               ("warning", Event.WARNING), ("success", None)])
def test_which_ends_are_notified(status: str, event: Event | None) -> None:
    assert job_end("backup", {"status": status}).event is event


def test_a_cloud_job_names_each_failed_server_with_its_error_and_fix() -> None:
    end = job_end("backup", {"job_id": "j1", "status": "partial", "servers": [
        {"server_id": "s1", "name": "web1", "status": "failed", "consistency": "crash",
         "error": "server web1 would be crash-consistent, required application (install the agent)"},
        {"server_id": "s2", "name": "db1", "status": "warning", "consistency": "application",
         "warnings": ["no fresh quiesce marker"]}], "volumes": []})
    body = end.body()
    assert end.job_id == "j1" and "Job j1: backup, partial" in body
    assert "- web1: failed (crash): server web1 would be crash-consistent, required application (install the agent)" \
        in body
    assert "- db1: warning (application)" in body and "warning: no fresh quiesce marker" in body


def test_a_verify_that_found_damage_is_a_failure_saying_what_it_found() -> None:
    end = job_end("verify", {"ok": False, "status": "failed", "bad_chunks": [{}, {}], "missing_backups": ["b"]})
    assert end.event is Event.FAILURE
    assert end.message == "verify found damage: 2 bad chunks, 1 missing backups"


@pytest.mark.parametrize(("url", "secret"), [
    ("json://127.0.0.1:8080/hooks/T0kenSecret99?x=1", "T0kenSecret99"),
    ("mailto://bob:Pa55wordXYZ@127.0.0.1:2525?to=a@example.com&from=b@example.com", "Pa55wordXYZ"),
    ("discord://123456789/T0kenSecret99", "T0kenSecret99"),
])
def test_a_target_is_named_and_quoted_without_its_secrets(url: str, secret: str) -> None:
    name = target_name(url)
    said = scrub(f"could not reach {url} with {secret}", url)
    assert secret not in name and secret not in said, (name, said)
    assert name.split("://")[0] == url.split("://")[0]

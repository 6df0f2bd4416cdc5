"""The one retry policy: what each kind of service counts as transient, the backoff, and the log line
per retry (which names the call and the short reason, never more)."""

from __future__ import annotations

import logging
import sqlite3

import psycopg
import pytest
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from stackvault.cloud import removal
from stackvault.cloud.removal import leftovers_warning, remove
from stackvault.retrying import RetryPolicy, cloud_reason, transient_catalog, transient_cloud


def http(status: int, details: str = "",
         cls: type[os_exc.HttpException] = os_exc.HttpException) -> os_exc.HttpException:
    """The error openstacksdk raises for an HTTP answer of `status` (set as a response would)."""
    exc = cls(message=f"status {status}", details=details)
    exc.status_code = status
    return exc


@pytest.mark.parametrize(("exc", "transient"), [
    (http(500), True), (http(503), True), (http(429), True), (ks_exc.ConnectFailure("reset"), True),
    (http(400), False), (http(403), False), (http(409), False), (http(404, cls=os_exc.NotFoundException), False),
    (ValueError("bug"), False),
])
def test_cloud_errors_that_are_transient(exc, transient):
    assert transient_cloud(exc) is transient


def test_catalog_errors_that_are_transient():
    with sqlite3.connect(":memory:") as db:
        try:
            db.execute("SELECT * FROM nothing")
        except sqlite3.OperationalError as exc:
            assert not transient_catalog(exc)  # no such table: final
    assert transient_catalog(sqlite3.OperationalError("database is locked"))
    assert transient_catalog(psycopg.errors.SerializationFailure("could not serialize access"))
    assert transient_catalog(psycopg.OperationalError("connection lost"))
    assert not transient_catalog(psycopg.errors.UniqueViolation("duplicate key"))


def test_backoff_doubles_is_jittered_capped_and_gives_up_with_the_last_error(caplog):
    slept: list[float] = []
    calls = []

    def flaky():
        calls.append(1)
        raise http(503, "Service Unavailable\nsecond line")

    policy = RetryPolicy(attempts=5, first_delay_s=1.0, max_delay_s=3.0)
    with caplog.at_level(logging.WARNING, "stackvault.retry"), pytest.raises(os_exc.HttpException):
        policy.call("get image x", flaky, transient_cloud, describe=cloud_reason, sleep=slept.append,
                    rng=lambda: 0.5)
    assert len(calls) == 5 and slept == [0.5, 1.0, 1.5, 1.5]
    assert caplog.messages[0] == "get image x: HTTP 503 (Service Unavailable); retry 1 of 4 in 0.50 s"
    assert len(caplog.messages) == 4


def test_a_final_error_is_not_retried_and_a_success_returns_its_value():
    slept: list[float] = []
    with pytest.raises(os_exc.HttpException):
        RetryPolicy().call("x", lambda: (_ for _ in ()).throw(http(400)), transient_cloud, sleep=slept.append)
    answers = iter([http(500), "ok"])

    def once_broken():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert RetryPolicy().call("y", once_broken, transient_cloud, sleep=slept.append) == "ok"
    assert len(slept) == 1


def test_a_deadline_ends_the_tries_before_the_attempts_do():
    calls = []

    def busy():
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        RetryPolicy(attempts=1000, first_delay_s=0.01, max_delay_s=0.01, deadline_s=0.2).call(
            "wal", busy, transient_catalog)
    assert 2 <= len(calls) < 1000


def test_removal_retries_busy_objects_then_names_what_stays(monkeypatch):
    monkeypatch.setattr(removal, "REMOVAL", RetryPolicy(attempts=4, first_delay_s=0.0))
    answers = [http(409), http(500)]

    def delete():
        if answers:
            raise answers.pop(0)

    assert remove("image i1", delete) is True and answers == []
    leftovers: list[str] = []

    def refused():
        raise http(500, "Internal Server Error")

    assert remove("image i2", refused, leftovers) is False
    assert leftovers == ["image i2: HTTP 500 (Internal Server Error)"]
    assert leftovers_warning(leftovers).startswith("left in the cloud after 4 tries: image i2: HTTP 500")
    forbidden: list[str] = []
    assert remove("image i3", lambda: (_ for _ in ()).throw(http(403)), forbidden) is False
    assert forbidden == ["image i3: HTTP 403"]

"""The proxy's memory is kept per place a repository really is, not per location string.

`s3://backups` at two endpoints, or `swift://backups` in two clouds, are two repositories with two
ids: one memory for both refused every other run ("its id changed") and flipped after each
`trust accept`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackvault.config import Settings
from stackvault.engine.repository import RepoConfig, Repository
from stackvault.jobs import trust
from stackvault.jobs.context import JobContext
from stackvault.storage.base import Backend
from stackvault.storage.retry import RetryingBackend
from stackvault.storage.s3 import S3Backend
from stackvault.storage.swift import SwiftBackend


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobContext:
    monkeypatch.delenv("STACKVAULT_PASSPHRASE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    return JobContext(Settings(repo="s3://backups", workdir=tmp_path / "work"))


def _swift(storage_url: str) -> SwiftBackend:
    backend = SwiftBackend("backups")
    backend._authenticate = lambda: (storage_url, "token")  # what each cloud's Keystone answers
    return backend


@pytest.mark.parametrize("make_two", [
    lambda: [S3Backend("backups", endpoint=f"http://{host}:9000", region="us-east-1")
             for host in ("region1.example", "region2.example")],
    lambda: [S3Backend("backups", endpoint="http://s3.example", region=region)
             for region in ("region-a", "region-b")],
    lambda: [_swift(f"https://swift.{cloud}.example/v1/AUTH_0123") for cloud in ("cloud-a", "cloud-b")],
    lambda: [_swift(f"https://swift.example/v1/AUTH_{project}") for project in ("p1", "p2")],
], ids=["s3-endpoint", "s3-region", "swift-cloud", "swift-project"])
def test_one_name_in_two_places_is_two_memories(ctx: JobContext, make_two) -> None:
    one, two = make_two()
    assert one.location == two.location
    repos = [Repository(RetryingBackend(b), RepoConfig(id=c * 32, created="2026-12-01T00:00:00+00:00",
                                                       block_size=1 << 16))
             for b, c in ((one, "a"), (two, "b"))]
    for _ in range(3):  # alternating runs, as a multi-cloud schedule does
        for repo in repos:
            trust.check(ctx, repo)
    assert len(list((ctx.settings.workdir / trust.DIR).iterdir())) == 2
    assert [trust.known(ctx.settings.workdir, r)["id"] for r in repos] == ["a" * 32, "b" * 32]


def test_the_same_place_is_still_one_memory(ctx: JobContext) -> None:
    """A repository replaced at the same endpoint is still refused."""
    def repo(repo_id: str) -> Repository:
        backend: Backend = S3Backend("backups", endpoint="http://s3.example", region="r")
        return Repository(backend, RepoConfig(id=repo_id, created="2026-12-01T00:00:00+00:00", block_size=1 << 16))
    trust.check(ctx, repo("a" * 32))
    with pytest.raises(trust.TrustError, match="id changed"):
        trust.check(ctx, repo("b" * 32))


def _kept_by_location(ctx: JobContext, repo_id: str, newest: str) -> None:
    """What a proxy remembered of s3://backups before memories were kept per place."""
    path = trust._path(ctx.settings.workdir, "s3://backups")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"location": "s3://backups", "id": repo_id, "encrypted": False,
                                "key_fingerprint": None, "newest_backup": newest, "updated": "2026-12-01"}))


def _s3_repo(repo_id: str, endpoint: str = "http://s3.example") -> Repository:
    return Repository(S3Backend("backups", endpoint=endpoint, region="r"),
                      RepoConfig(id=repo_id, created="2026-12-01T00:00:00+00:00", block_size=1 << 16))


def test_a_memory_kept_by_location_is_taken_over_by_its_repository(ctx: JobContext) -> None:
    """An upgraded proxy still sees a rollback of the repository it knew."""
    _kept_by_location(ctx, "a" * 32, "20261205T000000000Z-aaaaaa")
    repo = _s3_repo("a" * 32)
    trust.check(ctx, repo)
    assert trust.known(ctx.settings.workdir, repo)["newest_backup"] == "20261205T000000000Z-aaaaaa"
    repo.was_forgotten = lambda _backup_id: False  # no store here: the newest backup was not forgotten
    assert "older state" in trust.rollback(ctx, repo, ["20261201T000000000Z-bbbbbb"])


def test_a_memory_kept_by_location_of_another_id_is_left_alone(ctx: JobContext) -> None:
    """It may be the same name's repository in another cloud: no refusal, a memory of its own."""
    _kept_by_location(ctx, "a" * 32, "20261205T000000000Z-aaaaaa")
    repo = _s3_repo("b" * 32, endpoint="http://other.example")
    trust.check(ctx, repo)
    assert trust.known(ctx.settings.workdir, repo)["id"] == "b" * 32
    trust.check(ctx, _s3_repo("a" * 32))  # the one it was kept for still takes it over

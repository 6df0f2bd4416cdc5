"""A real Swift all-in-one for the storage tests, one per session, serving S3 and Swift at once.

Each session claims a slot dir `<repo>/.state/swift-test-<N>` (the first no running session holds),
stops leftovers of a crashed earlier session there, starts Swift from empty on free ports, and
stops every process of it by pid at the end, after failures and on SIGTERM too.
`DEVCLOUD_SWIFT_STATE=<dir>` uses that Swift instead (started if needed, left running if it was).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcloud import processes
from devcloud.context import REPO_ROOT
from devcloud.swift import SwiftAllInOne

SLOT_ROOT = REPO_ROOT / ".state"


@pytest.fixture(scope="session")
def swift_aio() -> Iterator[SwiftAllInOne]:
    """A running Swift all-in-one (S3 at `.s3_endpoint`, tempauth at `.tempauth_url`)."""
    reuse = os.environ.get("DEVCLOUD_SWIFT_STATE")
    lock = None
    if reuse:
        swift = SwiftAllInOne.load(Path(reuse))
        stop_at_end = swift.pid("swift-proxy") is None
    else:
        state_dir, lock = processes.claim_slot(SLOT_ROOT, "swift-test")
        processes.stop_all(state_dir.resolve())
        shutil.rmtree(state_dir, ignore_errors=True)
        swift = SwiftAllInOne.load(state_dir, free_ports=True)
        stop_at_end = True

    def stop() -> None:
        if stop_at_end:
            swift.stop()

    try:
        with processes.stopped_at_exit(stop):
            swift.start()
            yield swift
    finally:
        if lock is not None:
            lock.close()


@pytest.fixture
def s3_env(swift_aio: SwiftAllInOne, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3's variables pointing at the local Swift's S3 API, nothing else of the caller's AWS setup."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    env = {**swift_aio.s3_env(), "AWS_CONFIG_FILE": "/nonexistent",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def tempauth_env(swift_aio: SwiftAllInOne, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The swift CLI's ST_* variables for the local Swift's tempauth account."""
    env = swift_aio.tempauth_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OS_CLOUD", raising=False)
    return env


def unique_name(kind: str) -> str:
    """A bucket or container name no other test uses (S3 names: lower case, 3-63 characters)."""
    return f"sv-{kind}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def swift_keystone(swift_aio: SwiftAllInOne, devcloud):
    """The dev cloud (its Keystone) with the Swift all-in-one in its catalog as `object-store`.

    Returns the `devcloud` handle; its clouds.yaml clouds reach Swift through openstacksdk.
    """
    from devcloud.swift import keystone

    auth = keystone.register(devcloud.ctx, swift_aio)
    swift_aio.start(keystone=auth)
    return devcloud

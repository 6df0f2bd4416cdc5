"""Damage heals on object stores too: a damaged chunk in an s3:// or swift:// repository is named
by `verify --deep` and set aside (put under `<key>.bad`, then deleted: object stores have no
rename), so the next Full stores it again and the old backup restores byte for byte."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from e2e.helpers import MIB, make_random_image, sha256_file

from stackvault.storage import open_backend

from .conftest import unique_name
from .test_cli_object_store import ObjectStoreUser


@pytest.fixture(params=["s3", "swift"])
def user(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoreUser:
    request.getfixturevalue("s3_env" if request.param == "s3" else "tempauth_env")
    location = f"{request.param}://{unique_name('heal')}/backups/proxy-1"
    open_backend(location).create()
    u = ObjectStoreUser(tmp_path / "sv", location=location)
    u.init("64KiB")
    return u


@pytest.mark.slow
def test_damaged_chunk_heals_on_an_object_store(user: ObjectStoreUser, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.raw", MIB, random.Random(11))
    first = user.backup(src, level="full")["backup_id"]
    store = open_backend(user.location)
    victim = sorted(o.key for o in store.list("chunks/"))[3]
    data = bytearray(store.get(victim))
    data[len(data) // 2] ^= 0x10
    store.put(victim, bytes(data))

    res = user.run("verify", "--deep", expect=3)
    assert [c["chunk"] for c in res.data["bad_chunks"]] == [victim.rsplit("/", 1)[1]], res.describe()
    keys = {o.key for o in store.list("chunks/")}
    assert victim not in keys and victim + ".bad" in keys
    assert store.get(victim + ".bad") == bytes(data), "set aside unchanged"

    assert user.backup(src, level="full")["bytes_stored"] > 0
    assert sha256_file(user.restore(first, tmp_path / "out.raw")) == sha256_file(src)
    assert user.run("verify", "--deep").data["ok"]
    user.run("gc")
    assert victim + ".bad" not in {o.key for o in store.list("chunks/")}

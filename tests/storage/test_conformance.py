"""The storage conformance suite over every backend: local, memory, S3 and Swift (a real Swift).

The lead's suite (tests/unit/test_storage_conformance.py) runs here too, over all four backends;
this file adds what object stores must also get right: pagination, prefixes that share a bucket,
binary bodies, many threads at once, and errors a user can act on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from unit.test_storage_conformance import (  # noqa: F401 - collected here over every backend
    test_list_by_prefix,
    test_put_get_replace_delete,
)

from stackvault.errors import RepositoryError
from stackvault.storage import Backend, open_backend
from stackvault.storage.base import TransientError
from stackvault.storage.retry import RetryingBackend
from stackvault.storage.s3 import S3Backend
from stackvault.storage.swift import SwiftBackend

from .conftest import unique_name

BACKENDS = ("local", "memory", "s3", "swift")


def _driver(backend: Backend) -> Backend:
    return getattr(backend, "inner", backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Backend]:
    """A fresh, empty repository place on each backend, opened as a user's --repo would be."""
    if request.param == "local":
        location = str(tmp_path / "repo")
    elif request.param == "memory":
        location = "memory://"
    elif request.param == "s3":
        request.getfixturevalue("s3_env")
        location = f"s3://{unique_name('conf')}/some/prefix"
    else:
        request.getfixturevalue("tempauth_env")
        location = f"swift://{unique_name('conf')}/some/prefix"
    b = open_backend(location)
    b.create()
    yield b
    b.close()


def test_object_stores_come_with_retries(backend: Backend) -> None:
    remote = isinstance(_driver(backend), (S3Backend, SwiftBackend))
    assert isinstance(backend, RetryingBackend) == remote
    assert backend.parallel_calls == (8 if remote else 1)  # upload workers the engine should run


def test_binary_bodies_and_memoryviews(backend: Backend) -> None:
    body = os.urandom(1 << 20) + bytes(1000)
    backend.put("chunks/00/big", memoryview(body))
    assert backend.get("chunks/00/big") == body
    backend.put("indexes/empty", b"")
    assert backend.get("indexes/empty") == b""
    assert {o.key: o.size for o in backend.list("")} == {"chunks/00/big": len(body),
                                                          "indexes/empty": 0}


def test_listing_spans_pages(backend: Backend) -> None:
    _driver(backend).page_size = 7  # type: ignore[attr-defined]  # object stores page listings
    keys = {f"chunks/{i:02x}/{i:064x}" for i in range(40)} | {"backups/x.json"}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: backend.put(k, k.encode()), keys))
    listed = list(backend.list("chunks/"))
    assert sorted(o.key for o in listed) == sorted(k for k in keys if k.startswith("chunks/"))
    assert all(o.size == len(o.key) and o.mtime > 0 for o in listed)
    assert [o.key for o in backend.list("chunks/0a/")] == [f"chunks/0a/{10:064x}"]


def test_many_threads_at_once(backend: Backend) -> None:
    """The engine's upload workers share one backend: every put lands, every get sees its own."""
    bodies = {f"chunks/t/{i}": os.urandom(4096 + i) for i in range(48)}

    def roundtrip(key: str) -> bool:
        backend.put(key, bodies[key])
        return backend.exists(key) and backend.get(key) == bodies[key]

    with ThreadPoolExecutor(12) as pool:
        assert all(pool.map(roundtrip, bodies))
    assert len(list(backend.list("chunks/t/"))) == len(bodies)


def test_missing_object(backend: Backend) -> None:
    assert not backend.exists("config")
    with pytest.raises(KeyError):
        backend.get("config")
    assert list(backend.list("backups/")) == []
    backend.delete("never/there")


@pytest.mark.parametrize("scheme", ["s3", "swift"])
def test_prefixes_share_a_bucket_without_seeing_each_other(request, scheme: str) -> None:
    request.getfixturevalue("s3_env" if scheme == "s3" else "tempauth_env")
    name = unique_name("share")
    one, two = open_backend(f"{scheme}://{name}/one"), open_backend(f"{scheme}://{name}/one-more")
    one.create()
    one.put("config", b"1")
    two.put("config", b"2")
    assert [o.key for o in one.list("")] == ["config"] and one.get("config") == b"1"
    assert [o.key for o in two.list("c")] == ["config"] and two.get("config") == b"2"
    whole = open_backend(f"{scheme}://{name}")
    assert sorted(o.key for o in whole.list("")) == ["one-more/config", "one/config"]


@pytest.mark.parametrize("scheme", ["s3", "swift"])
def test_missing_bucket_is_a_clear_error(request, scheme: str) -> None:
    request.getfixturevalue("s3_env" if scheme == "s3" else "tempauth_env")
    name = unique_name("nothere")
    backend = open_backend(f"{scheme}://{name}/p")
    with pytest.raises(RepositoryError, match=f"{name}.* does not exist.*stackvault init.*create it"):
        backend.put("config", b"x")
    with pytest.raises(RepositoryError, match=f"{name}.* does not exist"):
        list(backend.list(""))


def test_s3_wrong_secret_is_access_denied(s3_env, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    backend = open_backend(f"s3://{unique_name('deny')}/p")
    with pytest.raises(RepositoryError, match=r"refused access.*AWS_SECRET_ACCESS_KEY") as err:
        backend.get("config")
    assert not isinstance(err.value, TransientError)  # not retried: it will not get better


def test_swift_wrong_key_is_a_clear_error(tempauth_env, monkeypatch) -> None:
    monkeypatch.setenv("ST_KEY", "not-the-key")
    backend = open_backend(f"swift://{unique_name('deny')}/p")
    with pytest.raises(RepositoryError, match="ST_KEY") as err:
        backend.get("config")
    assert not isinstance(err.value, TransientError)


@pytest.mark.parametrize("scheme", ["s3", "swift"])
def test_unreachable_endpoint_is_retried_then_named(scheme: str, monkeypatch) -> None:
    from devcloud.context import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("ST_AUTH", dead + "/auth/v1.0")
    monkeypatch.setenv("ST_USER", "a:b")
    monkeypatch.setenv("ST_KEY", "c")
    monkeypatch.delenv("OS_CLOUD", raising=False)
    backend = open_backend(f"{scheme}://bucket/p")
    assert isinstance(backend, RetryingBackend)
    backend.base_delay = 0.01
    with pytest.raises(TransientError, match=r"cannot reach .*127.0.0.1.*gave up after 6 attempts"):
        backend.get("config")
    assert backend.retries == 5


def test_unknown_location_option_is_a_usage_error() -> None:
    from stackvault.errors import UsageError

    with pytest.raises(UsageError, match=r"unknown option 'bogus'.*endpoint, region"):
        open_backend("s3://bucket/p?bogus=1")
    with pytest.raises(UsageError, match="names no bucket"):
        open_backend("s3:///p")


def test_s3_settings_from_a_profile(s3_env, monkeypatch, tmp_path) -> None:
    """An AWS profile with its own endpoint and keys is all a user needs, as with the aws CLI."""
    config = tmp_path / "aws-config"
    config.write_text(f"""[profile backup]
region = us-east-1
endpoint_url = {s3_env['AWS_ENDPOINT_URL']}
aws_access_key_id = {s3_env['AWS_ACCESS_KEY_ID']}
aws_secret_access_key = {s3_env['AWS_SECRET_ACCESS_KEY']}
""")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "backup")
    backend = open_backend(f"s3://{unique_name('prof')}/p")
    backend.create()
    backend.put("config", b"1")
    assert backend.get("config") == b"1"
    monkeypatch.delenv("AWS_PROFILE")
    named = open_backend(f"{backend.location}?profile=backup")
    assert named.get("config") == b"1"
    from stackvault.errors import UsageError

    with pytest.raises(UsageError, match=r"AWS profile 'nope'.*does not exist"):
        open_backend(f"{backend.location}?profile=nope")


def test_s3_endpoint_in_the_location(s3_env, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    backend = open_backend(f"s3://{unique_name('loc')}/p?endpoint={s3_env['AWS_ENDPOINT_URL']}"
                           "&region=us-east-1&addressing=path")
    backend.create()
    backend.put("config", b"1")
    assert [o.key for o in backend.list("")] == ["config"]

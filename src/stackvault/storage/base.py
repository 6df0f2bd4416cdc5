"""The storage interface and the function that picks a backend from a repository location."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import RepositoryError, UsageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float


class TransientError(RepositoryError):
    """A failure that may go away if the call is repeated: a 5xx answer, a timeout, a refused or
    reset connection. Drivers raise it (with a message for the user, should every retry fail);
    `retry.RetryingBackend` retries it. Every other error is final at once."""


class ObjectTooLargeError(RepositoryError, ValueError):
    """An object larger than its reader accepts (`get(key, max_size=N)`), found before it was read
    into memory: the store is not trusted, and a record, a lock or a key slot of gigabytes would
    otherwise exhaust the proxy's memory. Callers report the object as damaged (`problem`); one that
    ignores undecodable objects (a lock, a proof) ignores it with the other ValueErrors."""

    def __init__(self, key: str, max_size: int) -> None:
        self.key = key
        self.problem = f"larger than {max_size} bytes"
        super().__init__(f"repository object {key} is damaged ({self.problem})", "run `stackvault verify`")


def read_capped(read: Callable[..., bytes], key: str, max_size: int | None, announced: int) -> bytes:
    """The object `read(n)` streams, of `announced` bytes as the store says: ObjectTooLargeError
    before reading when that is over `max_size`, and once more than `max_size` bytes came whatever it
    said. One read of the announced size (one buffer, as a plain read), then small pieces for
    whatever more comes, so a lying store cannot make a reader allocate beyond `max_size` + 1."""
    if max_size is None:
        return read()
    check_size(key, announced, max_size)
    parts, total, want = [], 0, announced + 1
    while total <= max_size:
        part = read(min(want, max_size + 1 - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
        want = _PIECE
    if total > max_size:
        raise ObjectTooLargeError(key, max_size)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def check_size(key: str, size: int, max_size: int | None) -> None:
    """ObjectTooLargeError when a size the store announces is over `max_size`."""
    if max_size is not None and size > max_size:
        raise ObjectTooLargeError(key, max_size)


#: What `read_capped` reads at once beyond the announced size.
_PIECE = 1 << 20


#: The cap for the small JSON objects (locks, proofs, key slots): each is well under a KiB.
SMALL_OBJECT_BYTES = 64 << 10


class Backend(abc.ABC):
    """A flat namespace of immutable-ish objects. Every `put` is atomic: readers see all or nothing."""

    location: str
    #: Calls in flight that keep this store busy. An object store answers each call after tens of
    #: milliseconds whatever the bandwidth, so uploads need many at once; a local disk needs none
    #: beyond the hashing workers. The engine runs at least this many upload workers.
    parallel_calls: int = 1

    @property
    def identity(self) -> str:
        """Where the repository really is, for what this proxy remembers of it (jobs/trust.py): the
        location names a bucket or container but not the endpoint or cloud it lives in, and two
        repositories of one name in two clouds are two repositories. Drivers add what tells them apart."""
        return self.location

    @abc.abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store `data` under `key`, replacing any object there, atomically."""

    @abc.abstractmethod
    def get(self, key: str, max_size: int | None = None) -> bytes:
        """Return the object's bytes; raise `KeyError(key)` when it does not exist, and
        ObjectTooLargeError, having read at most `max_size` + 1 bytes, when it is larger."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the object, fewer where it ends sooner; `KeyError(key)`
        when it does not exist. Pack files are read this way: one request for a run of neighbouring
        chunks instead of the whole pack. This default reads the whole object; stores override it."""
        return self.get(key)[offset : offset + length]

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error (deletes are retried)."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in no particular order."""

    def sync(self) -> None:
        """Make every `put` so far durable. Called before a manifest commits (per-job sync level)."""

    def temp_files(self) -> Iterator[str]:
        """Keys of the leftovers of writes a killed process never finished: `list` never shows them,
        `delete` removes them (`gc`). None by default: an object store's `put` is atomic without a
        temporary object; a directory writes each file under a temporary name first."""
        return iter(())

    def remove_empty_dirs(self, prefix: str) -> None:
        """Remove the folders under `prefix` that deleting objects left empty (`gc`), never an object.
        Nothing by default: an object store has keys, not folders."""

    def create(self) -> None:
        """Make the place the repository lives in (a bucket, a container) if it is missing.

        Called by `init` only: every other command must fail clearly on a missing bucket rather
        than quietly create an empty one under a mistyped name."""

    def close(self) -> None:
        """Release connections and file handles."""


class BackendWrapper(Backend):
    """A backend around another (retries, fault injection, encryption): every call goes to `inner`
    unless the wrapper overrides it, so a wrapper holds only the behaviour it adds."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location
        self.parallel_calls = inner.parallel_calls

    @property
    def identity(self) -> str:
        return self.inner.identity

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.put(key, data)

    def get(self, key: str, max_size: int | None = None) -> bytes:
        return self.inner.get(key, max_size)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(key, offset, length)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def sync(self) -> None:
        self.inner.sync()

    def temp_files(self) -> Iterator[str]:
        return self.inner.temp_files()

    def remove_empty_dirs(self, prefix: str) -> None:
        self.inner.remove_empty_dirs(prefix)

    def create(self) -> None:
        self.inner.create()

    def close(self) -> None:
        self.inner.close()


def split_url(location: str, allowed: tuple[str, ...]) -> tuple[str, str, dict[str, str]]:
    """`s3://BUCKET/PRE/FIX?k=v` -> ("BUCKET", "PRE/FIX/", {"k": "v"}); the prefix ends with `/`.

    Options after `?` let a config file say in one string what would otherwise need environment
    variables (an endpoint, a region, a profile, a clouds.yaml entry)."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(location)
    if not parts.netloc:
        raise UsageError(f"repository location {location!r} names no bucket or container",
                         f"write it as {parts.scheme}://NAME/PREFIX")
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} in repository location {location!r}",
                         f"{parts.scheme}:// takes {', '.join(allowed)}")
    prefix = parts.path.strip("/")
    return parts.netloc, (prefix + "/" if prefix else ""), options


def open_driver(location: str, *, sync: str = "job", cloud: str | None = None) -> Backend:
    """The driver alone for a location: a path (local directory), memory://, s3:// or swift://."""
    if "://" in location and not location.startswith("file://"):
        scheme = location.split("://", 1)[0]
        if scheme == "memory":
            from .memory import MemoryBackend

            return MemoryBackend(location)
        if scheme == "s3":
            from .s3 import S3Backend

            bucket, prefix, options = split_url(location, S3Backend.OPTIONS)
            return S3Backend(bucket, prefix, **options)
        if scheme == "swift":
            from .swift import SwiftBackend

            container, prefix, options = split_url(location, ("cloud",))
            return SwiftBackend(container, prefix, cloud=options.get("cloud", cloud))
        raise UsageError(
            f"repository location {location!r} uses unsupported scheme {scheme!r}",
            "use a local directory path, s3://BUCKET/PREFIX or swift://CONTAINER/PREFIX",
        )
    from .local import LocalBackend

    return LocalBackend(location.removeprefix("file://"), sync=sync)


def open_backend(location: str, *, sync: str = "job", cloud: str | None = None) -> Backend:
    """Backend for a repository location; object stores come wrapped in retries with backoff.

    `cloud` names the clouds.yaml entry a swift:// repository authenticates with (else OS_CLOUD /
    OS_* variables, or tempauth from ST_AUTH / ST_USER / ST_KEY).
    """
    driver = open_driver(location, sync=sync, cloud=cloud)
    if location.startswith(("s3://", "swift://")):
        from .retry import RetryingBackend

        return RetryingBackend(driver)
    return driver

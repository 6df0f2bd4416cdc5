"""A repository in an S3 bucket (AWS, Ceph RGW, MinIO, Swift's s3api), through boto3.

Keys are objects `<prefix><key>` in the bucket. A PUT of a whole body is atomic in S3, so there are
no temporary objects, and S3 reads its own writes, so `sync` has nothing to do. boto3 is
configured the way its users expect (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, ~/.aws/config); `?endpoint=&region=&profile=&addressing=` after the location
override them. boto3's own retries are off: `retry.RetryingBackend` retries, once, for every driver.

One client serves every thread (boto3 clients are thread-safe) with a connection pool large enough
for the engine's upload workers: each 1 MiB PUT waits tens of milliseconds on the store, so
uploads only go fast in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ..errors import RepositoryError, UsageError
from .base import Backend, ObjectInfo, TransientError, read_capped

#: Connections kept open to the endpoint: more than any sensible number of upload workers.
POOL_CONNECTIONS = 64
_ACCESS_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "InvalidToken", "ExpiredToken", "AllAccessDisabled", "AccountProblem"})
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                              "Throttling", "ThrottlingException", "RequestTimeTooSkewed"})


class S3Backend(Backend):
    parallel_calls = 8
    OPTIONS = ("endpoint", "region", "profile", "addressing")

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 region: str | None = None, profile: str | None = None,
                 addressing: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.location = f"s3://{bucket}/{prefix}".rstrip("/")
        self.page_size = 1000  # keys per listing request (S3's maximum)
        if addressing not in (None, "path", "virtual", "auto"):
            raise UsageError(f"addressing={addressing!r} in {self.location} is not path, virtual "
                             "or auto", "use addressing=path for most non-AWS stores")
        try:
            session = boto3.session.Session(profile_name=profile)
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {profile!r} for {self.location} does not exist",
                             "name a profile of ~/.aws/config or unset AWS_PROFILE") from exc

        def client(style: str) -> Any:
            return session.client("s3", endpoint_url=endpoint, region_name=region, config=Config(
                s3={"addressing_style": style},  # type: ignore[arg-type]  # path, virtual or auto: checked above
                retries={"total_max_attempts": 1},
                max_pool_connections=POOL_CONNECTIONS, connect_timeout=10, read_timeout=60))

        self._client = client(addressing or "auto")
        self.endpoint = self._client.meta.endpoint_url
        if addressing is None and ".amazonaws.com" not in self.endpoint:
            # Stores other than AWS (a loopback address, an RGW without wildcard DNS) serve
            # buckets by path far more often than by host name.
            self._client = client("path")

    @property
    def identity(self) -> str:
        return f"{self.location} at {self.endpoint} region {self._client.meta.region_name}"

    # ---- the interface ---------------------------------------------------------------------------
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        with self._translate(key):
            # bytes and bytearray go as they are (a pack is a bytearray of tens of MiB: no copy)
            body = data if isinstance(data, (bytes, bytearray)) else bytes(data)
            self._client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body)

    def get(self, key: str, max_size: int | None = None) -> bytes:
        with self._translate(key, missing_is_key_error=True):
            resp = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            with closing(resp["Body"]) as body:
                return read_capped(body.read, key, max_size, resp.get("ContentLength", 0))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with self._translate(key, missing_is_key_error=True):
            try:
                resp = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key,
                                               Range=f"bytes={offset}-{offset + length - 1}")
            except ClientError as exc:  # a range starting past the end: nothing there
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""
                raise
            with closing(resp["Body"]) as body:
                return body.read(length)

    def exists(self, key: str) -> bool:
        try:
            with self._translate(key, missing_is_key_error=True):
                self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except KeyError:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._translate(key):
            self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix,
            PaginationConfig={"PageSize": self.page_size})
        with self._translate(prefix):
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(obj["Key"][len(self.prefix):], obj["Size"],
                                     obj["LastModified"].timestamp())

    def create(self) -> None:
        with self._translate(""):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _status(exc) != 404:
                    raise
            region = self._client.meta.region_name
            extra = ({"CreateBucketConfiguration": {"LocationConstraint": region}}
                     if region and region != "us-east-1" and ".amazonaws.com" in self.endpoint
                     else {})
            try:
                self._client.create_bucket(Bucket=self.bucket, **extra)
            except ClientError as exc:
                if _code(exc) != "BucketAlreadyOwnedByYou":
                    raise

    def close(self) -> None:
        self._client.close()

    # ---- errors a user can act on ----------------------------------------------------------------
    @contextmanager
    def _translate(self, key: str, *, missing_is_key_error: bool = False) -> Iterator[None]:
        """boto3's exceptions -> KeyError (missing object), TransientError or RepositoryError."""
        where = f"{self.location} at {self.endpoint}"
        try:
            yield
        except ClientError as exc:
            code, status = _code(exc), _status(exc)
            if code == "NoSuchBucket":
                raise RepositoryError(f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}",
                                      "run `stackvault init` to create it, or fix the bucket "
                                      "name or AWS_ENDPOINT_URL") from None
            if missing_is_key_error and (code in ("NoSuchKey", "404", "NotFound") or status == 404):
                raise KeyError(key) from None
            if code in _ACCESS_CODES or status in (401, 403):
                raise RepositoryError(f"S3 refused access to {where}: {code} {_message(exc)}",
                                      "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                                      "AWS_PROFILE, and the bucket's policy") from None
            if code in _TRANSIENT_CODES or status >= 500:
                raise TransientError(f"S3 failed on {key or 'the bucket'} in {where}: {status} "
                                     f"{code} {_message(exc)}",
                                     "the store is unwell; try again later") from None
            raise RepositoryError(f"S3 failed on {key or 'the bucket'} in {where}: {status} {code} "
                                  f"{_message(exc)}", "see the store's documentation of that code"
                                  ) from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise RepositoryError(f"no S3 credentials for {self.location}: {exc}",
                                  "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                                  ) from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise TransientError(f"cannot reach S3 endpoint {self.endpoint} for {self.location}: "
                                 f"{exc}", "check AWS_ENDPOINT_URL (or endpoint= in the location) "
                                 "and that the store is running") from None
        except BotoCoreError as exc:
            raise RepositoryError(f"S3 client error on {where}: {exc}",
                                  "check the S3 settings in the environment or ~/.aws") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).strip()

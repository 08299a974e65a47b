"""A repository in an S3 bucket, or in any store that speaks the S3 API.

Layout: a location ``s3://BUCKET/PREFIX`` stores the objects under the keys
``PREFIX/config``, ``PREFIX/keys/NAME``, ``PREFIX/index/NAME``, ``PREFIX/snapshots/NAME``,
``PREFIX/locks/NAME`` and ``PREFIX/data/XX/NAME``, where ``XX`` is the first two hex digits
of the pack id, as in a local repository. S3 has no folders, so creating a repository
writes nothing until the repository layer writes the key slot and the config.

Every write is one PUT, which S3 applies atomically. Objects are immutable: a PUT sends
``If-None-Match: *``, and when a write meets an existing object with the same name, the
write succeeds if the stored bytes are identical (a retried request) and raises
:class:`StorageError` if they differ.

The endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, and credentials
and region from the usual AWS variables and files. The region defaults to ``us-east-1``.
One client serves every thread, because boto3 clients are thread-safe and sessions are not.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, SSLError

from backvault.errors import UsageError
from backvault.storage.base import KINDS, ObjectNotFoundError, StorageError
from backvault.storage.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

T = TypeVar("T")

SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"
# Checked in this order, as the AWS SDKs do: the variable for S3 wins over the general one.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# Set to "true", this AWS variable makes clients ignore the endpoint variables above.
IGNORE_ENDPOINTS_VARIABLE = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
CREDENTIALS_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired",
})
# Error codes that S3 and compatible stores return when a request may succeed if repeated.
TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException",
    "RequestThrottled", "RequestLimitExceeded", "TooManyRequestsException", "RequestTimeout",
    "RequestTimeoutException", "PriorRequestNotComplete",
    # A conditional write conflicted with another write of the same key in flight.
    "ConditionalRequestConflict",
})

CREDENTIALS_HINT = (
    "Check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the "
    "permissions of that identity on the bucket."
)


def parse_location(location: str) -> tuple[str, str]:
    """Split ``s3://BUCKET/PREFIX`` into the bucket and the prefix without outer slashes."""
    if not location.lower().startswith(SCHEME):
        raise UsageError(f"{location!r} is not an S3 location", hint="Use s3://BUCKET/PREFIX.")
    bucket, _, prefix = location[len(SCHEME) :].partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise UsageError(
            f"the S3 location {location!r} names no bucket", hint="Use s3://BUCKET/PREFIX."
        )
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(
            f"the S3 location {location!r} has an empty, '.' or '..' part in its prefix",
            hint="Use a prefix of plain names separated by single slashes.",
        )
    return bucket, prefix


def create_client(*, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """Create an S3 client from the AWS environment variables and configuration files.

    botocore's own retries are switched off because :class:`S3Backend` retries every
    request itself, and two layers would multiply the attempts.
    """
    session = boto3.session.Session()
    if endpoint_url is None and os.environ.get(IGNORE_ENDPOINTS_VARIABLE, "").lower() != "true":
        endpoint_url = next(
            (os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None
        )
    if region is None:
        region = os.environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
    )
    try:
        return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    except ValueError as error:
        raise UsageError(
            f"invalid S3 endpoint {endpoint_url!r}: {error}",
            hint="Set AWS_ENDPOINT_URL to a URL such as https://s3.example.com, or unset it "
            "to use AWS.",
        ) from error


def is_transient_error(error: Exception) -> bool:
    """Return whether a failed S3 request may succeed if it is sent again."""
    if isinstance(error, ClientError):
        status = _http_status(error)
        if status == 501:  # Not Implemented: the endpoint lacks the feature for good.
            return False
        return status >= 500 or status == 429 or _error_code(error) in TRANSIENT_CODES
    if isinstance(error, SSLError):
        # Certificate and TLS setup errors do not go away by themselves.
        return False
    # Refused or dropped connections, timeouts and responses cut short.
    return isinstance(error, BotoCoreError) and not isinstance(error, NoCredentialsError)


class S3Backend:
    """Objects stored under one prefix of an S3 bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._key_prefix = f"{self.prefix}/" if self.prefix else ""
        self._client = client if client is not None else create_client()
        self._retry_policy = retry_policy
        # Cleared when the endpoint rejects If-None-Match as not implemented.
        # NOTE: an endpoint that ignores the header without an error cannot be detected,
        # and there a write replaces an existing object.
        self.conditional_writes = True

    @classmethod
    def from_location(cls, location: str) -> S3Backend:
        """Open ``s3://BUCKET/PREFIX`` with a client configured from the environment."""
        bucket, prefix = parse_location(location)
        return cls(bucket, prefix)

    @property
    def location(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    @property
    def endpoint_url(self) -> str:
        return str(self._client.meta.endpoint_url)

    # Repository -----------------------------------------------------------------------

    def exists_repository(self) -> bool:
        if self._head(self._key("config", "config")) is not None:
            return True
        # A HEAD request returns 404 for a missing bucket as for a missing key, so check
        # the bucket to report a missing one by name.
        self._check_bucket()
        return False

    def create_repository(self) -> None:
        self._check_bucket()
        response = self._request(
            "LIST",
            self._key_prefix,
            functools.partial(
                self._client.list_objects_v2,
                Bucket=self.bucket, Prefix=self._key_prefix, MaxKeys=1,
            ),
        )
        if response.get("KeyCount", 0) > 0:
            where = f"the prefix {self.location}" if self.prefix else f"the bucket {self.bucket}"
            raise StorageError(
                f"{where} already contains objects",
                hint="Choose a new prefix, or an empty bucket, for the repository.",
            )

    # Objects --------------------------------------------------------------------------

    def exists(self, kind: str, name: str) -> bool:
        return self._head(self._key(kind, name)) is not None

    def read(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"invalid byte range: offset {offset}, length {length}")
        key = self._key(kind, name)
        if length == 0:
            if self._head(key) is None:
                raise self._not_found(key)
            return b""

        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            arguments["Range"] = f"bytes={offset}-{end}"

        def get() -> bytes:
            try:
                response = self._client.get_object(**arguments)
            except ClientError as error:
                # The range starts at or after the end of the object. A local file read
                # returns no bytes there, and so does this backend.
                if _http_status(error) == 416 or _error_code(error) == "InvalidRange":
                    return b""
                raise
            body: bytes = response["Body"].read()
            if "Range" in arguments and response["ResponseMetadata"]["HTTPStatusCode"] != 206:
                # The endpoint ignored the Range header and sent the whole object.
                body = body[offset:] if length is None else body[offset : offset + length]
            return body

        return self._request("GET", key, get)

    def write(self, kind: str, name: str, data: bytes | bytearray | memoryview) -> None:
        key = self._key(kind, name)
        # bytes, not a memoryview: botocore needs a body that it can send again on a retry.
        body = data if isinstance(data, bytes) else bytes(data)

        if self.conditional_writes:
            outcome = self._request("PUT", key, functools.partial(self._put_if_absent, key, body))
            if outcome == "created":
                return
            if outcome == "exists":
                self._check_same_content(key, body)
                return
            self.conditional_writes = False

        # NOTE: without conditional writes, another client may create the object between
        # the HEAD and the PUT, and the PUT then replaces it. Names of packs, index files
        # and snapshots are hashes of their content, so such a race rewrites the same bytes.
        if self._head(key) is not None:
            self._check_same_content(key, body)
            return
        self._request(
            "PUT",
            key,
            functools.partial(self._client.put_object, Bucket=self.bucket, Key=key, Body=body),
        )

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        if kind not in KINDS:
            raise ValueError(f"unknown object kind {kind!r}")
        if kind == "config":
            head = self._head(self._key("config", "config"))
            if head is not None:
                yield "config", int(head["ContentLength"])
            return

        prefix = f"{self._key_prefix}{kind}/"
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self._request(
                "LIST", prefix, functools.partial(self._client.list_objects_v2, **arguments)
            )
            for item in page.get("Contents", []):
                name = _name_from_relative_key(kind, item["Key"][len(prefix) :])
                if name is not None:
                    yield name, int(item["Size"])
            if not page.get("IsTruncated"):
                return
            arguments["ContinuationToken"] = page["NextContinuationToken"]

    def delete(self, kind: str, name: str) -> None:
        key = self._key(kind, name)
        # S3 reports success for a DELETE of a missing key, but the Backend contract
        # raises ObjectNotFoundError, so look first.
        if self._head(key) is None:
            raise self._not_found(key)
        self._request(
            "DELETE",
            key,
            functools.partial(self._client.delete_object, Bucket=self.bucket, Key=key),
        )

    # Helpers --------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown object kind {kind!r}")
        if kind == "config":
            return f"{self._key_prefix}config"
        if not _is_valid_name(name):
            raise ValueError(f"invalid object name {name!r}")
        if kind == "data":
            return f"{self._key_prefix}data/{name[:2]}/{name}"
        return f"{self._key_prefix}{kind}/{name}"

    def _url(self, key: str) -> str:
        return f"{SCHEME}{self.bucket}/{key}"

    def _put_if_absent(self, key: str, body: bytes) -> str:
        """Send a PUT with ``If-None-Match: *`` and return "created", "exists" or "unsupported"."""
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as error:
            if _http_status(error) == 412 or _error_code(error) == "PreconditionFailed":
                return "exists"
            if _http_status(error) == 501 or _error_code(error) == "NotImplemented":
                return "unsupported"
            raise
        return "created"

    def _check_same_content(self, key: str, body: bytes) -> None:
        """Accept a write that found its object already stored, if the bytes are the same."""
        stored = self._request(
            "GET",
            key,
            lambda: bytes(self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()),
        )
        if stored != body:
            raise StorageError(
                f"{self._url(key)} already exists with different content "
                f"({len(stored)} bytes stored, {len(body)} bytes written)",
                hint="Stored objects are never replaced. Run 'backvault check' to verify "
                "the repository.",
            )

    def _head(self, key: str) -> dict[str, Any] | None:
        """Return the metadata of ``key``, or None if it does not exist."""

        def head() -> dict[str, Any] | None:
            try:
                response: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _http_status(error) == 404 or _error_code(error) in NOT_FOUND_CODES:
                    return None
                raise
            return response

        return self._request("HEAD", key, head)

    def _check_bucket(self) -> None:
        self._request("HEAD", "", functools.partial(self._client.head_bucket, Bucket=self.bucket))

    def _request(self, method: str, key: str, operation: Callable[[], T]) -> T:
        """Run one S3 request with retries, and translate its errors into StorageError."""
        try:
            return call_with_retry(
                operation,
                is_transient=is_transient_error,
                description=f"S3 {method} {self._url(key)}",
                policy=self._retry_policy,
            )
        except ClientError as error:
            raise self._translate_client_error(method, key, error) from error
        except NoCredentialsError as error:
            raise StorageError(
                f"S3 {method} {self._url(key)} failed: no AWS credentials found",
                hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE.",
            ) from error
        except BotoCoreError as error:
            raise StorageError(
                f"S3 {method} {self._url(key)} failed after {self._retry_policy.attempts} "
                f"attempt(s): {error}",
                hint=f"Check the network and the endpoint {self.endpoint_url} "
                "(AWS_ENDPOINT_URL), then run the command again.",
            ) from error

    def _translate_client_error(self, method: str, key: str, error: ClientError) -> StorageError:
        code = _error_code(error)
        status = _http_status(error)
        url = self._url(key)

        if code == "NoSuchBucket" or (not key and status == 404):
            return StorageError(
                f"the bucket {self.bucket} does not exist at {self.endpoint_url}",
                hint=f"Create it first, for example with 'aws s3 mb s3://{self.bucket}', or "
                "check the bucket name and AWS_ENDPOINT_URL.",
            )
        if code in NOT_FOUND_CODES or status == 404:
            return self._not_found(key)
        if code in CREDENTIALS_CODES:
            return StorageError(
                f"S3 {method} {url} failed: the endpoint rejected the credentials ({code})",
                hint=CREDENTIALS_HINT,
            )
        if code in ("AccessDenied", "403") or status == 403:
            return StorageError(f"S3 {method} {url} failed: access denied", hint=CREDENTIALS_HINT)

        message = error.response.get("Error", {}).get("Message") or "no message"
        hint = (
            "The storage service had trouble; run the command again later."
            if is_transient_error(error)
            else None
        )
        return StorageError(
            f"S3 {method} {url} failed with HTTP status {status}: {code} ({message})", hint=hint
        )

    def _not_found(self, key: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(f"{self._url(key)} not found")


def _is_valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".")


def _name_from_relative_key(kind: str, relative: str) -> str | None:
    """Return the object name for a key below ``PREFIX/KIND/``, or None for a foreign key.

    Keys that this layout never produces, such as the empty "folder" objects some S3
    tools create, are skipped.
    """
    if kind == "data":
        folder, _, name = relative.partition("/")
        if folder != name[:2]:
            return None
    else:
        name = relative
    return name if _is_valid_name(name) else None


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)

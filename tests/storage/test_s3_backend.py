"""Tests of the S3 backend against a real moto server over HTTP, and of the retry helper."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from backvault import api
from backvault.errors import RepositoryExistsError, UsageError
from backvault.storage import LocalBackend, ObjectNotFoundError, StorageError, open_backend
from backvault.storage.retry import RetryPolicy, call_with_retry
from backvault.storage.s3 import S3Backend, create_client, is_transient_error, parse_location
from tests.helpers.moto import FAKE_SECRET_ACCESS_KEY, find_free_port, start_moto_server

PREFIX = "repo"
CLI_TIMEOUT = 60  # seconds for one backvault command, which usually takes about one
PACK_ID = "ab" + "0" * 62
LISTED_OBJECTS = 1100  # more than the 1000 keys of one ListObjectsV2 page


class RecordingSleep:
    """A stand-in for time.sleep that records each wait and runs an optional action."""

    def __init__(self, action: Callable[[], None] | None = None) -> None:
        self.waits: list[float] = []
        self._action = action

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self._action is not None:
            self._action()


def instant_policy(sleep: Callable[[float], None] | None = None) -> RetryPolicy:
    """Return a retry policy of five attempts that never really waits."""
    return RetryPolicy(attempts=5, sleep=sleep or RecordingSleep())


@pytest.fixture
def client(moto_endpoint: str) -> Any:
    return create_client()


@pytest.fixture
def backend(client: Any, s3_bucket: str) -> S3Backend:
    return S3Backend(s3_bucket, PREFIX, client=client, retry_policy=instant_policy())


def stored_keys(s3_client: Any, bucket: str) -> list[str]:
    response = s3_client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in response.get("Contents", []))


def record_requests(client: Any, operation: str) -> list[Any]:
    """Record every HTTP request the client sends for ``operation`` (such as "GetObject")."""
    requests: list[Any] = []

    def record(request: Any, **_: Any) -> None:
        requests.append(request)

    client.meta.events.register(f"before-send.s3.{operation}", record)
    return requests


# Locations and clients ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/prefix", ("bucket", "prefix")),
        ("s3://bucket/a/b/c/", ("bucket", "a/b/c")),
        ("S3://bucket/prefix", ("bucket", "prefix")),
    ],
)
def test_parse_location_valid(location: str, expected: tuple[str, str]) -> None:
    assert parse_location(location) == expected


@pytest.mark.parametrize(
    "location", ["s3://", "s3:///prefix", "s3://bucket/a//b", "s3://bucket/a/../b", "/tmp/x"]
)
def test_parse_location_invalid(location: str) -> None:
    with pytest.raises(UsageError):
        parse_location(location)


def test_open_backend_dispatches_by_scheme(moto_endpoint: str, tmp_path: Path) -> None:
    s3 = open_backend("s3://bucket/some/prefix")
    assert isinstance(s3, S3Backend)
    assert s3.location == "s3://bucket/some/prefix"
    assert s3.endpoint_url == moto_endpoint

    local = open_backend(str(tmp_path / "repository"))
    assert isinstance(local, LocalBackend)

    with pytest.raises(UsageError, match="unsupported repository location"):
        open_backend("ftp://host/repository")


def test_endpoint_from_environment(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    assert create_client().meta.endpoint_url == "http://127.0.0.1:2"

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert create_client().meta.endpoint_url == "http://127.0.0.1:1"

    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert create_client().meta.endpoint_url == "https://s3.amazonaws.com"


def test_region_defaults_to_us_east_1(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert create_client().meta.region_name == "us-east-1"

    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert create_client().meta.region_name == "eu-west-3"


def test_invalid_endpoint_is_usage_error(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    with pytest.raises(UsageError, match="invalid S3 endpoint"):
        create_client()


# Repository ---------------------------------------------------------------------------


def test_create_repository_writes_nothing(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    assert not backend.exists_repository()
    backend.create_repository()
    assert stored_keys(s3_client, s3_bucket) == []
    assert not backend.exists_repository()

    backend.write("config", "config", b"config bytes")
    assert backend.exists_repository()


def test_create_repository_rejects_used_prefix(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/notes.txt", Body=b"x")
    with pytest.raises(StorageError) as raised:
        backend.create_repository()
    assert f"s3://{s3_bucket}/{PREFIX}" in raised.value.message
    assert "already contains objects" in raised.value.message
    assert raised.value.hint is not None


def test_create_repository_ignores_sibling_prefix(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}-other/config", Body=b"x")
    backend.create_repository()


def test_create_repository_without_prefix_needs_empty_bucket(
    client: Any, s3_client: Any, s3_bucket: str
) -> None:
    backend = S3Backend(s3_bucket, "", client=client, retry_policy=instant_policy())
    assert backend.location == f"s3://{s3_bucket}"
    s3_client.put_object(Bucket=s3_bucket, Key="anything", Body=b"x")
    with pytest.raises(StorageError, match=f"the bucket {s3_bucket} already contains objects"):
        backend.create_repository()


def test_missing_bucket_is_named(client: Any) -> None:
    sleep = RecordingSleep()
    backend = S3Backend("no-such-bucket", PREFIX, client=client, retry_policy=instant_policy(sleep))
    checks: list[Callable[[], object]] = [
        backend.exists_repository,
        backend.create_repository,
        lambda: backend.read("keys", "slot"),
        lambda: backend.write("keys", "slot", b"x"),
        lambda: list(backend.list("keys")),
    ]
    for check in checks:
        with pytest.raises(StorageError) as raised:
            check()
        assert "the bucket no-such-bucket does not exist" in raised.value.message
        assert raised.value.hint is not None
        assert "aws s3 mb s3://no-such-bucket" in raised.value.hint
        assert FAKE_SECRET_ACCESS_KEY not in raised.value.message + raised.value.hint
    assert sleep.waits == []


# Objects ------------------------------------------------------------------------------


def test_object_keys_mirror_local_layout(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    backend.write("config", "config", b"c")
    backend.write("keys", "slot1", b"k")
    backend.write("data", PACK_ID, b"d")
    backend.write("index", "index1", b"i")
    backend.write("snapshots", "snapshot1", b"s")
    backend.write("locks", "lock1", b"l")

    assert stored_keys(s3_client, s3_bucket) == [
        f"{PREFIX}/config",
        f"{PREFIX}/data/ab/{PACK_ID}",
        f"{PREFIX}/index/index1",
        f"{PREFIX}/keys/slot1",
        f"{PREFIX}/locks/lock1",
        f"{PREFIX}/snapshots/snapshot1",
    ]


def test_write_read_exists_delete(backend: S3Backend) -> None:
    assert not backend.exists("data", PACK_ID)

    backend.write("data", PACK_ID, b"pack bytes")
    assert backend.exists("data", PACK_ID)
    assert backend.read("data", PACK_ID) == b"pack bytes"

    backend.delete("data", PACK_ID)
    assert not backend.exists("data", PACK_ID)
    with pytest.raises(ObjectNotFoundError):
        backend.read("data", PACK_ID)


def test_write_accepts_memoryview_and_bytearray(backend: S3Backend) -> None:
    backend.write("keys", "from-view", memoryview(b"0123456789")[2:6])
    backend.write("keys", "from-bytearray", bytearray(b"abc"))
    assert backend.read("keys", "from-view") == b"2345"
    assert backend.read("keys", "from-bytearray") == b"abc"


def test_missing_object_errors(backend: S3Backend, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/{PREFIX}/keys/absent"
    with pytest.raises(ObjectNotFoundError, match=url):
        backend.read("keys", "absent")
    with pytest.raises(ObjectNotFoundError, match=url):
        backend.read("keys", "absent", 0, 0)
    with pytest.raises(ObjectNotFoundError, match=url):
        backend.delete("keys", "absent")
    assert not backend.exists("keys", "absent")


RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (100, None),
        (0, 10),
        (0, 1024),
        (500, 24),
        (1023, 1),
        (1000, 100),  # runs past the end: the bytes up to the end
        (1024, None),  # starts at the end: no bytes
        (2000, 5),  # starts after the end: no bytes
        (10, 0),
    ],
)
def test_read_byte_range(
    backend: S3Backend, client: Any, offset: int, length: int | None
) -> None:
    backend.write("data", PACK_ID, RANGE_DATA)
    requests = record_requests(client, "GetObject")

    data = backend.read("data", PACK_ID, offset, length)

    end = len(RANGE_DATA) if length is None else offset + length
    assert data == RANGE_DATA[offset:end]
    if length == 0:
        assert requests == []  # only a HEAD request, to report a missing object
    elif offset == 0 and length is None:
        assert len(requests) == 1
        assert "Range" not in requests[0].headers
    else:
        assert len(requests) == 1
        expected_end = "" if length is None else str(offset + length - 1)
        assert requests[0].headers["Range"] == f"bytes={offset}-{expected_end}".encode()


def test_read_empty_object(backend: S3Backend) -> None:
    backend.write("locks", "empty", b"")
    assert backend.read("locks", "empty") == b""
    assert backend.read("locks", "empty", 0, 10) == b""
    assert list(backend.list("locks")) == [("empty", 0)]


def test_read_rejects_negative_range(backend: S3Backend) -> None:
    with pytest.raises(ValueError, match="invalid byte range"):
        backend.read("data", PACK_ID, -1, 5)
    with pytest.raises(ValueError, match="invalid byte range"):
        backend.read("data", PACK_ID, 0, -5)


@pytest.mark.parametrize(
    ("kind", "name"),
    [("keys", ""), ("keys", "a/b"), ("keys", ".hidden"), ("data", "../x"), ("other", "name")],
)
def test_invalid_names_rejected(backend: S3Backend, kind: str, name: str) -> None:
    operations: list[Callable[[], object]] = [
        lambda: backend.write(kind, name, b"x"),
        lambda: backend.read(kind, name),
        lambda: backend.exists(kind, name),
        lambda: backend.delete(kind, name),
    ]
    for operation in operations:
        with pytest.raises(ValueError):
            operation()


# Immutability -------------------------------------------------------------------------


def test_rewrite_with_same_bytes_succeeds(backend: S3Backend) -> None:
    backend.write("index", "index1", b"same")
    backend.write("index", "index1", b"same")
    assert backend.read("index", "index1") == b"same"


def test_rewrite_with_other_bytes_rejected(backend: S3Backend, s3_bucket: str) -> None:
    backend.write("index", "index1", b"first")
    with pytest.raises(StorageError) as raised:
        backend.write("index", "index1", b"second version")
    assert f"s3://{s3_bucket}/{PREFIX}/index/index1" in raised.value.message
    assert "already exists with different content" in raised.value.message
    assert backend.read("index", "index1") == b"first"


def test_write_sends_if_none_match(backend: S3Backend, client: Any) -> None:
    requests = record_requests(client, "PutObject")
    backend.write("keys", "slot", b"x")
    assert [request.headers["If-None-Match"] for request in requests] == [b"*"]


class _Body:
    """The raw body of a fake HTTP response."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._content


def test_falls_back_without_conditional_writes(backend: S3Backend, client: Any) -> None:
    """An endpoint that returns 501 to If-None-Match gets a HEAD check before each PUT."""
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code>"
        b"<Message>A header you provided implies functionality that is not implemented"
        b"</Message></Error>"
    )

    def reject_conditional_put(request: Any, **_: Any) -> AWSResponse | None:
        if "If-None-Match" in request.headers:
            return AWSResponse(request.url, 501, {}, _Body(body))
        return None

    client.meta.events.register("before-send.s3.PutObject", reject_conditional_put)
    heads = record_requests(client, "HeadObject")

    backend.write("keys", "slot", b"first")
    assert not backend.conditional_writes
    assert backend.read("keys", "slot") == b"first"

    backend.write("keys", "slot", b"first")
    with pytest.raises(StorageError, match="already exists with different content"):
        backend.write("keys", "slot", b"other")
    assert backend.read("keys", "slot") == b"first"
    assert len(heads) == 3


def test_lost_put_response_is_retried(
    backend: S3Backend, client: Any, s3_client: Any, s3_bucket: str
) -> None:
    """A PUT that was stored but whose response was lost succeeds on the retry."""
    key = f"{PREFIX}/snapshots/snapshot1"
    puts: list[Any] = []

    def store_then_drop_connection(request: Any, **_: Any) -> None:
        puts.append(request)
        if len(puts) == 1:
            s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"snapshot")
            raise ConnectionClosedError(endpoint_url=request.url)

    client.meta.events.register("before-send.s3.PutObject", store_then_drop_connection)
    backend.write("snapshots", "snapshot1", b"snapshot")

    assert len(puts) == 2
    assert backend.read("snapshots", "snapshot1") == b"snapshot"


# Listing ------------------------------------------------------------------------------


def test_list_returns_names_and_sizes(backend: S3Backend) -> None:
    backend.write("keys", "slot1", b"1")
    backend.write("keys", "slot2", b"22")
    backend.write("data", "ab" + "1" * 62, b"333")
    backend.write("data", "cd" + "2" * 62, b"4444")
    backend.write("config", "config", b"55555")

    assert sorted(backend.list("keys")) == [("slot1", 1), ("slot2", 2)]
    assert sorted(backend.list("data")) == [("ab" + "1" * 62, 3), ("cd" + "2" * 62, 4)]
    assert list(backend.list("config")) == [("config", 5)]
    assert list(backend.list("snapshots")) == []


def test_list_skips_foreign_keys(backend: S3Backend, s3_client: Any, s3_bucket: str) -> None:
    backend.write("keys", "slot1", b"1")
    backend.write("data", PACK_ID, b"2")
    foreign = [
        f"{PREFIX}/keys/",  # an empty "folder" object
        f"{PREFIX}/keys/nested/slot",
        f"{PREFIX}/keys/.hidden",
        f"{PREFIX}/data/zz/{PACK_ID}",  # in the wrong data folder
        f"{PREFIX}/data/{PACK_ID}",  # not in a data folder
        f"{PREFIX}-other/keys/slot9",
    ]
    for key in foreign:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")

    assert list(backend.list("keys")) == [("slot1", 1)]
    assert list(backend.list("data")) == [(PACK_ID, 1)]


def test_list_paginates(backend: S3Backend, client: Any) -> None:
    names = [hashlib.sha256(str(index).encode()).hexdigest() for index in range(LISTED_OBJECTS)]

    # Eight threads share the backend, as the backup's pack writers do.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: backend.write("data", name, name.encode()[:7]), names))
    listings = record_requests(client, "ListObjectsV2")

    listed = list(backend.list("data"))

    assert sorted(listed) == sorted((name, 7) for name in names)
    assert len(listings) == 2


def test_delete_removes_only_that_object(backend: S3Backend) -> None:
    backend.write("locks", "lock1", b"1")
    backend.write("locks", "lock2", b"2")
    backend.delete("locks", "lock1")
    assert list(backend.list("locks")) == [("lock2", 1)]


# Retries ------------------------------------------------------------------------------


def test_connection_refused_fails_after_retries(moto_endpoint: str) -> None:
    endpoint = f"http://127.0.0.1:{find_free_port()}"
    sleep = RecordingSleep()
    backend = S3Backend(
        "bucket", PREFIX, client=create_client(endpoint_url=endpoint),
        retry_policy=instant_policy(sleep),
    )

    with pytest.raises(StorageError) as raised:
        backend.read("keys", "slot")

    assert len(sleep.waits) == 4
    assert "after 5 attempt(s)" in raised.value.message
    assert "s3://bucket/repo/keys/slot" in raised.value.message
    assert raised.value.hint is not None
    assert endpoint in raised.value.hint
    assert FAKE_SECRET_ACCESS_KEY not in raised.value.message + raised.value.hint


SEED = b"stored before the restart"

RESTART_OPERATIONS: dict[str, Callable[[S3Backend], object]] = {
    "write": lambda backend: backend.write("keys", "new", b"written"),
    "read": lambda backend: backend.read("keys", "seed"),
    "list": lambda backend: list(backend.list("keys")),
    "delete": lambda backend: backend.delete("keys", "seed"),
}
RESTART_RESULTS: dict[str, object] = {
    "write": None,
    "read": SEED,
    "list": [("seed", len(SEED))],
    "delete": None,
}


@pytest.mark.parametrize("operation", sorted(RESTART_OPERATIONS))
def test_operation_survives_server_restart(moto_endpoint: str, operation: str) -> None:
    """Stop the server, then restart it on the same port during the first backoff wait."""
    server = start_moto_server()
    servers = [server]
    client = create_client(endpoint_url=server.endpoint_url)

    def seed() -> None:
        client.create_bucket(Bucket="restart")
        client.put_object(Bucket="restart", Key=f"{PREFIX}/keys/seed", Body=SEED)

    def restart_once() -> None:
        if len(servers) == 1:
            servers.append(start_moto_server(server.port))
            seed()

    try:
        seed()
        sleep = RecordingSleep(restart_once)
        backend = S3Backend("restart", PREFIX, client=client, retry_policy=instant_policy(sleep))
        server.stop()

        result = RESTART_OPERATIONS[operation](backend)

        assert result == RESTART_RESULTS[operation]
        assert len(sleep.waits) >= 1
        assert len(servers) == 2
        if operation == "write":
            assert backend.read("keys", "new") == b"written"
        if operation == "delete":
            assert not backend.exists("keys", "seed")
    finally:
        for running in servers:
            running.stop()


def _client_error(status: int, code: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "test"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_client_error(500, "InternalError"), True),
        (_client_error(503, "SlowDown"), True),
        (_client_error(429, "TooManyRequests"), True),
        (_client_error(400, "Throttling"), True),
        (_client_error(400, "RequestTimeout"), True),
        (_client_error(409, "ConditionalRequestConflict"), True),
        (_client_error(501, "NotImplemented"), False),
        (_client_error(404, "NoSuchKey"), False),
        (_client_error(403, "AccessDenied"), False),
        (_client_error(412, "PreconditionFailed"), False),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ConnectionClosedError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (SSLError(endpoint_url="http://x", error="certificate verify failed"), False),
        (NoCredentialsError(), False),
        (ValueError("bug"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_is_transient_error(error: Exception, transient: bool) -> None:
    assert is_transient_error(error) is transient


def test_retry_succeeds_after_transient_errors() -> None:
    sleep = RecordingSleep()
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=100.0, sleep=sleep)
    outcomes: list[Exception | str] = [OSError("down"), OSError("down"), "done"]

    def operation() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = call_with_retry(
        operation, is_transient=lambda error: isinstance(error, OSError), description="test",
        policy=policy,
    )

    assert result == "done"
    assert len(sleep.waits) == 2
    assert 0.5 <= sleep.waits[0] <= 1.0
    assert 1.0 <= sleep.waits[1] <= 2.0


def test_retry_raises_other_errors_at_once() -> None:
    sleep = RecordingSleep()
    calls: list[int] = []

    def operation() -> None:
        calls.append(1)
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        call_with_retry(
            operation, is_transient=lambda error: isinstance(error, OSError),
            description="test", policy=RetryPolicy(sleep=sleep),
        )
    assert calls == [1]
    assert sleep.waits == []


def test_retry_gives_up_after_attempts() -> None:
    sleep = RecordingSleep()
    errors = [OSError(f"failure {number}") for number in range(3)]

    def operation() -> None:
        raise errors.pop(0)

    with pytest.raises(OSError, match="failure 2"):
        call_with_retry(
            operation, is_transient=lambda error: True, description="test",
            policy=RetryPolicy(attempts=3, sleep=sleep),
        )
    assert len(sleep.waits) == 2


def test_retry_delays_grow_and_are_capped() -> None:
    longest = RetryPolicy(base_delay=0.5, max_delay=3.0, uniform=lambda low, high: high)
    shortest = RetryPolicy(base_delay=0.5, max_delay=3.0, uniform=lambda low, high: low)

    assert [longest.delay(retry) for retry in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [shortest.delay(retry) for retry in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_retry_policy_rejects_zero_attempts() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


# End to end ---------------------------------------------------------------------------


def make_source_tree(root: Path) -> Path:
    """Create a small folder with text, binary, empty and nested files and a symlink."""
    source = root / "source"
    (source / "nested" / "deeper").mkdir(parents=True)
    (source / "notes.txt").write_text("backed up to S3\n" * 100)
    (source / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (source / "empty").write_bytes(b"")
    (source / "nested" / "deeper" / "file.txt").write_text("deep\n")
    (source / "link").symlink_to("notes.txt")
    return source


def restored_copy(target: Path, source: Path) -> Path:
    """Return where a restore into ``target`` puts the copy of ``source``."""
    return target / source.relative_to(source.anchor)


def test_api_backup_restore_check(
    moto_endpoint: str,
    s3_bucket: str,
    s3_client: Any,
    tmp_path: Path,
    assert_same_tree: Callable[[Path, Path], None],
) -> None:
    location = f"s3://{s3_bucket}/backups/laptop"
    source = make_source_tree(tmp_path)

    repository, recovery_key = api.init_repository(location)
    backup = api.backup(repository, [str(source)])
    assert backup.complete

    with pytest.raises(RepositoryExistsError):
        api.init_repository(location)

    # A second machine has only the location and the recovery key.
    reopened = api.open_repository(location, recovery_key=recovery_key.format())
    target = tmp_path / "restored"
    restore = api.restore(reopened, "latest", str(target))
    assert restore.damaged == []
    assert_same_tree(source, restored_copy(target, source))

    result = api.check(reopened, read_data=True)
    assert result.errors == []
    assert result.ok
    assert result.packs_read >= 1

    keys = stored_keys(s3_client, s3_bucket)
    assert all(key.startswith("backups/laptop/") for key in keys)
    assert "backups/laptop/config" in keys
    assert not any(key.startswith("backups/laptop/locks/") for key in keys)


def run_cli(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "backvault"
    return subprocess.run(
        [str(executable), *map(str, arguments)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
    )


def test_cli_backup_restore_check(
    moto_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    assert_same_tree: Callable[[Path, Path], None],
) -> None:
    location = f"s3://{s3_bucket}/cli"
    source = make_source_tree(tmp_path)
    key_file = tmp_path / "recovery-key.txt"
    target = tmp_path / "restored"

    init = run_cli("init", "--repo", location, "--json")
    assert init.returncode == 0, init.stderr
    key_file.write_text(json.loads(init.stdout)["recovery_key"] + "\n")

    common: list[str | Path] = ["--repo", location, "--recovery-key-file", key_file, "--json"]
    backup = run_cli("backup", *common, source)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["complete"] is True

    restore = run_cli("restore", "latest", "--target", target, *common)
    assert restore.returncode == 0, restore.stderr
    assert_same_tree(source, restored_copy(target, source))

    check = run_cli("check", "--read-data", *common)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["ok"] is True


def test_cli_reports_missing_bucket(moto_endpoint: str) -> None:
    result = run_cli("init", "--repo", "s3://missing-bucket/repo", "--json")

    assert result.returncode == 1
    assert "error: the bucket missing-bucket does not exist" in result.stderr
    assert "hint: Create it first" in result.stderr
    assert "Traceback" not in result.stderr

"""The blob API of a running server: objects, errors, isolation, append-only and quotas.

Every test talks HTTP to a real ``backvault server`` process and, after each fault,
checks that the server still responds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import time

import blake3
import httpx
import pytest

from backvault.server.auth import TOKEN_CACHE_SECONDS
from tests.server.conftest import TEST_MAX_OBJECT_SIZE, ServerProcess, unique_name

HASH_HEADER = "X-Content-Hash"


def object_path(repo: str, kind: str, name: str) -> str:
    return f"/v1/repos/{repo}/{kind}/{name}"


def put(client: httpx.Client, repo: str, kind: str, name: str, data: bytes) -> httpx.Response:
    digest = blake3.blake3(data).hexdigest()
    return client.put(
        object_path(repo, kind, name), content=data, headers={HASH_HEADER: f"blake3={digest}"}
    )


def new_repository(client: httpx.Client, **params: str) -> str:
    repo = unique_name("repo")
    response = client.post(f"/v1/repos/{repo}", params=params)
    assert response.status_code == 201, response.text
    return repo


def raw_request(
    server: ServerProcess, method: str, path: str, authorization: str
) -> tuple[int, str]:
    """Send a request with ``path`` exactly as given; httpx would resolve ``..`` first."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        body = b"x" if method == "PUT" else None
        headers = {"Authorization": authorization}
        if body is not None:
            headers[HASH_HEADER] = f"blake3={blake3.blake3(body).hexdigest()}"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def assert_alive(server: ServerProcess) -> None:
    assert server.is_running()
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


@pytest.fixture
def client(server: ServerProcess, account: tuple[str, str]) -> httpx.Client:
    return server.client(account[1])


# Objects ----------------------------------------------------------------------------


def test_put_get_head_list_delete(client: httpx.Client) -> None:
    repo = new_repository(client)
    data = secrets.token_bytes(1000)
    name = blake3.blake3(data).hexdigest()

    created = put(client, repo, "data", name, data)
    assert created.status_code == 201
    assert created.json()["created"] is True

    assert client.get(object_path(repo, "data", name)).content == data
    head = client.head(object_path(repo, "data", name))
    assert head.status_code == 200
    assert head.headers["content-length"] == "1000"
    listing = client.get(f"/v1/repos/{repo}/data").json()
    assert listing == {"objects": [{"name": name, "size": 1000}]}

    assert client.delete(object_path(repo, "data", name)).status_code == 204
    assert client.get(object_path(repo, "data", name)).status_code == 404
    assert client.head(object_path(repo, "data", name)).status_code == 404
    assert client.get(f"/v1/repos/{repo}/data").json() == {"objects": []}


def test_get_byte_ranges(client: httpx.Client) -> None:
    repo = new_repository(client)
    data = bytes(range(256)) * 4
    put(client, repo, "index", "ab", data)
    path = object_path(repo, "index", "ab")

    cases = {
        "bytes=0-9": (data[:10], "bytes 0-9/1024"),
        "bytes=1000-": (data[1000:], "bytes 1000-1023/1024"),
        "bytes=-24": (data[-24:], "bytes 1000-1023/1024"),
        "bytes=1020-5000": (data[1020:], "bytes 1020-1023/1024"),
    }
    for header, (expected, content_range) in cases.items():
        response = client.get(path, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == expected, header
        assert response.headers["content-range"] == content_range, header

    beyond = client.get(path, headers={"Range": "bytes=1024-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == "bytes */1024"


def test_same_bytes_again_is_idempotent(client: httpx.Client) -> None:
    repo = new_repository(client)
    data = b"same bytes"
    assert put(client, repo, "snapshots", "01", data).status_code == 201
    again = put(client, repo, "snapshots", "01", data)
    assert again.status_code == 200
    assert again.json()["created"] is False


def test_different_bytes_conflict(client: httpx.Client) -> None:
    repo = new_repository(client)
    assert put(client, repo, "keys", "0a", b"first").status_code == 201
    conflict = put(client, repo, "keys", "0a", b"second")
    assert conflict.status_code == 409
    assert "immutable" in conflict.json()["detail"]
    assert client.get(object_path(repo, "keys", "0a")).content == b"first"


def test_sha256_content_hash_accepted(client: httpx.Client) -> None:
    repo = new_repository(client)
    data = b"hashed with sha-256"
    response = client.put(
        object_path(repo, "index", "0b"), content=data,
        headers={HASH_HEADER: f"sha256={hashlib.sha256(data).hexdigest()}"},
    )
    assert response.status_code == 201


def test_wrong_content_hash_rejected(client: httpx.Client, server: ServerProcess) -> None:
    repo = new_repository(client)
    wrong = blake3.blake3(b"other bytes").hexdigest()
    response = client.put(
        object_path(repo, "data", "cc"), content=b"bytes", headers={HASH_HEADER: f"blake3={wrong}"}
    )
    assert response.status_code == 400
    assert "content hash mismatch" in response.json()["detail"]
    assert client.head(object_path(repo, "data", "cc")).status_code == 404

    missing = client.put(object_path(repo, "data", "cc"), content=b"bytes")
    assert missing.status_code == 400
    assert HASH_HEADER in missing.json()["detail"]
    assert_alive(server)


def test_invalid_names_rejected(client: httpx.Client, server: ServerProcess) -> None:
    repo = new_repository(client)
    bad_paths = [
        f"/v1/repos/{repo}/data/..",
        f"/v1/repos/{repo}/data/..%2F..%2Fconfig",
        f"/v1/repos/{repo}/data/ab%2F..%2F..%2Fetc",
        f"/v1/repos/{repo}/data/ABCDEF",
        f"/v1/repos/{repo}/data/.tmp-0011",
        f"/v1/repos/{repo}/data/{'a' * 129}",
        f"/v1/repos/{repo}/secrets/aa",
        f"/v1/repos/{repo}/config/other",
        f"/v1/repos/{repo}/data/aa/bb",
    ]
    token = client.headers["Authorization"]
    for path in bad_paths:
        for method in ("PUT", "GET", "DELETE"):
            status, body = raw_request(server, method, path, token)
            assert status == 400, (method, path, body)

    assert raw_request(server, "POST", "/v1/repos/..", token)[0] in (400, 404, 405)
    assert client.post("/v1/repos/.hidden").status_code == 400
    assert client.get(f"/v1/repos/{repo}/nothing").status_code == 400
    assert_alive(server)


def test_traversal_names_write_nothing_outside(
    client: httpx.Client, server: ServerProcess
) -> None:
    before = sorted(path.name for path in server.data_dir.iterdir())
    repo = new_repository(client)
    token = client.headers["Authorization"]
    for path in (f"/v1/repos/{repo}/data/../../../escaped",
                 f"/v1/repos/{repo}/data/..%2F..%2F..%2Fescaped"):
        assert raw_request(server, "PUT", path, token)[0] in (400, 404, 405)
    after = sorted(path.name for path in server.data_dir.iterdir())
    assert after == before
    assert not any(path.name == "escaped" for path in server.data_dir.rglob("*"))


def test_oversized_body_rejected(client: httpx.Client, server: ServerProcess) -> None:
    repo = new_repository(client)
    data = b"\0" * (TEST_MAX_OBJECT_SIZE + 1)
    response = put(client, repo, "data", "dd", data)
    assert response.status_code == 413
    assert str(TEST_MAX_OBJECT_SIZE) in response.json()["detail"]

    # Without Content-Length (chunked), the server counts while it reads.
    def chunks() -> object:
        for _ in range(5):
            yield b"\0" * (1024 * 1024)

    chunked = client.put(
        object_path(repo, "data", "de"), content=chunks(),  # type: ignore[arg-type]
        headers={HASH_HEADER: "blake3=00"},
    )
    assert chunked.status_code == 413
    assert client.head(object_path(repo, "data", "dd")).status_code == 404
    assert client.head(object_path(repo, "data", "de")).status_code == 404
    assert_alive(server)


def test_create_repository_twice(client: httpx.Client) -> None:
    repo = new_repository(client)
    assert client.post(f"/v1/repos/{repo}").status_code == 200
    put(client, repo, "config", "config", b"config bytes")
    again = client.post(f"/v1/repos/{repo}")
    assert again.status_code == 409
    names = [item["name"] for item in client.get("/v1/repos").json()["repositories"]]
    assert repo in names


def test_unknown_repository_not_found(client: httpx.Client) -> None:
    response = put(client, "never-created", "data", "aa", b"x")
    assert response.status_code == 404
    assert "create it first" in response.json()["detail"]


# Authentication ---------------------------------------------------------------------


def test_requests_without_valid_token_rejected(server: ServerProcess) -> None:
    _name, token = server.create_account()
    repo = new_repository(server.client(token))
    cases = {
        "no header": None,
        "unknown token": "bv_" + "A" * 43,
        "malformed JWT": "a.b.c",
    }
    for case, bad_token in cases.items():
        client = server.client(bad_token)
        for method, path in [
            ("GET", "/v1/account"),
            ("GET", f"/v1/repos/{repo}/data"),
            ("GET", object_path(repo, "data", "aa")),
            ("PUT", object_path(repo, "data", "aa")),
            ("DELETE", object_path(repo, "data", "aa")),
            ("POST", f"/v1/repos/{repo}"),
        ]:
            response = client.request(method, path, content=b"x" if method == "PUT" else None)
            assert response.status_code == 401, (case, method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")

    other_scheme = httpx.get(
        f"{server.url}/v1/account", headers={"Authorization": f"Basic {token}"}
    )
    assert other_scheme.status_code == 401
    assert_alive(server)


def test_revoked_token_rejected(server: ServerProcess) -> None:
    name, _ = server.create_account()
    issued = server.operator("token", "issue", name, "--json")
    assert issued.returncode == 0, issued.stderr
    details = json.loads(issued.stdout)
    client = server.client(details["token"])
    assert client.get("/v1/account").status_code == 200

    revoked = server.operator("token", "revoke", details["token_id"])
    assert revoked.returncode == 0, revoked.stderr
    response = _status_within_cache_period(client, "/v1/account", 401)
    assert "revoked" in response.json()["detail"]


def test_disabled_account_rejected(server: ServerProcess) -> None:
    name, token = server.create_account()
    assert server.operator("disable", name).returncode == 0
    response = _status_within_cache_period(server.client(token), "/v1/account", 403)
    assert "disabled" in response.json()["detail"]
    assert server.operator("enable", name).returncode == 0
    _status_within_cache_period(server.client(token), "/v1/account", 200)


def _status_within_cache_period(client: httpx.Client, path: str, status: int) -> httpx.Response:
    """GET ``path`` until it returns ``status``. The server may remember a token's account
    for TOKEN_CACHE_SECONDS, so an operator's change takes effect within that time."""
    deadline = time.monotonic() + TOKEN_CACHE_SECONDS + 2.0
    while True:
        response = client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response
        time.sleep(0.2)


def test_token_never_logged(server: ServerProcess) -> None:
    _, token = server.create_account()
    server.client(token).get("/v1/account")
    server.client(token + "x").get("/v1/account")
    log = server.log()
    assert token not in log
    assert token[3:20] not in log
    access_lines = [json.loads(line) for line in log.splitlines() if '"request"' in line]
    assert access_lines, "no access log lines"
    last = access_lines[-1]
    for field in ("account_id", "method", "path", "status", "bytes_sent", "duration_ms"):
        assert field in last
    assert last["client"] == "127.0.0.1"


# Isolation --------------------------------------------------------------------------


def test_other_account_cannot_touch_repository(server: ServerProcess) -> None:
    _, token_a = server.create_account()
    _, token_b = server.create_account()
    owner, intruder = server.client(token_a), server.client(token_b)
    repo = new_repository(owner)
    assert put(owner, repo, "data", "aa", b"secret").status_code == 201
    assert put(owner, repo, "locks", "bb", b"lock").status_code == 201

    checks = [
        intruder.get(object_path(repo, "data", "aa")),
        intruder.head(object_path(repo, "data", "aa")),
        intruder.get(f"/v1/repos/{repo}/data"),
        intruder.delete(object_path(repo, "data", "aa")),
        intruder.delete(object_path(repo, "locks", "bb")),
        put(intruder, repo, "data", "ab", b"planted"),
        put(intruder, repo, "data", "aa", b"secret"),
    ]
    for response in checks:
        assert response.status_code == 404, (response.request.method, response.request.url)
        assert "secret" not in response.text
    listing = intruder.get("/v1/repos").json()["repositories"]
    assert repo not in [item["name"] for item in listing]

    # The intruder's repository of the same name is a different one.
    assert intruder.post(f"/v1/repos/{repo}").status_code == 201
    assert intruder.get(object_path(repo, "data", "aa")).status_code == 404
    assert owner.get(object_path(repo, "data", "aa")).content == b"secret"
    assert owner.get(f"/v1/repos/{repo}/data").json()["objects"] == [{"name": "aa", "size": 6}]


# Append-only and quota --------------------------------------------------------------


def test_append_only_account(server: ServerProcess) -> None:
    _, token = server.create_account(append_only=True)
    client = server.client(token)
    repo = new_repository(client)
    for kind in ("data", "index", "snapshots", "keys"):
        assert put(client, repo, kind, "aa", b"kept").status_code == 201
        denied = client.delete(object_path(repo, kind, "aa"))
        assert denied.status_code == 403, kind
        assert "append-only" in denied.json()["detail"]
        assert put(client, repo, kind, "aa", b"overwritten").status_code == 409
        assert client.get(object_path(repo, kind, "aa")).content == b"kept"

    assert put(client, repo, "locks", "cc", b"lock").status_code == 201
    assert client.delete(object_path(repo, "locks", "cc")).status_code == 204
    assert_alive(server)


def test_append_only_repository(client: httpx.Client) -> None:
    repo = new_repository(client, append_only="true")
    assert put(client, repo, "snapshots", "aa", b"snapshot").status_code == 201
    assert client.delete(object_path(repo, "snapshots", "aa")).status_code == 403
    assert put(client, repo, "locks", "bb", b"lock").status_code == 201
    assert client.delete(object_path(repo, "locks", "bb")).status_code == 204

    # Creating it again without the flag does not lift it.
    assert client.post(f"/v1/repos/{repo}").status_code == 409
    assert client.delete(object_path(repo, "snapshots", "aa")).status_code == 403


def test_quota_exceeded(server: ServerProcess) -> None:
    _, token = server.create_account(quota=10000)
    client = server.client(token)
    repo = new_repository(client)
    assert put(client, repo, "data", "a1", b"\1" * 6000).status_code == 201
    full = put(client, repo, "data", "a2", b"\2" * 6000)
    assert full.status_code == 507
    assert "quota exceeded" in full.json()["detail"]
    assert client.head(object_path(repo, "data", "a2")).status_code == 404

    # Deleting frees the space again.
    assert client.delete(object_path(repo, "data", "a1")).status_code == 204
    assert put(client, repo, "data", "a2", b"\2" * 6000).status_code == 201
    account = client.get("/v1/account").json()
    assert account["used_bytes"] == 6000
    assert account["quota_bytes"] == 10000
    assert_alive(server)


# Operations -------------------------------------------------------------------------


def test_health_metrics_and_openapi(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}

    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200
    assert "backvault_http_requests_total" in metrics.text
    assert "backvault_http_request_duration_seconds_bucket" in metrics.text
    assert "backvault_http_received_bytes_total" in metrics.text

    document = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/repos/{repo}/{kind}/{name}" in document["paths"]
    assert "/healthz" in document["paths"]

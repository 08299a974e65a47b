"""Tests of the loopback hand-off listener, with real HTTP requests to it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backvault.errors import UsageError
from backvault.passkey.handoff import MAX_BODY_SIZE, Handoff, HandoffError, origin_of

ORIGIN = "http://localhost:8443"
RESULT = {"kind": "authenticate", "credential_id": "AAEC", "prf": "A" * 43}


@pytest.fixture
def handoff() -> Iterator[Handoff]:
    with Handoff(ORIGIN, timeout=5.0) as listener:
        yield listener


def post(
    handoff: Handoff,
    body: dict[str, Any] | bytes,
    *,
    origin: str | None = ORIGIN,
    content_type: str = "application/json",
    path: str = "/handoff",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    request_headers = {"Content-Type": content_type, **(headers or {})}
    if origin is not None:
        request_headers["Origin"] = origin
    return httpx.post(
        f"http://127.0.0.1:{handoff.port}{path}", content=content, headers=request_headers,
        timeout=5.0,
    )


def with_state(handoff: Handoff, **fields: Any) -> dict[str, Any]:
    return {"state": handoff.state, **fields}


# Accepted posts ------------------------------------------------------------------------


def test_listener_is_on_loopback(handoff: Handoff) -> None:
    assert handoff.port > 0
    assert len(handoff.state) >= 43


def test_right_post_is_accepted(handoff: Handoff) -> None:
    response = post(handoff, with_state(handoff, **RESULT))

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert handoff.wait() == with_state(handoff, **RESULT)


def test_wait_returns_post_made_later(handoff: Handoff) -> None:
    sender = threading.Timer(0.3, post, args=(handoff, with_state(handoff, **RESULT)))
    sender.start()
    try:
        assert handoff.wait()["prf"] == RESULT["prf"]
    finally:
        sender.join()


def test_content_type_with_charset_is_accepted(handoff: Handoff) -> None:
    response = post(
        handoff, with_state(handoff, **RESULT), content_type="application/json; charset=utf-8"
    )

    assert response.status_code == 200


def test_preflight_answers_page_origin(handoff: Handoff) -> None:
    response = httpx.options(
        f"http://127.0.0.1:{handoff.port}/handoff",
        headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
            "Access-Control-Request-Private-Network": "true",
        },
    )

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert response.headers["Access-Control-Allow-Headers"] == "content-type"
    assert response.headers["Access-Control-Allow-Private-Network"] == "true"


# Rejected posts ------------------------------------------------------------------------


def test_wrong_state_is_rejected_and_wait_goes_on(handoff: Handoff) -> None:
    wrong = post(handoff, {**RESULT, "state": handoff.state[:-1] + "x"})
    missing = post(handoff, RESULT)
    not_text = post(handoff, {**RESULT, "state": 12})
    right = post(handoff, with_state(handoff, **RESULT))

    assert wrong.status_code == 403
    assert missing.status_code == 403
    assert not_text.status_code == 403
    assert right.status_code == 200
    assert handoff.wait()["state"] == handoff.state


def test_replayed_state_is_rejected(handoff: Handoff) -> None:
    first = post(handoff, with_state(handoff, **RESULT))
    replay = post(handoff, with_state(handoff, **{**RESULT, "prf": "B" * 43}))

    assert first.status_code == 200
    assert replay.status_code == 409
    assert handoff.wait()["prf"] == RESULT["prf"]


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://localhost:8444", "https://localhost:8443", "null"]
)
def test_wrong_origin_is_rejected(handoff: Handoff, origin: str) -> None:
    response = post(handoff, with_state(handoff, **RESULT), origin=origin)

    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert post(handoff, with_state(handoff, **RESULT)).status_code == 200


def test_missing_origin_is_rejected(handoff: Handoff) -> None:
    response = post(handoff, with_state(handoff, **RESULT), origin=None)

    assert response.status_code == 403


def test_preflight_from_other_origin_is_rejected(handoff: Handoff) -> None:
    response = httpx.options(
        f"http://127.0.0.1:{handoff.port}/handoff",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


def test_oversized_body_is_rejected(handoff: Handoff) -> None:
    body = with_state(handoff, **RESULT, padding="x" * MAX_BODY_SIZE)

    response = post(handoff, body)

    assert response.status_code == 413
    assert post(handoff, with_state(handoff, **RESULT)).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_rejected(handoff: Handoff, content_type: str) -> None:
    response = post(handoff, with_state(handoff, **RESULT), content_type=content_type)

    assert response.status_code == 415
    assert post(handoff, with_state(handoff, **RESULT)).status_code == 200


def test_body_that_is_not_an_object_is_rejected(handoff: Handoff) -> None:
    assert post(handoff, b"{not json").status_code == 400
    assert post(handoff, b"[1, 2]").status_code == 400


def test_other_path_and_method_are_rejected(handoff: Handoff) -> None:
    other_path = post(handoff, with_state(handoff, **RESULT), path="/handoff/x")
    get = httpx.get(f"http://127.0.0.1:{handoff.port}/handoff", headers={"Origin": ORIGIN})

    assert other_path.status_code == 404
    assert get.status_code == 405


def test_other_host_header_is_rejected(handoff: Handoff) -> None:
    response = post(
        handoff, with_state(handoff, **RESULT), headers={"Host": f"localhost:{handoff.port}"}
    )

    assert response.status_code == 403


def test_post_without_length_is_rejected(handoff: Handoff) -> None:
    request = (
        "POST /handoff HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{handoff.port}\r\nOrigin: {ORIGIN}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", handoff.port), timeout=5) as connection:
        connection.sendall(request.encode())
        status_line = connection.recv(100).split(b"\r\n")[0]

    assert status_line.split()[1] == b"411"


# Errors and timeouts -------------------------------------------------------------------


def test_timeout_raises_handoff_error() -> None:
    with Handoff(ORIGIN, timeout=0.3) as handoff:
        started = time.monotonic()
        with pytest.raises(HandoffError) as raised:
            handoff.wait()

    assert time.monotonic() - started < 3
    assert raised.value.message == "timed out after 0.3 seconds waiting for the browser"
    assert isinstance(raised.value, UsageError)
    assert raised.value.hint is not None


def test_no_prf_post_raises_plain_error(handoff: Handoff) -> None:
    post(handoff, with_state(handoff, error="no-prf", message="This passkey cannot protect"))

    with pytest.raises(HandoffError) as raised:
        handoff.wait()

    assert raised.value.code == "no-prf"
    assert "cannot protect backups" in raised.value.message
    assert "PRF" in raised.value.message
    assert "No key slot was added" in (raised.value.hint or "")


@pytest.mark.parametrize(
    ("code", "words"), [("cancelled", "cancelled"), ("unsupported", "cannot use passkeys")]
)
def test_error_post_raises_plain_error(handoff: Handoff, code: str, words: str) -> None:
    post(handoff, with_state(handoff, error=code, message="details from the page"))

    with pytest.raises(HandoffError, match=words) as raised:
        handoff.wait()

    assert raised.value.code == code
    assert "from the page" not in raised.value.message
    assert raised.value.hint


@pytest.mark.parametrize("code", ["server", "new-code"])
def test_error_post_shows_page_reason(handoff: Handoff, code: str) -> None:
    post(handoff, with_state(handoff, error=code, message="the passkey did\x1b[31m not verify"))

    with pytest.raises(HandoffError) as raised:
        handoff.wait()

    assert "the passkey did" in raised.value.message
    assert "not verify" in raised.value.message
    assert "\x1b" not in raised.value.message


def test_error_post_uses_up_state(handoff: Handoff) -> None:
    post(handoff, with_state(handoff, error="cancelled"))

    assert post(handoff, with_state(handoff, **RESULT)).status_code == 409
    with pytest.raises(HandoffError):
        handoff.wait()


def test_listener_stops_on_exit() -> None:
    with Handoff(ORIGIN) as handoff:
        port = handoff.port

    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/handoff", json={}, headers={"Origin": ORIGIN})


# Origins -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://localhost:8443/passkey/enrol#x", "http://localhost:8443"),
        ("https://Backup.Example.com:443/passkey/unlock", "https://backup.example.com"),
        ("http://example.com:80/", "http://example.com"),
        ("http://[::1]:9000/a", "http://[::1]:9000"),
    ],
)
def test_origin_of_matches_browser_form(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def test_origin_of_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="ftp"):
        origin_of("ftp://example.com/")

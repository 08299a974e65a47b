"""The passkey API and pages: a real server, real Chromium and a virtual authenticator.

The pages run as a user would run them: loaded at ``http://localhost:PORT`` (the RP ID is
``localhost``), driven with the keyboard, and posting their result to a loopback listener
written here, in place of the command line's hand-off.
"""

from __future__ import annotations

import base64
import json
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, Request, Route

from backvault.passkey.ceremony import hash_ceremony_id
from backvault.server.metadata import Metadata, passkey_ceremonies
from tests.helpers.browser import (
    AuthenticatorPage,
    authenticator_page,
    save_screenshot,
)
from tests.server.conftest import ServerProcess, run_backvault, start_server

PAGE_TIMEOUT_MS = 20_000
POST_TIMEOUT = 20.0  # seconds to wait for the page's post to the loopback listener
POLL_INTERVAL_MS = 50
EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self' http://127.0.0.1:*; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# The loopback listener -------------------------------------------------------------------


class LoopbackListener:
    """Stands in for the command line: takes the page's posts on 127.0.0.1.

    It responds to the CORS preflight and accepts posts only from ``origin``, and it
    records every accepted body. It checks no state: the tests compare it themselves.
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.state = secrets.token_urlsafe(32)
        self.posts: queue.Queue[dict[str, Any]] = queue.Queue()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> LoopbackListener:
        self._thread.start()
        return self

    def close_unstarted(self) -> None:
        """Close the port without serving, as a command that stopped leaves it."""
        self._server.server_close()

    def __exit__(self, *_exception: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def next_post(self, page: Page) -> dict[str, Any]:
        """Wait for the page's next post.

        The wait runs through ``page``, because sync Playwright calls route handlers and
        other event callbacks only while a Playwright call is in progress.
        """
        deadline = time.monotonic() + POST_TIMEOUT
        while time.monotonic() < deadline:
            try:
                return self.posts.get_nowait()
            except queue.Empty:
                page.wait_for_timeout(POLL_INTERVAL_MS)
        raise AssertionError(f"the page posted nothing within {POST_TIMEOUT} s")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_OPTIONS(self) -> None:
                allowed = self.headers.get("Origin") == listener.origin
                self.send_response(204 if allowed else 403)
                if allowed:
                    self.send_header("Access-Control-Allow-Origin", listener.origin)
                    self.send_header("Access-Control-Allow-Methods", "POST")
                    self.send_header("Access-Control-Allow-Headers", "content-type")
                    self.send_header("Access-Control-Allow-Private-Network", "true")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                allowed = self.path == "/handoff" and self.headers.get("Origin") == listener.origin
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if allowed:
                    listener.posts.put(json.loads(body))
                self.send_response(200 if allowed else 403)
                self.send_header("Access-Control-Allow-Origin", listener.origin)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        return Handler


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default passkey settings: RP ID localhost, origin localhost:PORT."""
    process = start_server(tmp_path_factory.mktemp("passkey-server") / "data")
    yield process
    process.stop()


@dataclass
class PageRun:
    """What one run of a passkey page did."""

    post: dict[str, Any]  # the body the page posted to the loopback listener
    finish_bodies: list[str]  # the bodies the page posted to the server's finish route
    status: str  # the text of the page's status region at the end


def page_origin(server: ServerProcess) -> str:
    return f"http://localhost:{server.port}"


def page_address(
    server: ServerProcess, page: str, ceremony: str, listener: LoopbackListener
) -> str:
    return (
        f"{page_origin(server)}/passkey/{page}"
        f"#ceremony={ceremony}&port={listener.port}&state={listener.state}"
    )


def start_ceremony(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/passkeys/ceremonies", json=body)
    assert response.status_code == 201, response.text
    started: dict[str, Any] = response.json()
    return started


def start_registration(client: httpx.Client, name: str, prf_salt: bytes) -> str:
    started = start_ceremony(client, {"kind": "register", "name": name, "prf_salt": b64u(prf_salt)})
    ceremony: str = started["ceremony"]
    return ceremony


def start_authentication(client: httpx.Client, credential_id: str, prf_salt: bytes) -> str:
    started = start_ceremony(client, {
        "kind": "authenticate",
        "credentials": [{"id": credential_id, "prf_salt": b64u(prf_salt)}],
    })
    ceremony: str = started["ceremony"]
    return ceremony


def focus_button_with_keyboard(page: Page) -> None:
    """Reach the page's one button with Tab, and check that its focus is visible."""
    page.wait_for_selector("#start:not([disabled])")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.id")
    assert focused == "start"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")


def run_page(
    tab: AuthenticatorPage, address: str, listener: LoopbackListener, *,
    screenshots: Path | None = None, name: str = "",
) -> PageRun:
    """Open a passkey page, press its button from the keyboard and wait for the result."""
    page = tab.page
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    finish_bodies: list[str] = []

    def keep_finish_body(request: Request) -> None:
        if request.url.endswith("/finish") and request.post_data is not None:
            finish_bodies.append(request.post_data)

    page.on("request", keep_finish_body)
    try:
        page.goto(address)
        focus_button_with_keyboard(page)
        if screenshots is not None:
            save_screenshot(page, screenshots, f"{name}-ready")
        page.keyboard.press("Enter")
        post = listener.next_post(page)
        page.wait_for_selector("#status.done, #status.error")
        if screenshots is not None:
            save_screenshot(page, screenshots, f"{name}-finished")
    except Exception:
        print("\n".join(tab.console))
        raise
    finally:
        page.remove_listener("request", keep_finish_body)
    return PageRun(post, finish_bodies, page.inner_text("#status"))



@dataclass
class Enrolled:
    """A passkey registered through the enrol page, in an authenticator still open."""

    tab: AuthenticatorPage
    client: httpx.Client
    ceremony: str
    credential_id: str
    prf_salt: bytes
    prf_output: bytes
    run: PageRun


def enrol(
    tab: AuthenticatorPage, server: ServerProcess, client: httpx.Client, name: str, *,
    screenshots: Path | None = None,
) -> Enrolled:
    prf_salt = secrets.token_bytes(32)
    ceremony = start_registration(client, name, prf_salt)
    with LoopbackListener(page_origin(server)) as listener:
        run = run_page(
            tab, page_address(server, "enrol", ceremony, listener), listener,
            screenshots=screenshots, name="enrol",
        )
    assert run.post.get("state") == listener.state
    assert run.post.get("kind") == "register", run.post
    return Enrolled(
        tab, client, ceremony, run.post["credential_id"], prf_salt,
        from_b64u(run.post["prf"]), run,
    )


@pytest.fixture(scope="module")
def enrolled(
    chromium: Browser, passkey_server: ServerProcess, screenshots: Path
) -> Iterator[Enrolled]:
    """One account with a passkey enrolled through the page, its authenticator kept open."""
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client, authenticator_page(chromium) as tab:
        yield enrol(tab, passkey_server, client, "laptop", screenshots=screenshots)


def stored_rows(server: ServerProcess, table: sa.Table) -> list[Any]:
    metadata = Metadata(server.database_url)
    try:
        with metadata.engine.connect() as connection:
            return list(connection.execute(table.select()).all())
    finally:
        metadata.close()


# Enrolment and unlocking through the pages -------------------------------------------------


def test_enrol_page_posts_prf_to_loopback(enrolled: Enrolled) -> None:
    post = enrolled.run.post
    assert set(post) == {"state", "kind", "credential_id", "prf_create", "prf"}
    assert len(enrolled.prf_output) == 32
    # The virtual authenticator evaluates PRF at creation too, with the same salt.
    assert post["prf_create"] is not None
    assert from_b64u(post["prf_create"]) == enrolled.prf_output
    assert "Passkey created." in enrolled.run.status
    stored_ids = [from_b64u(item["credentialId"]) for item in enrolled.tab.credentials()]
    assert stored_ids == [from_b64u(enrolled.credential_id)]


def test_enrol_page_sends_no_prf_result_to_server(enrolled: Enrolled) -> None:
    (finish_body,) = enrolled.run.finish_bodies
    credential = json.loads(finish_body)["credential"]
    assert credential["clientExtensionResults"] == {"prf": {"enabled": True}}
    assert b64u(enrolled.prf_output) not in finish_body


def test_page_console_has_no_errors(enrolled: Enrolled) -> None:
    """The console has no error: no missing icon, no failed script."""
    errors = [line for line in enrolled.tab.console if line.startswith(("error", "page error"))]
    assert errors == []


def test_enrolled_passkey_is_listed(enrolled: Enrolled) -> None:
    response = enrolled.client.get("/v1/passkeys")
    assert response.status_code == 200
    (passkey,) = response.json()["passkeys"]
    assert passkey["id"] == enrolled.credential_id
    assert passkey["name"] == "laptop"
    assert passkey["prf"] is True
    assert passkey["created"].endswith("+00:00")


def test_unlock_page_returns_same_prf(
    enrolled: Enrolled, passkey_server: ServerProcess, screenshots: Path
) -> None:
    ceremony = start_authentication(enrolled.client, enrolled.credential_id, enrolled.prf_salt)
    with LoopbackListener(page_origin(passkey_server)) as listener:
        run = run_page(
            enrolled.tab, page_address(passkey_server, "unlock", ceremony, listener), listener,
            screenshots=screenshots, name="unlock",
        )
    assert run.post == {
        "state": listener.state, "kind": "authenticate",
        "credential_id": enrolled.credential_id, "prf": b64u(enrolled.prf_output),
    }
    assert "Passkey accepted." in run.status
    (finish_body,) = run.finish_bodies
    assert json.loads(finish_body)["credential"]["clientExtensionResults"] == {}
    assert b64u(enrolled.prf_output) not in finish_body

    (passkey,) = enrolled.client.get("/v1/passkeys").json()["passkeys"]
    assert passkey["last_used"] is not None


def test_unlock_with_other_salt_gives_other_prf(
    enrolled: Enrolled, passkey_server: ServerProcess
) -> None:
    ceremony = start_authentication(enrolled.client, enrolled.credential_id, bytes(32))
    with LoopbackListener(page_origin(passkey_server)) as listener:
        run = run_page(
            enrolled.tab, page_address(passkey_server, "unlock", ceremony, listener), listener
        )
    assert run.post["kind"] == "authenticate"
    assert from_b64u(run.post["prf"]) != enrolled.prf_output


def test_enrol_without_prf_is_refused(
    chromium: Browser, passkey_server: ServerProcess, screenshots: Path
) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client, authenticator_page(chromium, prf=False) as tab:
        ceremony = start_registration(client, "old phone", secrets.token_bytes(32))
        with LoopbackListener(page_origin(passkey_server)) as listener:
            run = run_page(
                tab, page_address(passkey_server, "enrol", ceremony, listener), listener,
                screenshots=screenshots, name="enrol-without-prf",
            )
        assert run.post["state"] == listener.state
        assert run.post["error"] == "no-prf"
        assert "cannot protect backups" in run.status
        assert "PRF" in run.status
        assert run.finish_bodies == []
        assert client.get("/v1/passkeys").json() == {"passkeys": []}
        # The page never finished the ceremony, so the server still offers it.
        assert client.get(f"/v1/passkeys/ceremonies/{ceremony}/options").status_code == 200


def test_enrolment_is_undone_when_the_command_is_gone(
    chromium: Browser, passkey_server: ServerProcess, screenshots: Path
) -> None:
    """A passkey created after its command stopped is deleted again by the page."""
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client, authenticator_page(chromium) as tab:
        ceremony = start_registration(client, "orphan", secrets.token_bytes(32))
        # The command stopped: its port is closed, and nothing listens there any more.
        listener = LoopbackListener(page_origin(passkey_server))
        listener.close_unstarted()
        page = tab.page
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(page_address(passkey_server, "enrol", ceremony, listener))
        focus_button_with_keyboard(page)
        page.keyboard.press("Enter")
        page.wait_for_selector("#status.error")
        save_screenshot(page, screenshots, "enrol-command-gone")

        assert "removed again" in page.inner_text("#status")
        assert client.get("/v1/passkeys").json()["passkeys"] == []
        assert tab.credentials() == []
        # The undo is used up with the passkey.
        undo = httpx.post(f"{passkey_server.url}/v1/passkeys/ceremonies/{ceremony}/undo")
        assert undo.status_code == 404


def test_undo_needs_a_finished_registration(passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client:
        ceremony = start_registration(client, "never finished", secrets.token_bytes(32))
    undo = httpx.post(f"{passkey_server.url}/v1/passkeys/ceremonies/{ceremony}/undo")
    assert undo.status_code == 404
    unknown = httpx.post(
        f"{passkey_server.url}/v1/passkeys/ceremonies/{secrets.token_urlsafe(32)}/undo"
    )
    assert unknown.status_code == 404


def test_server_rejects_registration_without_prf(
    chromium: Browser, passkey_server: ServerProcess
) -> None:
    """A finish that does not report PRF enabled stores nothing, whatever the page sent."""
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client, authenticator_page(chromium) as tab:
        ceremony = start_registration(client, "tampered", secrets.token_bytes(32))

        def drop_prf(route: Route) -> None:
            body = json.loads(route.request.post_data or "{}")
            body["credential"]["clientExtensionResults"] = {}
            route.continue_(post_data=json.dumps(body))

        tab.page.route("**/finish", drop_prf)
        with LoopbackListener(page_origin(passkey_server)) as listener:
            run = run_page(
                tab, page_address(passkey_server, "enrol", ceremony, listener), listener
            )
        assert run.post["error"] == "server"
        assert "PRF" in run.post["message"]
        assert "PRF" in run.status
        assert client.get("/v1/passkeys").json() == {"passkeys": []}


def test_tampered_assertion_is_rejected(
    enrolled: Enrolled, passkey_server: ServerProcess
) -> None:
    ceremony = start_authentication(enrolled.client, enrolled.credential_id, enrolled.prf_salt)

    def flip_signature(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        signature = bytearray(from_b64u(body["credential"]["response"]["signature"]))
        signature[-1] ^= 1
        body["credential"]["response"]["signature"] = b64u(bytes(signature))
        route.continue_(post_data=json.dumps(body))

    enrolled.tab.page.route("**/finish", flip_signature)
    try:
        with LoopbackListener(page_origin(passkey_server)) as listener:
            run = run_page(
                enrolled.tab, page_address(passkey_server, "unlock", ceremony, listener),
                listener,
            )
    finally:
        enrolled.tab.page.unroute("**/finish")
    assert run.post["error"] == "server"
    assert "did not verify" in run.post["message"]
    assert "prf" not in run.post


# Ceremonies that are used, expired or unknown ----------------------------------------------


def test_used_ceremony_is_rejected(enrolled: Enrolled, passkey_server: ServerProcess) -> None:
    """The enrol ceremony is used up: its options are gone and its finish is not replayed."""
    base = f"{passkey_server.url}/v1/passkeys/ceremonies/{enrolled.ceremony}"
    options = httpx.get(f"{base}/options")
    assert options.status_code == 404
    assert "expired or was already used" in options.json()["detail"]
    replay = httpx.post(
        f"{base}/finish", content=enrolled.run.finish_bodies[0],
        headers={"Content-Type": "application/json"},
    )
    assert replay.status_code == 404
    assert len(enrolled.client.get("/v1/passkeys").json()["passkeys"]) == 1


def test_ceremony_id_is_not_logged(enrolled: Enrolled, passkey_server: ServerProcess) -> None:
    """The access log contains no ceremony id, the key to its ceremony."""
    log = passkey_server.log()
    assert "/v1/passkeys/ceremonies/{ceremony}/options" in log
    assert enrolled.ceremony not in log


def test_unknown_ceremony_is_rejected(passkey_server: ServerProcess) -> None:
    base = f"{passkey_server.url}/v1/passkeys/ceremonies/{secrets.token_urlsafe(32)}"
    assert httpx.get(f"{base}/options").status_code == 404
    finish = httpx.post(f"{base}/finish", json={"credential": {"id": "AAAA"}})
    assert finish.status_code == 404
    assert "expired or was already used" in finish.json()["detail"]


def expire(server: ServerProcess, ceremony: str) -> None:
    """Move a ceremony's expiry into the past, as if 300 s had gone by."""
    metadata = Metadata(server.database_url)
    try:
        with metadata.engine.begin() as connection:
            result = connection.execute(
                passkey_ceremonies.update()
                .where(passkey_ceremonies.c.ceremony_hash == hash_ceremony_id(ceremony))
                .values(expires_ns=1)
            )
            assert result.rowcount == 1
    finally:
        metadata.close()


def test_expired_ceremony_is_rejected(
    chromium: Browser, passkey_server: ServerProcess, screenshots: Path
) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client:
        ceremony = start_registration(client, "late", secrets.token_bytes(32))
        assert client.get(f"/v1/passkeys/ceremonies/{ceremony}/options").status_code == 200
        expire(passkey_server, ceremony)
        assert client.get(f"/v1/passkeys/ceremonies/{ceremony}/options").status_code == 404
        finish = client.post(
            f"/v1/passkeys/ceremonies/{ceremony}/finish", json={"credential": {}}
        )
        assert finish.status_code == 404

    with authenticator_page(chromium) as tab, LoopbackListener(
        page_origin(passkey_server)
    ) as listener:
        tab.page.set_default_timeout(PAGE_TIMEOUT_MS)
        tab.page.goto(page_address(passkey_server, "enrol", ceremony, listener))
        post = listener.next_post(tab.page)
        tab.page.wait_for_selector("#status.error")
        save_screenshot(tab.page, screenshots, "enrol-expired")
        assert post["state"] == listener.state
        assert post["error"] == "server"
        assert "expired" in tab.page.inner_text("#status")
        assert tab.page.is_disabled("#start")


def test_ceremony_id_is_stored_hashed(passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client:
        ceremony = start_registration(client, "hashed", secrets.token_bytes(32))
    stored = {row.ceremony_hash for row in stored_rows(passkey_server, passkey_ceremonies)}
    assert hash_ceremony_id(ceremony) in stored
    assert ceremony not in stored


def test_finish_with_prf_results_is_rejected(passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    secret = b64u(secrets.token_bytes(32))
    with passkey_server.client(token) as client:
        ceremony = start_registration(client, "leaky", secrets.token_bytes(32))
        credential = {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {},
            "clientExtensionResults": {"prf": {"enabled": True, "results": {"first": secret}}},
        }
        finish = client.post(
            f"/v1/passkeys/ceremonies/{ceremony}/finish", json={"credential": credential}
        )
        assert finish.status_code == 400
        assert "PRF results" in finish.json()["detail"]
        # The rejected finish used the ceremony up.
        assert client.get(f"/v1/passkeys/ceremonies/{ceremony}/options").status_code == 404
        assert client.get("/v1/passkeys").json() == {"passkeys": []}
    assert secret not in passkey_server.log()


def test_finish_rejects_invalid_bodies(passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client:
        for body in (b"not json", b"[]", b'{"credential": "text"}', b"{}"):
            ceremony = start_registration(client, "invalid", secrets.token_bytes(32))
            finish = client.post(
                f"/v1/passkeys/ceremonies/{ceremony}/finish", content=body,
                headers={"Content-Type": "application/json"},
            )
            assert finish.status_code == 400, (body, finish.text)
        ceremony = start_registration(client, "large", secrets.token_bytes(32))
        large = client.post(
            f"/v1/passkeys/ceremonies/{ceremony}/finish",
            json={"credential": {"padding": "x" * 100_000}},
        )
        assert large.status_code == 413


# Starting ceremonies, listing and deleting ---------------------------------------------------


def test_start_rejects_invalid_requests(passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    cases = [
        ({"kind": "register", "name": "x", "prf_salt": b64u(bytes(16))}, 400, "32 bytes"),
        ({"kind": "register", "name": "x", "prf_salt": "not+base64"}, 400, "base64url"),
        ({"kind": "register", "name": "\x07bell", "prf_salt": b64u(bytes(32))}, 400, "name"),
        ({"kind": "register", "name": "x" * 201, "prf_salt": b64u(bytes(32))}, 422, ""),
        ({"kind": "authenticate", "credentials": []}, 422, ""),
        ({"kind": "unknown"}, 422, ""),
    ]
    with passkey_server.client(token) as client:
        for body, status, words in cases:
            response = client.post("/v1/passkeys/ceremonies", json=body)
            assert response.status_code == status, (body, response.text)
            assert words in response.text


def test_authenticate_with_unknown_credential(passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client:
        response = client.post("/v1/passkeys/ceremonies", json={
            "kind": "authenticate",
            "credentials": [{"id": b64u(b"no such credential"), "prf_salt": b64u(bytes(32))}],
        })
    assert response.status_code == 404
    assert "no passkey" in response.json()["detail"]


def test_start_returns_page_address(passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client:
        started = start_ceremony(
            client, {"kind": "register", "name": "x", "prf_salt": b64u(bytes(32))}
        )
        assert started["expires_in"] == 300
        assert started["enrol_page"] == (
            f"{page_origin(passkey_server)}/passkey/enrol#ceremony={started['ceremony']}"
        )
        options = client.get(f"/v1/passkeys/ceremonies/{started['ceremony']}/options").json()
    assert options["kind"] == "register"
    creation = options["options"]
    assert creation["rp"]["id"] == "localhost"
    assert creation["authenticatorSelection"]["userVerification"] == "required"
    assert creation["authenticatorSelection"]["residentKey"] == "preferred"
    assert [item["alg"] for item in creation["pubKeyCredParams"]] == [-7, -8, -257]
    assert creation["prf_salt"] == b64u(bytes(32))


def test_routes_need_a_token(passkey_server: ServerProcess) -> None:
    with passkey_server.client(None) as client:
        assert client.get("/v1/passkeys").status_code == 401
        assert client.delete("/v1/passkeys/AAAA").status_code == 401
        started = client.post(
            "/v1/passkeys/ceremonies",
            json={"kind": "register", "name": "x", "prf_salt": b64u(bytes(32))},
        )
        assert started.status_code == 401


def test_other_account_cannot_see_or_delete(
    enrolled: Enrolled, passkey_server: ServerProcess
) -> None:
    _, other_token = passkey_server.create_account()
    with passkey_server.client(other_token) as other:
        assert other.get("/v1/passkeys").json() == {"passkeys": []}
        assert other.delete(f"/v1/passkeys/{enrolled.credential_id}").status_code == 404
        borrowed = other.post("/v1/passkeys/ceremonies", json={
            "kind": "authenticate",
            "credentials": [{"id": enrolled.credential_id, "prf_salt": b64u(bytes(32))}],
        })
        assert borrowed.status_code == 404
    (passkey,) = enrolled.client.get("/v1/passkeys").json()["passkeys"]
    assert passkey["id"] == enrolled.credential_id


def test_delete_passkey(chromium: Browser, passkey_server: ServerProcess) -> None:
    _, token = passkey_server.create_account()
    with passkey_server.client(token) as client, authenticator_page(chromium) as tab:
        first = enrol(tab, passkey_server, client, "first")
        second = enrol(tab, passkey_server, client, "second")
        listed = client.get("/v1/passkeys").json()["passkeys"]
        assert [passkey["name"] for passkey in listed] == ["first", "second"]
        # Each passkey has its own user handle, so the second did not replace the first.
        assert len(tab.credentials()) == 2

        assert client.delete(f"/v1/passkeys/{first.credential_id}").status_code == 204
        assert client.delete(f"/v1/passkeys/{first.credential_id}").status_code == 404
        assert client.delete("/v1/passkeys/not+base64").status_code == 404
        listed = client.get("/v1/passkeys").json()["passkeys"]
        assert [passkey["id"] for passkey in listed] == [second.credential_id]
        # A deleted passkey cannot start an authentication any more.
        restart = client.post("/v1/passkeys/ceremonies", json={
            "kind": "authenticate",
            "credentials": [{"id": first.credential_id, "prf_salt": b64u(first.prf_salt)}],
        })
        assert restart.status_code == 404


# The pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/passkey/enrol", "/passkey/unlock", "/passkey/static/passkey.js",
    "/passkey/static/passkey.css",
])
def test_page_headers(passkey_server: ServerProcess, path: str) -> None:
    response = httpx.get(f"{page_origin(passkey_server)}{path}")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == EXPECTED_CSP
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("page, label", [
    ("enrol", "Create passkey"), ("unlock", "Unlock with passkey"),
])
def test_page_markup(passkey_server: ServerProcess, page: str, label: str) -> None:
    html = httpx.get(f"{page_origin(passkey_server)}/passkey/{page}").text
    assert '<html lang="en">' in html
    assert f'<button type="button" id="start" disabled>{label}</button>' in html
    assert 'role="status"' in html
    assert "style=" not in html
    assert "<style" not in html
    # The only script is the page's own file: the policy forbids inline scripts.
    assert html.count("<script") == 1
    assert '<script src="/passkey/static/passkey.js" defer></script>' in html
    assert "http://" not in html
    assert "https://" not in html


def test_page_rejects_incomplete_address(
    chromium: Browser, passkey_server: ServerProcess
) -> None:
    with authenticator_page(chromium) as tab:
        tab.page.goto(f"{page_origin(passkey_server)}/passkey/unlock#ceremony=abc")
        tab.page.wait_for_selector("#status.error")
        assert "incomplete" in tab.page.inner_text("#status")
        assert tab.page.is_disabled("#start")
        assert not any("Content Security Policy" in line for line in tab.console)


# Settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (["--passkey-rp-id", "https://example.com"], "invalid passkey RP ID"),
    (["--passkey-rp-id", "example.com", "--passkey-origin", "https://example.org"],
     "does not belong to the passkey RP ID"),
    (["--passkey-rp-id", "example.com"], "plain HTTP"),
    (["--passkey-origin", "http://localhost:99999"], "invalid port"),
    (["--passkey-origin", "ftp://localhost"], "invalid passkey origin"),
])
def test_server_rejects_bad_passkey_settings(
    tmp_path: Path, options: list[str], message: str
) -> None:
    result = run_backvault("server", "--data-dir", tmp_path / "data", *options, env={})
    assert result.returncode != 0
    assert message in result.stderr


def test_passkey_settings_from_file(tmp_path: Path) -> None:
    from backvault.server.config import build_config, read_config_file

    config_file = tmp_path / "server.toml"
    config_file.write_text(
        'data_dir = "data"\n'
        'passkey_rp_id = "example.com"\n'
        'passkey_origin = "https://backup.example.com:443/"\n'
    )
    config = build_config(read_config_file(config_file))
    assert config.passkey_rp_id == "example.com"
    assert config.passkey_origin == "https://backup.example.com"
    default = build_config({"data_dir": "data", "port": 9000})
    assert default.passkey_origin == "http://localhost:9000"

"""The loopback hand-off: how a passkey page in the browser returns its result to the CLI.

The command line listens on 127.0.0.1 on a random port and puts the port and a one-time
``state`` in the fragment of the page address. The page posts its result as JSON to
``http://127.0.0.1:PORT/handoff``. A post is accepted only if

- it is ``POST /handoff`` with ``Origin`` equal to the page's origin, so another web site
  open in the same browser cannot post, and ``Host`` equal to ``127.0.0.1:PORT``;
- its ``Content-Type`` is ``application/json`` and its body at most 16 KiB;
- its ``state`` equals the one-time state (compared in constant time): a wrong state gets
  403 and the listener keeps waiting, so a stray post cannot end the wait.

After one post is accepted, every later post gets 409, because the state is used up. The
listener responds to the CORS preflight (``OPTIONS /handoff``) for the page's origin only,
with ``Access-Control-Allow-Private-Network`` so that a page served from a public address
may reach the loopback address. Nothing in a request is logged: a post carries a PRF
output.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from backvault.errors import UsageError

HOST = "127.0.0.1"
PATH = "/handoff"
MAX_BODY_SIZE = 16 * 1024  # bytes; a result is a few hundred bytes
DEFAULT_TIMEOUT = 300.0  # seconds, the life of a ceremony on the server
REQUEST_TIMEOUT = 10.0  # seconds a connection may take to send its request
MAX_MESSAGE_LENGTH = 300  # characters of a page's error message shown to the user
DEFAULT_PORTS = {"http": 80, "https": 443}

# Plain words for the error codes a page posts, with what to do next.
ERROR_TEXT = {
    "no-prf": (
        "this passkey cannot protect backups: the authenticator or the browser does not "
        "support the PRF extension that backvault needs to derive a key",
        "No key slot was added. Try a passkey provider with PRF support (see 'Passkeys' in "
        "the README), or a security key with hmac-secret through --fido2-device.",
    ),
    "cancelled": (
        "the passkey request was cancelled in the browser, or it timed out there",
        "Run the command again, and confirm with your fingerprint, face, screen lock or "
        "security key when the browser asks.",
    ),
    "server": (
        "the backvault server rejected the passkey",
        "Run the command again; if it fails again, check the server's log.",
    ),
    "unsupported": (
        "this browser cannot use passkeys",
        "Open the address in a recent Chrome, Edge, Safari or Firefox.",
    ),
}


# At an unlock no key slot is being added, so a passkey without PRF needs other words.
UNLOCK_ERROR_TEXT = {
    "no-prf": (
        "the passkey gave the browser no key for this repository: this browser, or the "
        "device that keeps the passkey, does not support the PRF extension",
        "Open the address in the browser where you created the passkey, or in another "
        "browser with PRF support (see 'Passkeys' in the README); or open the repository "
        "with the recovery key.",
    ),
}


class HandoffError(UsageError):
    """The browser hand-off failed: a timeout, or the page reported an error.

    ``code`` is the page's error code and ``posted`` the page's error post, if any. An
    error post may name a ``credential_id`` that the server stored before the failure.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, code: str | None = None,
        posted: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.posted = posted


def origin_of(url: str) -> str:
    """Return the origin of ``url`` as a browser serializes it in the Origin header.

    Raises ValueError if ``url`` is not an http or https address.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http or https address: {url!r}")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    port = parts.port
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class Handoff:
    """A loopback listener that accepts one result from the page at ``origin``.

    Use it as a context manager: the listener runs from ``__enter__`` to ``__exit__``.
    """

    def __init__(
        self, origin: str, timeout: float = DEFAULT_TIMEOUT, *, unlocking: bool = False
    ) -> None:
        """``unlocking`` words the page's errors for an unlock rather than an enrolment."""
        self.origin = origin
        self.timeout = timeout
        self.unlocking = unlocking
        self.state = secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._result: dict[str, Any] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the hand-off listener is not running; use it in a with block")
        return int(self._server.server_address[1])

    def __enter__(self) -> Handoff:
        server = ThreadingHTTPServer((HOST, 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},
            name="passkey-handoff", daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def wait(self) -> dict[str, Any]:
        """Return the accepted post, or raise HandoffError on a timeout or an error post."""
        if not self._done.wait(self.timeout):
            raise HandoffError(
                f"timed out after {self.timeout:g} seconds waiting for the browser",
                hint="Open the address printed above in a browser on this computer, press "
                "the button on the page, then run the command again.",
            )
        assert self._result is not None
        return _result_or_error(self._result, unlocking=self.unlocking)

    def accept(self, body: dict[str, Any]) -> HTTPStatus:
        """Take ``body`` as the result if its state is right and none was taken before."""
        state = body.get("state")
        if not isinstance(state, str) or not hmac.compare_digest(
            state.encode("utf-8"), self.state.encode("ascii")
        ):
            return HTTPStatus.FORBIDDEN
        with self._lock:
            if self._result is not None:
                return HTTPStatus.CONFLICT
            self._result = body
        self._done.set()
        return HTTPStatus.OK


def _result_or_error(result: dict[str, Any], *, unlocking: bool) -> dict[str, Any]:
    """Turn an error post into a HandoffError with plain words."""
    code = result.get("error")
    if code is None:
        return result
    texts = {**ERROR_TEXT, **UNLOCK_ERROR_TEXT} if unlocking else ERROR_TEXT
    message, hint = texts.get(
        str(code),
        ("the passkey page reported an error", "Run the command again."),
    )
    # The page's own text adds something only where the plain words above are generic:
    # a server's reason, or an error this version does not know.
    page_message = result.get("message")
    known_cause = str(code) in ERROR_TEXT and code != "server"
    if isinstance(page_message, str) and page_message.strip() and not known_cause:
        message += f" (the page said: {_printable(page_message)})"
    raise HandoffError(message, hint=hint, code=str(code), posted=result)


def _printable(text: str) -> str:
    """Keep a page's message from garbling the terminal: no control characters, short."""
    cleaned = "".join(character if character.isprintable() else " " for character in text)
    return cleaned.strip()[:MAX_MESSAGE_LENGTH]


def _make_handler(handoff: Handoff) -> type[BaseHTTPRequestHandler]:
    class HandoffRequestHandler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT
        server_version = "backvault-handoff"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            # Requests are not logged: their bodies carry a PRF output.
            return

        def do_OPTIONS(self) -> None:
            if self.path != PATH or not self._origin_allowed():
                self._respond(HTTPStatus.FORBIDDEN, "not allowed")
                return
            self.send_response(HTTPStatus.NO_CONTENT)
            self.send_header("Access-Control-Allow-Origin", handoff.origin)
            self.send_header("Access-Control-Allow-Methods", "POST")
            self.send_header("Access-Control-Allow-Headers", "content-type")
            self.send_header("Access-Control-Allow-Private-Network", "true")
            self.send_header("Access-Control-Max-Age", "60")
            self.send_header("Vary", "Origin")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            status, error = self._check_request()
            if status is None:
                body = self._read_json()
                if body is None:
                    status, error = HTTPStatus.BAD_REQUEST, "the body is not a JSON object"
                else:
                    status = handoff.accept(body)
                    error = {
                        HTTPStatus.FORBIDDEN: "wrong state",
                        HTTPStatus.CONFLICT: "this state was already used",
                    }.get(status, "")
            self._respond(status, error)

        def do_GET(self) -> None:
            self._respond(HTTPStatus.METHOD_NOT_ALLOWED, "only POST is accepted")

        def _origin_allowed(self) -> bool:
            origin = self.headers.get("Origin", "")
            return hmac.compare_digest(origin.encode("utf-8", "replace"),
                                       handoff.origin.encode("utf-8"))

        def _check_request(self) -> tuple[HTTPStatus | None, str]:
            """Return the status of a post rejected before its body is read, or None."""
            if self.path != PATH:
                return HTTPStatus.NOT_FOUND, "not found"
            if not self._origin_allowed():
                return HTTPStatus.FORBIDDEN, "origin not allowed"
            if self.headers.get("Host", "") != f"{HOST}:{handoff.port}":
                return HTTPStatus.FORBIDDEN, "host not allowed"
            content_type = self.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected application/json"
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                return HTTPStatus.LENGTH_REQUIRED, "Content-Length is required"
            if int(length) > MAX_BODY_SIZE:
                return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body is too large"
            return None, ""

        def _read_json(self) -> dict[str, Any] | None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                body = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                return None
            return body if isinstance(body, dict) else None

        def _respond(self, status: HTTPStatus, error: str) -> None:
            payload = json.dumps({"error": error} if error else {"status": "accepted"})
            encoded = payload.encode("utf-8")
            self.send_response(status)
            if self._origin_allowed():
                self.send_header("Access-Control-Allow-Origin", handoff.origin)
                self.send_header("Vary", "Origin")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.send_header("Cache-Control", "no-store")
            if status >= HTTPStatus.BAD_REQUEST:
                # The body of a rejected request may be unread; do not reuse the connection.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(encoded)

    return HandoffRequestHandler

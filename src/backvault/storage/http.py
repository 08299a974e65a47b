"""A repository on a backvault server, reached over HTTP or HTTPS.

The address ``http(s)://HOST:PORT/NAME`` names repository NAME of the account that the
token belongs to. A longer path such as ``https://host/backvault/NAME`` puts the API under
the prefix ``/backvault``. The token comes from ``BACKVAULT_TOKEN`` or from the file that
``backvault login`` writes, ``$XDG_CONFIG_HOME/backvault/tokens.json`` (mode 0600).

Requests that fail on the way (connection errors, 429 and 5xx statuses) are sent again
with exponential backoff (see :mod:`backvault.storage.retry`). That is safe because every
operation is idempotent: objects are immutable, so storing the same bytes twice succeeds,
and creating an empty repository twice succeeds too. One ``httpx.Client`` keeps
connections open and is shared by the threads that upload packs.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import blake3
import httpx

from backvault import __version__
from backvault.errors import UsageError
from backvault.storage.base import ObjectNotFoundError, StorageError
from backvault.storage.retry import RetryPolicy, call_with_retry

ENV_TOKEN = "BACKVAULT_TOKEN"
ENV_CA_FILE = "BACKVAULT_CA_FILE"
TOKEN_FILE_NAME = "tokens.json"
CONTENT_HASH_HEADER = "X-Content-Hash"

# Waits of about 0.5, 1, 2, 4 and 8 seconds: enough for a server or its database to restart.
RETRY_POLICY = RetryPolicy(attempts=6, base_delay=0.5, max_delay=8.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # seconds; a 16 MiB pack on a slow uplink
MAX_CONNECTIONS = 8


# Addresses and saved tokens -------------------------------------------------------------


def split_server_address(
    url: str, *, noun: str = "server", form: str = "http(s)://HOST:PORT"
) -> tuple[str, str]:
    """Split a server address into ``(origin, path)``; ``noun`` and ``form`` word the error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid {noun} address {url!r}", hint=f"Use {form}.")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(
            f"invalid {noun} address {url!r}: it must not contain a query, a fragment or a "
            "user name",
            hint="Pass the token in BACKVAULT_TOKEN or with 'backvault login'.",
        )
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def split_address(url: str) -> tuple[str, str, str]:
    """Split a repository address into ``(origin, API prefix, repository name)``."""
    origin, path = split_server_address(
        url, form="http://HOST:PORT/NAME or https://HOST/NAME"
    )
    prefix, _, name = path.rpartition("/")
    return origin, prefix, name


def token_file() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
        os.path.expanduser("~"), ".config"
    )
    return Path(config_home) / "backvault" / TOKEN_FILE_NAME


def _read_token_file(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UsageError(
            f"cannot read the token file {path}: {error}",
            hint="Fix or delete the file, then run 'backvault login' again.",
        ) from error
    return saved if isinstance(saved, dict) else {}


def load_saved_token(origin: str) -> str | None:
    entry = _read_token_file(token_file()).get("servers", {}).get(origin)
    if isinstance(entry, dict) and isinstance(entry.get("token"), str):
        return str(entry["token"])
    return None


def save_token(origin: str, token: str) -> Path:
    """Store the token for ``origin`` in the token file, readable only by its owner."""
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = _read_token_file(path)
    servers = saved.setdefault("servers", {})
    servers[origin] = {"token": token}

    # Write a new file with mode 0600 from the start, then rename it over the old one, so
    # the token is never readable by others, not even for a moment.
    temporary = path.with_name(f".{TOKEN_FILE_NAME}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(saved, file, indent=2)
        file.write("\n")
    os.replace(temporary, path)
    return path


def find_token(origin: str) -> str:
    token = os.environ.get(ENV_TOKEN) or load_saved_token(origin)
    if not token:
        raise UsageError(
            f"no token for the backvault server {origin}",
            hint=f"Set {ENV_TOKEN}, or run 'backvault login {origin}' once.",
        )
    return token.strip()


def _verify_setting() -> ssl.SSLContext | bool:
    ca_file = os.environ.get(ENV_CA_FILE)
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(
            f"cannot load the CA certificates in {ENV_CA_FILE}={ca_file}: {error}"
        ) from error


def make_client(origin: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=origin,
        headers={"Authorization": f"Bearer {token}", "User-Agent": f"backvault/{__version__}"},
        timeout=TIMEOUT,
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        ),
        verify=_verify_setting(),
    )


def fetch_account(origin: str, prefix: str, token: str) -> dict[str, Any]:
    """Return the account that ``token`` belongs to, as the server describes it."""
    with make_client(origin, token) as client:
        response = send_with_retries(client, origin, "GET", f"{prefix}/v1/account")
    if response.status_code != 200:
        raise_for_status(origin, response, "read the account")
    account: dict[str, Any] = response.json()
    return account


# Requests -----------------------------------------------------------------------------


class _RetryableStatus(Exception):
    """A response with a status worth retrying, carried through the retry loop."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} {response.reason_phrase}")
        self.response = response


def _is_transient(error: Exception) -> bool:
    if isinstance(error, _RetryableStatus):
        return True
    # A certificate that fails verification fails the same way on every attempt.
    return isinstance(error, httpx.TransportError) and not _caused_by_tls_error(error)


def _caused_by_tls_error(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


UNREACHABLE_REPOSITORY_HINT = "Check that the server runs and that the address in --repo is right."


def send_with_retries(
    client: httpx.Client, origin: str, method: str, path: str,
    *, unreachable_hint: str = UNREACHABLE_REPOSITORY_HINT, **options: Any,
) -> httpx.Response:
    """Send a request, again after connection errors and 429 or 5xx responses.

    Returns the last response, whatever its status, and raises :class:`StorageError`
    only when the server could not be reached at all, with ``unreachable_hint``.
    """

    def attempt() -> httpx.Response:
        response = client.request(method, path, **options)
        if response.status_code in RETRY_STATUSES:
            raise _RetryableStatus(response)
        return response

    try:
        return call_with_retry(
            attempt, is_transient=_is_transient, description=f"{method} {origin}{path}",
            policy=RETRY_POLICY,
        )
    except _RetryableStatus as error:
        return error.response
    except httpx.TransportError as error:
        if _caused_by_tls_error(error):
            raise StorageError(
                f"TLS connection to the backvault server {origin} failed: {error}",
                hint=f"If the server uses a private CA, set {ENV_CA_FILE} to its certificate.",
            ) from error
        raise StorageError(
            f"cannot reach the backvault server {origin} after {RETRY_POLICY.attempts} "
            f"attempts: {error.__class__.__name__}: {error}",
            hint=unreachable_hint,
        ) from error


def _detail(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            return str(body["detail"])
    return response.text.strip()[:200] or response.reason_phrase


_HINTS = {
    401: "Set {env} to a valid token, or run 'backvault login {origin}' again.",
    403: "Ask the operator of {origin} if you need this.",
    404: "Check the repository name in --repo; 'backvault init' creates a repository.",
    409: "An object of this name already exists with other content; check that no other "
    "repository was created under the same name.",
    413: "Ask the operator of {origin} to raise the server's maximum object size.",
    507: "Delete old snapshots, or ask the operator of {origin} for a larger quota.",
}


def raise_for_status(origin: str, response: httpx.Response, action: str) -> None:
    """Raise a :class:`StorageError` that names the server, the failure and what to do."""
    status = response.status_code
    hint = _HINTS.get(status)
    if hint is None and status >= 500:
        hint = "Check the server's log, or try again later."
    raise StorageError(
        f"the backvault server {origin} could not {action}: {status} {_detail(response)}",
        hint=hint.format(env=ENV_TOKEN, origin=origin) if hint else None,
    )


# The backend --------------------------------------------------------------------------


class HttpBackend:
    """A repository stored on a backvault server."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self._url = url
        self._origin, prefix, name = split_address(url)
        if not name:
            raise UsageError(
                f"the server address {url!r} names no repository",
                hint=f"Add the repository name: {url.rstrip('/')}/NAME.",
            )
        self._name = name
        self._base = f"{prefix}/v1/repos/{quote(name, safe='')}"
        self._client = make_client(self._origin, token or find_token(self._origin))

    @property
    def location(self) -> str:
        return self._url

    def close(self) -> None:
        self._client.close()

    def exists_repository(self) -> bool:
        return self.exists("config", "config")

    def create_repository(self) -> None:
        response = self._send("POST", self._base)
        if response.status_code not in (200, 201):
            raise_for_status(self._origin, response, f"create repository {self._name!r}")

    def exists(self, kind: str, name: str) -> bool:
        response = self._send("HEAD", self._object_path(kind, name))
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise_for_status(self._origin, response, f"look up {kind}/{name}")
        return True

    def read(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        response = self._send("GET", self._object_path(kind, name), headers=headers)
        if response.status_code == 206:
            return response.content
        if response.status_code == 200:
            # A server may ignore Range and send the whole object.
            data = response.content
            return data[offset:] if length is None else data[offset:offset + length]
        if response.status_code == 416:
            return b""  # the range starts at or past the end, as a short local read would
        self._raise_for_object(response, kind, name, "read")
        raise AssertionError("unreachable")

    def write(self, kind: str, name: str, data: bytes | bytearray | memoryview) -> None:
        body = bytes(data)
        digest = blake3.blake3(body, max_threads=blake3.blake3.AUTO).hexdigest()
        response = self._send(
            "PUT", self._object_path(kind, name), content=body,
            headers={
                CONTENT_HASH_HEADER: f"blake3={digest}",
                "Content-Type": "application/octet-stream",
            },
        )
        if response.status_code not in (200, 201):
            raise_for_status(self._origin, response, f"store {kind}/{name}")

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        response = self._send("GET", f"{self._base}/{quote(kind, safe='')}")
        if response.status_code != 200:
            raise_for_status(self._origin, response, f"list the {kind} objects")
        for entry in response.json()["objects"]:
            yield str(entry["name"]), int(entry["size"])

    def delete(self, kind: str, name: str) -> None:
        response = self._send("DELETE", self._object_path(kind, name))
        if response.status_code not in (200, 204):
            self._raise_for_object(response, kind, name, "delete")

    def _object_path(self, kind: str, name: str) -> str:
        return f"{self._base}/{quote(kind, safe='')}/{quote(name, safe='')}"

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        return send_with_retries(self._client, self._origin, method, path, **options)

    def _raise_for_object(
        self, response: httpx.Response, kind: str, name: str, action: str
    ) -> None:
        if response.status_code == 404:
            raise ObjectNotFoundError(
                f"{kind}/{name} is missing from {self._url}: {_detail(response)}"
            )
        raise_for_status(self._origin, response, f"{action} {kind}/{name}")

"""The client of the vault's HTTP API, used by password key slots.

A vault address is a server address with an optional API prefix, such as
``https://backup.example`` or ``https://example.org/backvault``. The account token comes
from ``BACKVAULT_TOKEN`` or the file that ``backvault login`` writes, as for
repositories on a backvault server.

Login calls are sent again only when the connection could not be opened or the server
responded with 429, because the server counts a guess as soon as it receives KE1: sending KE1
again after a lost response would spend a second guess.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import quote

import httpx

from backvault.crypto.password_slot import (
    LoginChallenge,
    destroyed_record_error,
    wrong_password_error,
)
from backvault.errors import BackvaultError
from backvault.storage.base import StorageError
from backvault.storage.http import (
    RETRY_POLICY,
    find_token,
    make_client,
    raise_for_status,
    send_with_retries,
    split_server_address,
)
from backvault.storage.retry import call_with_retry


def split_vault_address(url: str) -> tuple[str, str]:
    """Split a vault address into ``(origin, API prefix)``."""
    return split_server_address(
        url, noun="vault", form="http(s)://HOST:PORT, as for 'backvault login'"
    )


class _RateLimited(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} {response.reason_phrase}")
        self.response = response


class HttpVaultClient:
    """The vault of a backvault server, reached with the account's token."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self._origin, prefix = split_vault_address(url)
        self._base = f"{prefix}/v1/vault"
        self._client = make_client(self._origin, token or find_token(self._origin))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpVaultClient:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.close()

    # Registration ---------------------------------------------------------------------

    def register_start(self, request: bytes) -> tuple[str, bytes]:
        response = self._send("POST", "/registrations", json={"request": _encode(request)})
        if response.status_code != 200:
            raise_for_status(self._origin, response, "start the password registration")
        body = _json(response)
        return str(body["record_id"]), _decode(body["response"], "response")

    def register_finish(
        self, record_id: str, record: bytes, wrapped_key: bytes, guess_limit: int | None
    ) -> None:
        payload: dict[str, Any] = {
            "record_id": record_id, "record": _encode(record),
            "wrapped_key": _encode(wrapped_key),
        }
        if guess_limit is not None:
            payload["guess_limit"] = guess_limit
        response = self._send("POST", "/records", json=payload)
        if response.status_code != 201:
            raise_for_status(self._origin, response, "store the password record")

    def list_records(self) -> list[dict[str, Any]]:
        response = self._send("GET", "/records")
        if response.status_code != 200:
            raise_for_status(self._origin, response, "list the vault records")
        records: list[dict[str, Any]] = _json(response)["records"]
        return records

    def delete_record(self, record_id: str) -> bool:
        response = self._send("DELETE", f"/records/{quote(record_id, safe='')}")
        if response.status_code == 404:
            return False
        if response.status_code != 204:
            raise_for_status(self._origin, response, f"delete vault record {record_id}")
        return True

    # Login ----------------------------------------------------------------------------

    def login_start(self, record_id: str, ke1: bytes) -> LoginChallenge:
        response = self._send_once(
            "POST", f"/records/{quote(record_id, safe='')}/logins", json={"ke1": _encode(ke1)}
        )
        if response.status_code == 410:
            raise destroyed_record_error(f"vault record {record_id}")
        if response.status_code == 409:
            raise BackvaultError(
                f"the vault {self.url} did not start the login: {_detail(response)}",
                hint="Another login with this password is unfinished; wait a minute and "
                "run the command again.",
            )
        if response.status_code != 200:
            raise_for_status(self._origin, response, "start the password login")
        body = _json(response)
        return LoginChallenge(
            login_id=str(body["login_id"]), ke2=_decode(body["ke2"], "ke2"),
            guesses_left=int(body["guesses_left"]),
        )

    def login_finish(self, login_id: str, ke3: bytes) -> bytes:
        response = self._send_once(
            "POST", f"/logins/{quote(login_id, safe='')}", json={"ke3": _encode(ke3)}
        )
        guesses_left = _json_or_empty(response).get("guesses_left")
        if response.status_code == 403 and isinstance(guesses_left, int):
            raise wrong_password_error(f"login {login_id}", guesses_left)
        if response.status_code != 200:
            raise_for_status(self._origin, response, "finish the password login")
        return _decode(_json(response)["release"], "release")

    def login_abort(self, login_id: str) -> int:
        response = self._send("DELETE", f"/logins/{quote(login_id, safe='')}")
        if response.status_code != 200:
            raise_for_status(self._origin, response, "end the failed password login")
        return int(_json(response)["guesses_left"])

    # Requests -------------------------------------------------------------------------

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        return send_with_retries(
            self._client, self._origin, method, self._base + path,
            unreachable_hint="Check that the key vault runs at this address (it was stored "
            "with the password's key slot), or open the repository with the recovery key.",
            **options,
        )

    def _send_once(self, method: str, path: str, **options: Any) -> httpx.Response:
        """Send a request that the server may count; again only if it was never received."""

        def attempt() -> httpx.Response:
            response = self._client.request(method, self._base + path, **options)
            if response.status_code == 429:
                raise _RateLimited(response)
            return response

        try:
            return call_with_retry(
                attempt,
                is_transient=lambda error: isinstance(error, (httpx.ConnectError, _RateLimited)),
                description=f"{method} {self._origin}{self._base}{path}",
                policy=RETRY_POLICY,
            )
        except _RateLimited as error:
            return error.response
        except httpx.TransportError as error:
            raise StorageError(
                f"the connection to the vault {self.url} failed: "
                f"{error.__class__.__name__}: {error}",
                hint="Check that the server runs, then try again; the failed attempt may "
                "have counted as one wrong password.",
            ) from error


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise StorageError(
            f"the vault responded with {response.status_code} and a body that is not a JSON object"
        )
    return body


def _detail(response: httpx.Response) -> str:
    detail = _json_or_empty(response).get("detail")
    return detail if isinstance(detail, str) else response.reason_phrase


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        return _json(response)
    except StorageError:
        return {}


def _encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _decode(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise StorageError(f"the vault sent an invalid {name}: not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise StorageError(f"the vault sent an invalid {name}: not base64") from None

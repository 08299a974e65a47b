"""The client of a backvault server's passkey API (``/v1/passkeys``), used by the CLI.

A server address is an origin with an optional API prefix, such as
``https://backup.example`` or ``https://example.org/backvault``. The account token comes
from ``BACKVAULT_TOKEN`` or the file that ``backvault login`` writes, as for repositories
on the server. Binary values travel as base64url without padding, as in WebAuthn JSON.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from backvault.errors import BackvaultError
from backvault.storage.http import (
    find_token,
    make_client,
    raise_for_status,
    send_with_retries,
    split_server_address,
)

BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
DEFAULT_CEREMONY_LIFETIME = 300  # seconds, when a server does not say


def encode_base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64url(value: object) -> bytes:
    """Decode unpadded base64url; raise ValueError if ``value`` is not that."""
    if not isinstance(value, str) or BASE64URL.fullmatch(value) is None or len(value) % 4 == 1:
        raise ValueError("not base64url without padding")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except binascii.Error:
        raise ValueError("not base64url without padding") from None


@dataclass(frozen=True)
class Ceremony:
    """A ceremony started on the server: its id, the page that runs it, its life in seconds."""

    ceremony_id: str
    page: str
    expires_in: float


class PasskeyServerClient:
    """The passkey API of one backvault server, reached with the account's token."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self._origin, prefix = split_server_address(url, form="http(s)://HOST:PORT, as for --repo")
        self._base = f"{prefix}/v1/passkeys"
        self._client = make_client(self._origin, token or find_token(self._origin))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PasskeyServerClient:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.close()

    def start_registration(self, name: str, prf_salt: bytes) -> Ceremony:
        body = {"kind": "register", "name": name, "prf_salt": encode_base64url(prf_salt)}
        return self._start_ceremony(body, "enrol_page")

    def start_authentication(self, credentials: list[tuple[bytes, bytes]]) -> Ceremony:
        """Start an authentication with one of ``credentials``, pairs of (id, PRF salt)."""
        body = {
            "kind": "authenticate",
            "credentials": [
                {"id": encode_base64url(credential_id), "prf_salt": encode_base64url(prf_salt)}
                for credential_id, prf_salt in credentials
            ],
        }
        return self._start_ceremony(body, "unlock_page")

    def ceremony_rp_id(self, ceremony_id: str) -> str:
        """Return the relying party id of a ceremony, from the options its page will use."""
        response = self._send("GET", f"/ceremonies/{quote(ceremony_id, safe='')}/options")
        if response.status_code != 200:
            raise_for_status(self._origin, response, "read the passkey options")
        body = _json(response, self.url)
        options = body.get("options")
        rp_id: object = None
        if isinstance(options, dict):
            rp = options.get("rp")
            rp_id = rp.get("id") if isinstance(rp, dict) else options.get("rpId")
        if not isinstance(rp_id, str) or not rp_id:
            raise _invalid_response(self.url, "the passkey options name no relying party id")
        return rp_id

    def list_passkeys(self) -> list[dict[str, Any]]:
        response = self._send("GET", "")
        if response.status_code == 404:
            raise _no_passkey_support(self.url)
        if response.status_code != 200:
            raise_for_status(self._origin, response, "list the passkeys")
        passkeys = _json(response, self.url).get("passkeys")
        if not isinstance(passkeys, list):
            raise _invalid_response(self.url, "the passkey list is missing")
        return [entry for entry in passkeys if isinstance(entry, dict)]

    def delete_passkey(self, credential_id: bytes) -> bool:
        """Delete a passkey; return False if the server has no such passkey."""
        response = self._send("DELETE", f"/{encode_base64url(credential_id)}")
        if response.status_code == 404:
            return False
        if response.status_code != 204:
            raise_for_status(self._origin, response, "delete the passkey")
        return True

    def _start_ceremony(self, body: dict[str, Any], page_field: str) -> Ceremony:
        response = self._send("POST", "/ceremonies", json=body)
        if response.status_code == 404 and body["kind"] == "register":
            raise _no_passkey_support(self.url)
        if response.status_code == 404:
            raise BackvaultError(
                f"the backvault server {self.url} does not know a passkey of this "
                "repository: it was deleted there",
                hint="Open the repository with the recovery key, remove the passkey slots "
                "whose passkey is gone with 'backvault key remove', and add a passkey again.",
            )
        if response.status_code != 201:
            raise_for_status(self._origin, response, "start the passkey ceremony")
        answer = _json(response, self.url)
        ceremony_id, page = answer.get("ceremony"), answer.get(page_field)
        if not isinstance(ceremony_id, str) or not isinstance(page, str):
            raise _invalid_response(self.url, f"the ceremony or its {page_field} is missing")
        expires_in = answer.get("expires_in", DEFAULT_CEREMONY_LIFETIME)
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = DEFAULT_CEREMONY_LIFETIME
        return Ceremony(ceremony_id, page, float(expires_in))

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        return send_with_retries(
            self._client, self._origin, method, self._base + path,
            unreachable_hint="Check that the passkey server runs at this address (given "
            "with --server, or stored with the passkey's key slot). To open the repository "
            "without it, use the recovery key.",
            **options,
        )


def _json(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _invalid_response(url, "the body is not a JSON object")
    return body


def _invalid_response(url: str, problem: str) -> BackvaultError:
    return BackvaultError(
        f"invalid response from the backvault server {url}: {problem}",
        hint="Check that the address is a backvault server of this version or newer.",
    )


def _no_passkey_support(url: str) -> BackvaultError:
    return BackvaultError(
        f"the backvault server {url} has no passkey API (404 for /v1/passkeys)",
        hint="Update the server to a backvault version with passkeys, or check the address.",
    )

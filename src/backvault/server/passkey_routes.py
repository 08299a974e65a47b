"""The HTTP routes of the passkeys: the ceremony API under ``/v1/passkeys`` and the pages.

A client with the account's token starts a ceremony, lists the account's passkeys and
deletes them. The pages at ``/passkey/enrol`` and ``/passkey/unlock`` then fetch the
ceremony's options and post its result without a token, because the ceremony id in the
page address is their credential. The logic is in :mod:`backvault.passkey.ceremony`;
the routes and statuses are described in ``docs/passkeys.md``.

Request bodies are never logged: a finish carries a signed credential, and a page that
forgot to remove a PRF result would carry that too.
"""

# No "from __future__ import annotations" here: FastAPI reads the parameter annotations
# at run time, and cannot resolve the local alias AccountDep from a string.
import datetime
import json
import logging
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from backvault.passkey.ceremony import (
    CEREMONY_LIFETIME,
    MAX_CREDENTIALS,
    MAX_NAME_LENGTH,
    CeremonyNotFoundError,
    CredentialRequest,
    InvalidPasskeyRequestError,
    PasskeyNotFoundError,
    PasskeyVerificationError,
    RelyingParty,
    decode_base64url,
    encode_base64url,
)
from backvault.server.auth import Authenticator
from backvault.server.errors import ApiError
from backvault.server.metadata import Account, PasskeyCredential

logger = logging.getLogger("backvault.server.passkey")

MAX_FINISH_BODY = 64 * 1024  # bytes; a credential with "none" attestation is about 1 KiB
# Base64url of 1023 bytes (the WebAuthn limit on credential ids) and of a 32-byte salt.
MAX_ENCODED_CREDENTIAL_ID = 1364
MAX_ENCODED_SALT = 64
CEREMONY_GONE = (
    "This passkey link has expired or was already used. Go back to the terminal and run "
    "the backvault command again."
)
PAGE_FILES = {
    "enrol": ("enrol.html", "text/html; charset=utf-8"),
    "unlock": ("unlock.html", "text/html; charset=utf-8"),
    "passkey.js": ("passkey.js", "text/javascript; charset=utf-8"),
    "passkey.css": ("passkey.css", "text/css; charset=utf-8"),
}
# The pages load only their own script and style sheet, and may connect only to this
# server and to the loopback address where the command line waits for the result.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self' http://127.0.0.1:*; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class RegistrationStart(BaseModel):
    kind: Literal["register"]
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, description="passkey name")
    prf_salt: str = Field(max_length=MAX_ENCODED_SALT, description="32 bytes, base64url")


class OfferedCredential(BaseModel):
    id: str = Field(max_length=MAX_ENCODED_CREDENTIAL_ID, description="credential id, base64url")
    prf_salt: str = Field(max_length=MAX_ENCODED_SALT, description="32 bytes, base64url")


class AuthenticationStart(BaseModel):
    kind: Literal["authenticate"]
    credentials: list[OfferedCredential] = Field(min_length=1, max_length=MAX_CREDENTIALS)


CeremonyStart = Annotated[
    RegistrationStart | AuthenticationStart, Field(discriminator="kind")
]


def build_passkey_router(relying_party: RelyingParty, authenticator: Authenticator) -> APIRouter:
    """Return the router of the passkey API and pages, bound to ``relying_party``."""
    router = APIRouter(tags=["passkeys"])
    _add_account_routes(router, relying_party, authenticator)
    _add_page_api_routes(router, relying_party)
    _add_page_routes(router)
    return router


def _add_account_routes(
    router: APIRouter, relying_party: RelyingParty, authenticator: Authenticator
) -> None:
    metadata = relying_party.metadata

    def current_account(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Account:
        account = authenticator.account(authorization)
        request.state.account_id = account.id
        return account

    AccountDep = Annotated[Account, Depends(current_account)]

    @router.post(
        "/v1/passkeys/ceremonies", status_code=201,
        summary="Start registering a passkey, or authenticating with one, in a page",
    )
    def start_ceremony(body: CeremonyStart, account: AccountDep) -> dict[str, Any]:
        try:
            if isinstance(body, RegistrationStart):
                salt = decode_base64url(body.prf_salt, "prf_salt")
                ceremony_id = relying_party.start_registration(account, body.name, salt)
                page = "enrol"
            else:
                offered = [_credential_request(index, item)
                           for index, item in enumerate(body.credentials)]
                ceremony_id = relying_party.start_authentication(account, offered)
                page = "unlock"
        except InvalidPasskeyRequestError as error:
            raise ApiError(400, str(error)) from None
        except PasskeyNotFoundError as error:
            raise ApiError(404, str(error)) from None
        logger.info("passkey ceremony started", extra={"account_id": account.id, "kind": body.kind})
        return {
            "ceremony": ceremony_id,
            f"{page}_page": f"{relying_party.origin}/passkey/{page}#ceremony={ceremony_id}",
            "expires_in": CEREMONY_LIFETIME,
        }

    @router.get("/v1/passkeys", summary="List the account's passkeys")
    def list_passkeys(account: AccountDep) -> dict[str, Any]:
        found = metadata.list_passkey_credentials(account.id)
        return {"passkeys": [_passkey_json(credential) for credential in found]}

    @router.delete(
        "/v1/passkeys/{credential_id}", status_code=204, summary="Delete one of the passkeys"
    )
    def delete_passkey(credential_id: str, account: AccountDep) -> Response:
        try:
            raw_id = decode_base64url(credential_id, "the credential id")
        except InvalidPasskeyRequestError as error:
            raise ApiError(404, f"no passkey {credential_id[:64]!r}: {error}") from None
        if not metadata.delete_passkey_credential(account.id, raw_id):
            raise ApiError(404, f"this account has no passkey {credential_id[:64]!r}")
        logger.info("passkey deleted", extra={"account_id": account.id})
        return Response(status_code=204)


def _add_page_api_routes(router: APIRouter, relying_party: RelyingParty) -> None:
    @router.get(
        "/v1/passkeys/ceremonies/{ceremony}/options",
        summary="Get a ceremony's WebAuthn options and PRF salts (for the pages)",
    )
    def ceremony_options(ceremony: str, response: Response) -> dict[str, Any]:
        response.headers["Cache-Control"] = "no-store"
        try:
            return relying_party.page_options(ceremony)
        except CeremonyNotFoundError:
            raise ApiError(404, CEREMONY_GONE) from None

    @router.post(
        "/v1/passkeys/ceremonies/{ceremony}/finish",
        summary="Verify a ceremony's credential (for the pages); the ceremony is used up",
    )
    async def finish_ceremony(ceremony: str, request: Request) -> Response:
        credential = _credential_of(await _read_body(request))
        try:
            finished = await run_in_threadpool(relying_party.finish, ceremony, credential)
        except CeremonyNotFoundError:
            raise ApiError(404, CEREMONY_GONE) from None
        except PasskeyVerificationError as error:
            logger.warning("passkey ceremony rejected", extra={"reason": str(error)})
            raise ApiError(400, str(error)) from None
        request.state.account_id = finished.account_id
        logger.info(
            "passkey ceremony finished",
            extra={"account_id": finished.account_id, "kind": finished.kind},
        )
        status = 201 if finished.kind == "register" else 200
        payload = {"credential_id": encode_base64url(finished.credential_id)}
        return Response(
            json.dumps(payload), status_code=status, media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )


    @router.post(
        "/v1/passkeys/ceremonies/{ceremony}/undo", status_code=204,
        summary="Delete the passkey a registration stored, while the ceremony lasts (for "
        "the enrol page, when the command no longer takes the result)",
    )
    def undo_registration(ceremony: str) -> Response:
        try:
            relying_party.undo_registration(ceremony)
        except CeremonyNotFoundError:
            raise ApiError(404, "there is no passkey of this ceremony to undo") from None
        logger.info("passkey registration undone")
        return Response(status_code=204, headers={"Cache-Control": "no-store"})


def _add_page_routes(router: APIRouter) -> None:
    pages = resources.files("backvault.passkey") / "pages"
    contents = {
        name: ((pages / file_name).read_bytes(), media_type)
        for name, (file_name, media_type) in PAGE_FILES.items()
    }

    def serve(name: str) -> Response:
        body, media_type = contents[name]
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    @router.get("/passkey/enrol", include_in_schema=False)
    def enrol_page() -> Response:
        return serve("enrol")

    @router.get("/passkey/unlock", include_in_schema=False)
    def unlock_page() -> Response:
        return serve("unlock")

    @router.get("/passkey/static/passkey.js", include_in_schema=False)
    def page_script() -> Response:
        return serve("passkey.js")

    @router.get("/passkey/static/passkey.css", include_in_schema=False)
    def page_style() -> Response:
        return serve("passkey.css")

    # Browsers request an icon from every site. An empty response keeps a 404 out of the
    # page's console, where a user who opens it would take it for a fault.
    @router.get("/favicon.ico", include_in_schema=False)
    def no_icon() -> Response:
        return Response(status_code=204, headers=PAGE_HEADERS)


def _credential_request(index: int, item: OfferedCredential) -> CredentialRequest:
    return CredentialRequest(
        credential_id=decode_base64url(item.id, f"credentials[{index}].id"),
        prf_salt=decode_base64url(item.prf_salt, f"credentials[{index}].prf_salt"),
    )


async def _read_body(request: Request) -> bytes:
    """Read the request body, rejecting it with 413 once it exceeds MAX_FINISH_BODY."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FINISH_BODY:
        raise _too_large()
    parts: list[bytes] = []
    received = 0
    async for part in request.stream():
        received += len(part)
        if received > MAX_FINISH_BODY:
            raise _too_large()
        parts.append(part)
    return b"".join(parts)


def _too_large() -> ApiError:
    return ApiError(413, f"the request body is larger than {MAX_FINISH_BODY} bytes")


def _credential_of(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not JSON") from None
    credential = parsed.get("credential") if isinstance(parsed, dict) else None
    if not isinstance(credential, dict):
        raise ApiError(400, 'the request body must be {"credential": PublicKeyCredential JSON}')
    return credential


def _passkey_json(credential: PasskeyCredential) -> dict[str, Any]:
    return {
        "id": encode_base64url(credential.credential_id),
        "name": credential.name,
        "created": _iso_time(credential.created_ns),
        "last_used": _iso_time(credential.last_used_ns),
        "prf": credential.prf,
    }


def _iso_time(time_ns: int | None) -> str | None:
    if time_ns is None:
        return None
    moment = datetime.datetime.fromtimestamp(time_ns / 1e9, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds")

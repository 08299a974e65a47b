"""The HTTP routes of the key vault, under ``/v1/vault``.

Every route is rate-limited per client address, then authenticated, then rate-limited
per account, so an account can use only its own records and a stranger cannot burn its
guesses. Binary values (OPAQUE messages, records, wrapped keys) travel as standard
base64 in JSON. The routes and their statuses are described in ``docs/vault.md``.
"""

# No "from __future__ import annotations" here: FastAPI reads the parameter annotations
# at run time, and cannot resolve the local alias AccountDep from a string.
import base64
import binascii
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from backvault.server.auth import Authenticator
from backvault.server.errors import ApiError, ServerError
from backvault.server.metadata import Account, Metadata, vault_tables
from backvault.vault.errors import (
    KeyStoreError,
    LoginFailedError,
    LoginInProgressError,
    LoginNotFoundError,
    RecordDestroyedError,
    RecordNotFoundError,
    SealedDataError,
    VaultError,
)
from backvault.vault.keystore import open_key_store
from backvault.vault.protocol import MAX_MESSAGE_SIZE, MAX_WRAPPED_KEY_SIZE, is_valid_id
from backvault.vault.ratelimit import RateLimiter
from backvault.vault.service import InvalidRequestError, RecordExistsError, VaultService
from backvault.vault.settings import VaultSettings
from backvault.vault.store import RecordInfo, VaultStore

logger = logging.getLogger("backvault.server.vault")

# Base64 of MAX_MESSAGE_SIZE bytes, rounded up.
MAX_ENCODED_SIZE = 4 * (MAX_MESSAGE_SIZE // 3 + 1)
RETRY_AFTER_KEY_STORE = "5"  # seconds a client waits after the key store failed

Result = TypeVar("Result")


def open_vault(metadata: Metadata, settings: VaultSettings, data_dir: Path) -> VaultService:
    """Open the vault's keys and its tables in the metadata database.

    Raises ServerError when the keys cannot be used, so the server does not start.
    """
    store = VaultStore(
        metadata.engine, vault_tables, sqlite=metadata.engine.dialect.name == "sqlite",
        begin_write=metadata.write_transaction,
    )
    try:
        key_store = open_key_store(settings, data_dir)
    except KeyStoreError as error:
        raise ServerError(
            f"cannot open the vault's keys: {error}",
            hint="Check the [vault] settings of the config file; see docs/vault.md.",
        ) from error
    try:
        service = VaultService(store, key_store, settings)
    except KeyStoreError as error:
        key_store.close()
        raise ServerError(f"cannot start the vault: {error}") from error
    except BaseException:
        key_store.close()
        raise
    logger.info(
        "vault ready",
        extra={"keys": key_store.description, "guess_limit": settings.guess_limit},
    )
    return service


class RegistrationRequest(BaseModel):
    request: str = Field(max_length=MAX_ENCODED_SIZE, description="RegistrationRequest, base64")


class RecordUpload(BaseModel):
    record_id: str = Field(max_length=64, description="the id returned with the response")
    record: str = Field(max_length=MAX_ENCODED_SIZE, description="RegistrationRecord, base64")
    wrapped_key: str = Field(
        max_length=MAX_ENCODED_SIZE,
        description="the master key wrapped by the client, base64; the server only stores it",
    )
    guess_limit: int | None = Field(
        default=None, description="a lower guess limit than the server's, if wanted"
    )


class LoginRequest(BaseModel):
    ke1: str = Field(max_length=MAX_ENCODED_SIZE, description="KE1, base64")


class LoginFinish(BaseModel):
    ke3: str = Field(max_length=MAX_ENCODED_SIZE, description="KE3, base64")


def build_vault_router(vault: VaultService, authenticator: Authenticator) -> APIRouter:
    """Return the ``/v1/vault`` router bound to ``vault``."""
    router = APIRouter(prefix="/v1/vault", tags=["vault"])
    settings = vault.settings
    address_limiter = RateLimiter(settings.address_rate_limit, name="address")
    account_limiter = RateLimiter(settings.account_rate_limit, name="account")

    # The login routes and this dependency are coroutines that call the vault directly:
    # a login's database and OPAQUE work takes about a millisecond, less than the hand-off
    # to a worker thread costs, so the event loop runs it in place.
    async def vault_account(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Account:
        address = request.client.host if request.client else "unknown"
        _enforce(address_limiter, address)
        account = authenticator.account(authorization)
        request.state.account_id = account.id
        _enforce(account_limiter, str(account.id))
        return account

    AccountDep = Annotated[Account, Depends(vault_account)]

    @router.post("/registrations", summary="Start registering a password (OPAQUE)")
    def register_start(body: RegistrationRequest, account: AccountDep) -> dict[str, Any]:
        request = _decode(body.request, "request")
        registration = _call(lambda: vault.register_start(account.id, request))
        return {
            "record_id": registration.record_id,
            "response": _encode(registration.response),
            "guess_limit": registration.guess_limit,
        }

    @router.post("/records", summary="Store a registration record", status_code=201)
    def register_finish(body: RecordUpload, account: AccountDep) -> dict[str, Any]:
        _check_id(body.record_id, "record id")
        record = _decode(body.record, "record")
        wrapped_key = _decode(body.wrapped_key, "wrapped_key")
        if len(wrapped_key) > MAX_WRAPPED_KEY_SIZE:
            raise ApiError(400, f"wrapped_key is larger than {MAX_WRAPPED_KEY_SIZE} bytes")
        found = _call(lambda: vault.register_finish(
            account.id, body.record_id, record, wrapped_key, body.guess_limit
        ))
        return _record_json(found)

    @router.get("/records", summary="List the account's records, existing and destroyed")
    def list_records(account: AccountDep) -> dict[str, Any]:
        found = _call(lambda: vault.list_records(account.id))
        return {"records": [_record_json(record) for record in found]}

    @router.delete("/records/{record_id}", summary="Delete a record", status_code=204)
    def delete_record(record_id: str, account: AccountDep) -> Response:
        if not is_valid_id(record_id):
            raise ApiError(404, f"no vault record {record_id!r}")
        _call(lambda: vault.delete_record(account.id, record_id))
        return Response(status_code=204)

    @router.post(
        "/records/{record_id}/logins", summary="Start a login: send KE1, get KE2 (counts a guess)"
    )
    async def login_start(record_id: str, body: LoginRequest, account: AccountDep) -> Response:
        _check_id(record_id, "record id")
        ke1 = _decode(body.ke1, "ke1")
        challenge = _call(lambda: vault.login_start(account.id, record_id, ke1))
        # A JSONResponse skips FastAPI's encoding of a returned dict, a tenth of the
        # request's CPU time; the body is three plain fields.
        return JSONResponse({
            "login_id": challenge.login_id,
            "ke2": _encode(challenge.ke2),
            "guesses_left": challenge.guesses_left,
        })

    @router.post(
        "/logins/{login_id}", summary="Finish a login: send KE3, get the wrapped master key"
    )
    async def login_finish(login_id: str, body: LoginFinish, account: AccountDep) -> Response:
        _check_id(login_id, "login id")
        ke3 = _decode(body.ke3, "ke3")
        try:
            record_id, release = _call(lambda: vault.login_finish(account.id, login_id, ke3))
        except LoginFailedError as error:
            return JSONResponse(
                {"detail": "the login failed: wrong password", "guesses_left": error.guesses_left},
                status_code=403,
            )
        return JSONResponse({"record_id": record_id, "release": _encode(release)})

    @router.delete("/logins/{login_id}", summary="Give up a login whose password was wrong")
    async def login_abort(login_id: str, account: AccountDep) -> dict[str, Any]:
        _check_id(login_id, "login id")
        guesses_left = _call(lambda: vault.login_abort(account.id, login_id))
        return {"guesses_left": guesses_left}

    return router


def _enforce(limiter: RateLimiter, key: str) -> None:
    wait = limiter.check(key)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            f"too many vault requests from this {limiter.name}; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


def _call(operation: Callable[[], Result]) -> Result:
    """Run a vault operation, turning its errors into HTTP errors.

    LoginFailedError passes through, because its response carries the guesses left.
    """
    try:
        return operation()
    except LoginFailedError:
        raise
    except InvalidRequestError as error:
        raise ApiError(400, str(error)) from None
    except RecordExistsError as error:
        raise ApiError(409, str(error)) from None
    except RecordNotFoundError as error:
        raise ApiError(404, f"no vault record {error}") from None
    except RecordDestroyedError as error:
        raise ApiError(
            410,
            f"vault record {error} was destroyed after its guess limit was reached; "
            "open the repository with its recovery key",
        ) from None
    except LoginInProgressError as error:
        raise ApiError(
            409,
            "every remaining guess of this record is held by an unfinished login; retry "
            "after it ends",
            headers={"Retry-After": str(math.ceil(error.retry_after))},
        ) from None
    except LoginNotFoundError as error:
        raise ApiError(
            404, f"no login {error} in progress: it expired or was finished; start again"
        ) from None
    except KeyStoreError as error:
        logger.error("vault key store failed: %s", error)
        raise ApiError(
            503, "the vault's key store is unavailable; retry later",
            headers={"Retry-After": RETRY_AFTER_KEY_STORE},
        ) from None
    except SealedDataError as error:
        logger.error("vault data failed to decrypt: %s", error)
        raise ApiError(500, "stored vault data failed to decrypt; ask the operator") from None
    except VaultError as error:
        logger.error("vault operation failed: %s", error)
        raise ApiError(500, "the vault failed; ask the operator") from None


def _check_id(value: str, name: str) -> None:
    if not is_valid_id(value):
        raise ApiError(400, f"invalid {name} {value[:64]!r}: expected 32 lowercase hex digits")


def _decode(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{name} is not valid base64") from None


def _encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _record_json(record: RecordInfo) -> dict[str, Any]:
    return {
        "record_id": record.record_id, "state": record.state,
        "guess_limit": record.guess_limit, "guesses_used": record.guesses_used,
        "guesses_left": record.guesses_left, "created_ns": record.created_ns,
        "destroyed_ns": record.destroyed_ns,
    }

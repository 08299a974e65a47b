"""The HTTP routes of the account and blob API, under ``/v1``.

Every route authenticates first, so a request without a valid token gets 401 before any
name is looked at. Another account's repository gets 404, the same as a repository that
does not exist, so a client cannot probe which names other accounts use.
"""

# No "from __future__ import annotations" here: FastAPI reads the parameter annotations
# at run time, and cannot resolve the local alias AccountDep from a string.
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from backvault.server.auth import Authenticator
from backvault.server.blobs import (
    HASH_ALGORITHMS,
    BlobService,
    check_object_name,
    verify_content_hash,
)
from backvault.server.errors import ApiError
from backvault.server.metadata import Account, Metadata, RepositoryInfo

CONTENT_HASH_HEADER = "X-Content-Hash"
OBJECT_PATH = "/repos/{repo}/{kind}/{name:path}"


@dataclass(frozen=True)
class Services:
    """The services the routes use, built once by the app factory."""

    metadata: Metadata
    blobs: BlobService
    authenticator: Authenticator
    max_object_size: int


def _current_account(services: Services) -> Callable[..., Account]:
    def current_account(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Account:
        account = services.authenticator.account(authorization)
        # The access log reads the account id from here once the response is sent.
        request.state.account_id = account.id
        return account

    return current_account


def build_account_router(services: Services) -> APIRouter:
    """Return the ``/v1/account`` route, which every kind of server has."""
    router = APIRouter(prefix="/v1")
    AccountDep = Annotated[Account, Depends(_current_account(services))]

    @router.get("/account", summary="Show the authenticated account")
    def show_account(account: AccountDep) -> dict[str, Any]:
        # The authenticator may hand out a remembered account; the byte count must be fresh.
        fresh = services.metadata.find_account(account.name)
        if fresh is None:
            raise ApiError(401, "this account was deleted; ask the server's operator")
        account = fresh
        return {
            "name": account.name, "append_only": account.append_only,
            "quota_bytes": account.quota_bytes, "used_bytes": account.used_bytes,
        }

    return router


def build_router(services: Services) -> APIRouter:
    """Return the ``/v1/repos`` blob API bound to ``services``."""
    router = APIRouter(prefix="/v1")
    AccountDep = Annotated[Account, Depends(_current_account(services))]

    @router.get("/repos", summary="List the account's repositories")
    def list_repositories(account: AccountDep) -> dict[str, Any]:
        found = services.metadata.list_repositories(account.id)
        return {"repositories": [
            {"name": item.name, "append_only": item.append_only} for item in found
        ]}

    @router.post("/repos/{repo}", summary="Create a repository", status_code=201)
    def create_repository(
        repo: str, account: AccountDep, response: Response, append_only: bool = False
    ) -> dict[str, Any]:
        repository, created = services.blobs.create_repository(
            account, repo, append_only=append_only
        )
        if not created:
            response.status_code = 200
        return {"name": repository.name, "append_only": repository.append_only or append_only}

    @router.get("/repos/{repo}/{kind}", summary="List the objects of one kind")
    def list_objects(repo: str, kind: str, account: AccountDep) -> dict[str, Any]:
        repository = services.blobs.repository(account, repo)
        found = services.blobs.list(repository, kind)
        return {"objects": [{"name": name, "size": size} for name, size in found]}

    @router.put(OBJECT_PATH, summary="Store an object", status_code=201)
    async def put_object(
        repo: str, kind: str, name: str, request: Request, account: AccountDep,
        response: Response,
    ) -> dict[str, Any]:
        check_object_name(kind, name)
        algorithm, expected = _content_hash(request.headers.get(CONTENT_HASH_HEADER))
        repository = await run_in_threadpool(services.blobs.repository, account, repo)
        data = await _read_body(request, services.max_object_size)
        created = await run_in_threadpool(
            _store, services, account, repository, kind, name, data, algorithm, expected
        )
        if not created:
            response.status_code = 200
        return {"kind": kind, "name": name, "size": len(data), "created": created}

    @router.get(OBJECT_PATH, summary="Read an object or a byte range of it")
    def get_object(
        repo: str, kind: str, name: str, account: AccountDep,
        byte_range: Annotated[str | None, Header(alias="Range")] = None,
    ) -> Response:
        check_object_name(kind, name)
        repository = services.blobs.repository(account, repo)
        found = services.blobs.read(repository, kind, name, byte_range)
        headers = {"Accept-Ranges": "bytes"}
        if byte_range is None:
            return Response(found.data, media_type="application/octet-stream", headers=headers)
        last = found.offset + len(found.data) - 1
        headers["Content-Range"] = f"bytes {found.offset}-{last}/{found.total_size}"
        return Response(
            found.data, status_code=206, media_type="application/octet-stream", headers=headers
        )

    @router.head(OBJECT_PATH, summary="Check that an object exists and get its size")
    def head_object(repo: str, kind: str, name: str, account: AccountDep) -> Response:
        check_object_name(kind, name)
        repository = services.blobs.repository(account, repo)
        size = services.blobs.size(repository, kind, name)
        return Response(headers={"Content-Length": str(size), "Accept-Ranges": "bytes"})

    @router.delete(OBJECT_PATH, summary="Delete an object", status_code=204)
    def delete_object(repo: str, kind: str, name: str, account: AccountDep) -> Response:
        check_object_name(kind, name)
        repository = services.blobs.repository(account, repo)
        services.blobs.delete(account, repository, kind, name)
        return Response(status_code=204)

    return router


def _store(
    services: Services, account: Account, repository: RepositoryInfo, kind: str, name: str,
    data: bytes, algorithm: str, expected: str,
) -> bool:
    digest = verify_content_hash(data, algorithm, expected)
    return services.blobs.put(account, repository, kind, name, data, digest)


def _content_hash(header: str | None) -> tuple[str, str]:
    if header is None:
        raise ApiError(
            400, f"missing {CONTENT_HASH_HEADER} header: send blake3=HEX or sha256=HEX of the body"
        )
    algorithm, _, value = header.partition("=")
    algorithm = algorithm.strip().lower()
    if algorithm not in HASH_ALGORITHMS or not value:
        raise ApiError(
            400, f"invalid {CONTENT_HASH_HEADER} header {header!r}: send blake3=HEX or sha256=HEX"
        )
    return algorithm, value


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the request body, rejecting it with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    parts: list[bytes] = []
    received = 0
    async for part in request.stream():
        received += len(part)
        if received > limit:
            raise _too_large(received, limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"object too large: {size} bytes or more, and this server accepts at most {limit} "
        "bytes per object; use a smaller pack size or ask the server's operator",
    )

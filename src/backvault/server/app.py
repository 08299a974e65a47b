"""The app factory: one ASGI app with the blob API, the key vault, health, metrics and OpenAPI.

Beside the ``/v1`` blob router and the ``/v1/vault`` router, the passkey router serves the
``/v1/passkeys`` API and the passkey pages under ``/passkey``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from backvault import __version__
from backvault.passkey.ceremony import RelyingParty
from backvault.server.auth import Authenticator
from backvault.server.blobs import BlobService
from backvault.server.config import ServerConfig
from backvault.server.errors import ApiError
from backvault.server.metadata import Metadata, open_metadata
from backvault.server.observability import Metrics, RequestObserver
from backvault.server.passkey_routes import build_passkey_router
from backvault.server.routes import Services, build_account_router, build_router
from backvault.server.vault_routes import build_vault_router, open_vault
from backvault.storage import StorageError

logger = logging.getLogger("backvault.server")

RETRY_AFTER_SECONDS = "2"


def create_app(config: ServerConfig) -> FastAPI:
    """Build the server app for ``config``; the database is opened here, not per request."""
    metadata = open_metadata(config)
    services = Services(
        metadata=metadata,
        blobs=BlobService(metadata, blob_dir=config.blob_dir, storage=config.storage),
        authenticator=Authenticator(metadata, config.jwt),
        max_object_size=config.max_object_size,
    )
    # Only a server that offers the vault opens the vault's keys.
    vault = None
    if "vault" in config.services:
        vault = open_vault(metadata, config.vault, config.data_dir)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if vault is not None:
            vault.close()
        metadata.close()

    app = FastAPI(
        title="backvault server",
        version=__version__,
        description="Accounts and an immutable blob store for end-to-end encrypted backups.",
        lifespan=lifespan,
    )
    # The vault's routes come first: FastAPI tries routes in order, and a password login
    # is the request that most needs to be cheap.
    if vault is not None:
        app.include_router(build_vault_router(vault, services.authenticator))
    app.include_router(build_account_router(services))
    if "blobs" in config.services:
        app.include_router(build_router(services))
    if "passkeys" in config.services:
        relying_party = RelyingParty(
            metadata, rp_id=config.passkey_rp_id, origin=config.passkey_origin
        )
        app.include_router(build_passkey_router(relying_party, services.authenticator))
    _add_operations_routes(app, metadata, metrics)
    _add_error_handlers(app)
    app.add_middleware(RequestObserver, metrics=metrics)
    return app


def _add_operations_routes(app: FastAPI, metadata: Metadata, metrics: Metrics) -> None:
    @app.get("/healthz", summary="Report whether the server and its database work")
    def health() -> Response:
        try:
            metadata.ping()
        except sqlalchemy.exc.SQLAlchemyError as error:
            logger.error("health check failed: metadata database unavailable: %s", error)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return _error_response(error.status, error.message, error.headers)

    async def database_error(request: Request, error: Exception) -> Response:
        logger.error(
            "metadata database error on %s %s: %s", request.method, request.url.path, error
        )
        return _error_response(
            503, "the server's metadata database is unavailable; retry later",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )

    async def storage_error(request: Request, error: Exception) -> Response:
        logger.error("storage error on %s %s: %s", request.method, request.url.path, error)
        return _error_response(
            503, "the server's blob storage is unavailable; retry later",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, database_error)
    app.add_exception_handler(StorageError, storage_error)


def _error_response(status: int, message: str, headers: dict[str, Any] | None) -> Response:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)

"""Errors of the server: operator-facing errors and the HTTP errors of the blob API."""

from __future__ import annotations

from backvault.errors import BackvaultError, UsageError


class ServerError(BackvaultError):
    """An operator command or the server setup failed."""


class ServerConfigError(UsageError):
    """An option or a setting in the server's config file is invalid."""


class AccountExistsError(ServerError):
    """An account with the requested name already exists."""


class AccountNotFoundError(ServerError):
    """No account has the requested name."""


class TokenNotFoundError(ServerError):
    """No token has the requested id."""


class QuotaExceededError(ServerError):
    """Storing an object would take an account over its quota."""


class ApiError(Exception):
    """An error that the blob API returns to the client as an HTTP status and a message.

    The message is sent to the client, so it names only what the client sent or owns.
    """

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

"""Errors of the vault service; the server's routes turn them into HTTP statuses."""

from __future__ import annotations


class VaultError(Exception):
    """Base class of the vault service's errors."""


class KeyStoreError(VaultError):
    """The key file or the PKCS#11 token cannot be used: missing, unsafe or failing."""


class SealedDataError(VaultError):
    """Sealed data failed to decrypt or authenticate under the record-encryption key."""


class RecordNotFoundError(VaultError):
    """The account has no record with this id."""


class RecordDestroyedError(VaultError):
    """The record was erased after its guess limit was reached."""


class LoginInProgressError(VaultError):
    """Every guess of the record is taken by logins that have not finished yet."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("every remaining guess is taken by a login in progress")
        self.retry_after = retry_after


class LoginNotFoundError(VaultError):
    """No unfinished login has this id: it never existed, expired or was finished."""


class LoginFailedError(VaultError):
    """The client's KE3 did not verify, so the password was wrong; the guess stays counted."""

    def __init__(self, guesses_left: int) -> None:
        super().__init__("the login failed")
        self.guesses_left = guesses_left

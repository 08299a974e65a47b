"""The error catalogue of backvault.

Every error a user can meet is a subclass of :class:`BackvaultError`. Each class has an
exit code for the command line and each instance may carry a hint: one line that tells
the user what to do next. Lower layers raise these classes directly or have their own exceptions
translated at the boundary, with the cause chained.

Hierarchy::

    BackvaultError                  exit 1
    ├── UsageError                  exit 2   bad input: an option, a path, a snapshot name
    │   └── RecoveryKeyFormatError  exit 2   a typed recovery key is malformed or mistyped
    ├── PartialBackupError          exit 3   the snapshot was saved, but some paths were skipped
    ├── RepositoryNotFoundError     exit 10
    ├── RepositoryExistsError       exit 10
    ├── RepositoryLockedError       exit 11
    ├── WrongKeyError               exit 12  no key slot opens with the given secret
    ├── DataDamagedError            exit 13  check or restore found damaged or missing data
    ├── UnsupportedFormatError      exit 14  written by a newer backvault, or not a repository
    ├── WrongPasswordError          exit 15  wrong password, or the vault destroyed its record
    ├── PasskeyError                exit 16  a passkey or security key failed or cannot be used
    └── IntegrityError              exit 13  a decryption or authentication check failed

``IntegrityError`` is the single error type for every failed decryption or verification in
the crypto and format layers. It deliberately says nothing about which check failed.
"""

from __future__ import annotations


class BackvaultError(Exception):
    """Base class of every error backvault reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(BackvaultError):
    """Invalid input from the user: an option, a path, a snapshot name."""

    exit_code = 2


class RecoveryKeyFormatError(UsageError):
    """A typed recovery key is malformed or fails its check digits.

    ``group`` is the 1-based number of the group of four digits that is probably wrong,
    or ``None`` when no single group can be named.
    """

    def __init__(self, message: str, *, group: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.group = group


class PartialBackupError(BackvaultError):
    """The snapshot was saved, but some source paths could not be read."""

    exit_code = 3

    def __init__(self, message: str, *, snapshot_id: str, skipped: list[bytes]) -> None:
        super().__init__(
            message, hint="The skipped paths are listed above; fix access and run again."
        )
        self.snapshot_id = snapshot_id
        self.skipped = skipped


class RepositoryNotFoundError(BackvaultError):
    exit_code = 10


class RepositoryExistsError(BackvaultError):
    exit_code = 10


class RepositoryLockedError(BackvaultError):
    exit_code = 11


class WrongKeyError(BackvaultError):
    """No key slot of the repository opens with the secret given."""

    exit_code = 12


class WrongPasswordError(BackvaultError):
    """The password of a password slot is wrong, or its vault record was destroyed.

    ``guesses_left`` is the number of wrong passwords the vault still accepts before it
    destroys the record; 0 means the record is destroyed.
    """

    exit_code = 15

    def __init__(self, message: str, *, guesses_left: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.guesses_left = guesses_left


class PasskeyError(BackvaultError):
    """A passkey or FIDO2 security key failed, or cannot protect backups.

    Examples: a security key without the hmac-secret extension, a wrong or blocked PIN,
    a credential the key does not hold, a cancelled or timed-out touch.
    """

    exit_code = 16


class DataDamagedError(BackvaultError):
    """Check or restore found stored data that is damaged or missing."""

    exit_code = 13

    def __init__(self, message: str, *, damaged: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.damaged = damaged


class UnsupportedFormatError(BackvaultError):
    """A stored structure has an unknown magic or a format version newer than this program."""

    exit_code = 14


class IntegrityError(BackvaultError):
    """A decryption or authentication check failed.

    The message never names the check that failed, so that the error gives an attacker who
    tampers with stored data no oracle.
    """

    exit_code = 13

    def __init__(self, subject: str | None = None) -> None:
        message = "decryption or authentication failed"
        if subject is not None:
            message = f"{subject}: {message}"
        super().__init__(message, hint="The data was damaged or changed, or the key is wrong.")
        self.subject = subject

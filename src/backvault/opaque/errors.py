"""The single error type of the OPAQUE implementation."""

from __future__ import annotations

from backvault.errors import IntegrityError


class OpaqueError(IntegrityError):
    """An OPAQUE message or check failed.

    Every failure raises this class with the same message: a malformed or truncated
    message, an invalid group element, an envelope that does not open (usually a wrong
    password) and a MAC that does not verify. A peer therefore learns nothing about which
    check failed.
    """

    def __init__(self) -> None:
        super().__init__("OPAQUE")
        self.hint = "The password is wrong, or a protocol message was damaged or changed."

"""Password key slots: the master key behind OPAQUE with a key vault that limits guesses.

The client registers the password with the vault through OPAQUE (RFC 9807), so neither
the vault nor the repository ever receives it. The export_key of OPAQUE gives the slot's
key-encryption key, ``KEK = HKDF-SHA256(export_key, salt, "backvault v1 password slot
kek")`` with a random per-slot salt. The master key wrapped under the KEK is stored only
in the vault, which releases it after a login whose KE3 verifies, and erases it when the
guess limit is reached. The repository keeps the slot without the wrap: its parameters
are the vault address, the record id, the key-stretching function with its parameters,
and the salt. The wrap's associated data covers them all (see :mod:`backvault.crypto.slots`),
so a slot that was changed in any of them does not open.

Wrapped key layout, as stored in the vault::

    offset  size  field
    0       1     version: 1
    1       12    nonce of the wrap
    13      48    the wrapped master key (32 bytes and the GCM tag)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from backvault.crypto import aead
from backvault.crypto.keys import MasterKey, hkdf_sha256
from backvault.crypto.slots import KeySlot, new_slot, unwrap_master_key, wrap_master_key
from backvault.errors import IntegrityError, WrongPasswordError
from backvault.opaque import (
    Argon2idKsf,
    Ksf,
    OpaqueError,
    client_login_finish,
    client_login_start,
    client_registration_finish,
    client_registration_start,
    ksf_from_parameters,
)
from backvault.vault.protocol import LOGIN_CONTEXT, is_valid_id, open_release

KIND_PASSWORD = "password"
LABEL_PASSWORD_KEK = b"backvault v1 password slot kek"
WRAPPED_KEY_VERSION = 1
# RFC 9106, section 4, second recommended option: 64 MiB, 3 passes, 4 lanes.
DEFAULT_KSF = Argon2idKsf(memory_kib=64 * 1024, iterations=3, lanes=4)


@dataclass(frozen=True)
class LoginChallenge:
    """The vault's response to KE1: the login id, KE2 and the guesses left if it fails."""

    login_id: str
    ke2: bytes
    guesses_left: int


class VaultTransport(Protocol):
    """The calls a client makes to a key vault; :mod:`backvault.vault.client` has the HTTP one.

    ``login_start`` raises WrongPasswordError when the record was destroyed.
    """

    def register_start(self, request: bytes) -> tuple[str, bytes]:
        """Send a RegistrationRequest; return the new record id and the response."""
        ...

    def register_finish(
        self, record_id: str, record: bytes, wrapped_key: bytes, guess_limit: int | None
    ) -> None: ...

    def login_start(self, record_id: str, ke1: bytes) -> LoginChallenge: ...

    def login_finish(self, login_id: str, ke3: bytes) -> bytes:
        """Send KE3; return the release that contains the wrapped master key."""
        ...

    def login_abort(self, login_id: str) -> int:
        """End a login whose password was wrong; return the guesses left."""
        ...

    def delete_record(self, record_id: str) -> bool:
        """Delete a record; return False if the vault has no such record."""
        ...


@dataclass(frozen=True)
class PasswordSlotInfo:
    """The parameters of a password slot, checked."""

    vault_url: str
    record_id: str
    ksf: Ksf
    salt: bytes


def password_slot_info(slot: KeySlot) -> PasswordSlotInfo:
    """Read and check the parameters of a password slot; raise IntegrityError if invalid."""
    subject = f"key slot {slot.name}"
    parameters = slot.parameters
    vault_url, record_id = parameters.get("vault"), parameters.get("record_id")
    salt, ksf_parameters = parameters.get("salt"), parameters.get("ksf")
    if slot.kind != KIND_PASSWORD or not isinstance(vault_url, str):
        raise IntegrityError(subject)
    if not isinstance(record_id, str) or not is_valid_id(record_id):
        raise IntegrityError(subject)
    if not isinstance(salt, bytes) or len(salt) != aead.SALT_SIZE:
        raise IntegrityError(subject)
    if not isinstance(ksf_parameters, dict):
        raise IntegrityError(subject)
    try:
        ksf = ksf_from_parameters(dict(ksf_parameters))
    except ValueError:
        raise IntegrityError(subject) from None
    return PasswordSlotInfo(vault_url, record_id, ksf, salt)


def password_kek(export_key: bytes, salt: bytes) -> bytes:
    return hkdf_sha256(export_key, salt=salt, info=LABEL_PASSWORD_KEK)


def _encode_wrapped_key(nonce: bytes, wrapped: bytes) -> bytes:
    return bytes([WRAPPED_KEY_VERSION]) + nonce + wrapped


def _decode_wrapped_key(data: bytes, subject: str) -> tuple[bytes, bytes]:
    if len(data) != 1 + aead.NONCE_SIZE + 48 or data[0] != WRAPPED_KEY_VERSION:
        raise IntegrityError(subject)
    return data[1 : 1 + aead.NONCE_SIZE], data[1 + aead.NONCE_SIZE :]


def create_password_slot(
    password: bytes,
    master_key: MasterKey,
    repository_id: bytes,
    *,
    vault_url: str,
    transport: VaultTransport,
    ksf: Ksf = DEFAULT_KSF,
    label: str = "password",
    guess_limit: int | None = None,
) -> KeySlot:
    """Register ``password`` with the vault and return the slot to store in the repository.

    The vault record exists when this returns. If storing the slot fails afterwards, the
    caller should delete the record (``transport.delete_record``).
    """
    state, request = client_registration_start(password)
    record_id, response = transport.register_start(request)
    record, export_key = client_registration_finish(state, response, ksf=ksf)

    salt = aead.new_salt()
    parameters: dict[str, Any] = {
        "vault": vault_url, "record_id": record_id, "ksf": ksf.parameters(), "salt": salt,
    }
    slot = new_slot(KIND_PASSWORD, label, parameters)
    # The wrap comes last: its associated data covers the parameters set above.
    wrap_master_key(slot, password_kek(export_key, salt), master_key, repository_id)
    wrapped_key = _encode_wrapped_key(slot.nonce, slot.wrapped)
    # The wrap lives only in the vault, so that erasing the record erases the way in.
    slot.nonce, slot.wrapped = b"", b""

    transport.register_finish(record_id, record, wrapped_key, guess_limit)
    return slot


def open_password_slot(
    slot: KeySlot, password: bytes, repository_id: bytes, transport: VaultTransport
) -> MasterKey:
    """Log in to the slot's vault record with ``password`` and return the master key.

    Raises WrongPasswordError with the guesses left when the password is wrong, and with
    none left when the vault destroyed the record.
    """
    info = password_slot_info(slot)
    subject = f"key slot {slot.name}"
    state, ke1 = client_login_start(password)
    try:
        challenge = transport.login_start(info.record_id, ke1)
        try:
            ke3, session_key, export_key = client_login_finish(
                state, challenge.ke2, ksf=info.ksf, context=LOGIN_CONTEXT
            )
        except OpaqueError:
            guesses_left = transport.login_abort(challenge.login_id)
            raise wrong_password_error(subject, guesses_left) from None
        release = transport.login_finish(challenge.login_id, ke3)
    except WrongPasswordError as error:
        # The message names the slot, which the user knows, rather than the vault record.
        raise wrong_password_error(subject, error.guesses_left) from None

    wrapped_key = open_release(session_key, release, info.record_id)
    nonce, wrapped = _decode_wrapped_key(wrapped_key, subject)
    with_wrap = KeySlot(
        kind=slot.kind, slot_id=slot.slot_id, created_ns=slot.created_ns, label=slot.label,
        parameters=slot.parameters, nonce=nonce, wrapped=wrapped,
    )
    return unwrap_master_key(with_wrap, password_kek(export_key, info.salt), repository_id)


def wrong_password_error(subject: str, guesses_left: int) -> WrongPasswordError:
    """Describe a wrong password for ``subject`` (such as "key slot 1a2b..."), with a
    warning when one more wrong password destroys the record."""
    if guesses_left <= 0:
        destroyed = destroyed_record_error(subject)
        return WrongPasswordError(
            f"wrong password for {subject}, and it was the last guess: the vault destroyed "
            "the password record",
            guesses_left=0,
            hint=destroyed.hint,
        )
    plural = "guess" if guesses_left == 1 else "guesses"
    hint = (
        "Check the password and try again."
        if guesses_left > 1
        else "One more wrong password destroys this password for good; after that only "
        "the recovery key opens the repository. If you are not sure of the password, "
        "use the recovery key now."
    )
    return WrongPasswordError(
        f"wrong password for {subject}: {guesses_left} {plural} left before the vault "
        "destroys the password record",
        guesses_left=guesses_left,
        hint=hint,
    )


def destroyed_record_error(subject: str) -> WrongPasswordError:
    """Describe a login refused because the vault destroyed the record earlier."""
    return WrongPasswordError(
        f"the password of {subject} no longer works: the vault destroyed its record "
        "after too many wrong passwords",
        guesses_left=0,
        hint="Open the repository with its recovery key (BACKVAULT_RECOVERY_KEY_FILE or "
        "--recovery-key-file), then set a new password with 'backvault key add-password' "
        "and remove the old slot with 'backvault key remove'.",
    )

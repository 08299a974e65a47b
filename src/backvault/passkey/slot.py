"""Passkey key slots: the master key wrapped under a key derived from a passkey's PRF output.

A passkey with the WebAuthn PRF extension (CTAP2 ``hmac-secret`` underneath) returns 32
bytes that only its authenticator can compute, for a given credential and input. The
slot stores that input (``prf_salt``) and derives its key-encryption key as

    KEK = HKDF-SHA256(ikm=PRF output, salt=salt, info="backvault v1 passkey slot kek")

with a second random per-slot ``salt``. The PRF output has 256 bits from the
authenticator's secret, so no stretching is needed, as for the recovery key.

Slot parameters (all covered by the associated data of the wrap, see
:mod:`backvault.crypto.slots`, so changing any of them makes the slot fail to open):

- ``method``: ``"webauthn"`` (a browser ceremony through a backvault server's pages) or
  ``"fido2"`` (CTAP2 spoken directly to a security key).
- ``rp_id``: the WebAuthn relying party id the credential belongs to.
- ``server``: the backvault server address whose pages run the ceremony, ``""`` for fido2.
- ``credential_id``: the credential id, 1 to 1023 bytes (WebAuthn Level 3, section 4).
- ``prf_salt``: 32 random bytes, the PRF input (``eval.first``).
- ``salt``: 32 random bytes, the HKDF salt.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from backvault.crypto import aead
from backvault.crypto.keys import MasterKey, hkdf_sha256
from backvault.crypto.slots import (
    KeySlot,
    decode_slot,
    encode_slot,
    new_slot,
    unwrap_master_key,
    wrap_master_key,
)
from backvault.errors import IntegrityError

KIND_PASSKEY = "passkey"
METHOD_WEBAUTHN = "webauthn"
METHOD_FIDO2 = "fido2"
METHODS = (METHOD_WEBAUTHN, METHOD_FIDO2)
LABEL_PASSKEY_KEK = b"backvault v1 passkey slot kek"
PRF_OUTPUT_SIZE = 32  # bytes, the output of the WebAuthn PRF extension and of hmac-secret
PRF_SALT_SIZE = 32  # bytes
MAX_CREDENTIAL_ID_SIZE = 1023  # bytes, the WebAuthn Level 3 limit
MAX_RP_ID_LENGTH = 253  # characters, the longest DNS name


@dataclass(frozen=True)
class PasskeySlotInfo:
    """The parameters of a passkey slot, checked."""

    name: str
    method: str
    rp_id: str
    server: str
    credential_id: bytes
    prf_salt: bytes
    salt: bytes


def new_prf_salt() -> bytes:
    return secrets.token_bytes(PRF_SALT_SIZE)


def passkey_kek(prf_output: bytes, salt: bytes) -> bytes:
    return hkdf_sha256(prf_output, salt=salt, info=LABEL_PASSKEY_KEK)


def new_passkey_parameters(
    *, method: str, rp_id: str, server: str, credential_id: bytes, prf_salt: bytes
) -> dict[str, Any]:
    """Return the parameters of a new passkey slot, with a fresh HKDF salt.

    Raises ValueError when a value could not be stored in a valid slot.
    """
    parameters: dict[str, Any] = {
        "method": method,
        "rp_id": rp_id,
        "server": server,
        "credential_id": credential_id,
        "prf_salt": prf_salt,
        "salt": aead.new_salt(),
    }
    problem = _parameter_problem(parameters)
    if problem is not None:
        raise ValueError(f"invalid passkey slot parameter: {problem}")
    return parameters


def create_passkey_slot(
    prf_output: bytes,
    master_key: MasterKey,
    repository_id: bytes,
    *,
    method: str,
    rp_id: str,
    server: str,
    credential_id: bytes,
    prf_salt: bytes,
    name: str,
) -> KeySlot:
    """Make a passkey slot that ``prf_output`` opens.

    The caller should open the decoded encoding of the slot with the output of a second
    PRF evaluation (:func:`check_new_passkey_slot`) before it stores the slot.
    """
    if len(prf_output) != PRF_OUTPUT_SIZE:
        raise ValueError(f"a PRF output has {PRF_OUTPUT_SIZE} bytes, not {len(prf_output)}")
    parameters = new_passkey_parameters(
        method=method, rp_id=rp_id, server=server, credential_id=credential_id,
        prf_salt=prf_salt,
    )
    slot = new_slot(KIND_PASSKEY, name, parameters)
    # The wrap comes last: its associated data covers the parameters set above.
    wrap_master_key(slot, passkey_kek(prf_output, parameters["salt"]), master_key, repository_id)
    return slot


def passkey_slot_info(slot: KeySlot) -> PasskeySlotInfo:
    """Read and check the parameters of a passkey slot; raise IntegrityError if invalid."""
    if slot.kind != KIND_PASSKEY or _parameter_problem(slot.parameters) is not None:
        raise IntegrityError(f"key slot {slot.name}")
    parameters = slot.parameters
    return PasskeySlotInfo(
        name=slot.label,
        method=parameters["method"],
        rp_id=parameters["rp_id"],
        server=parameters["server"],
        credential_id=parameters["credential_id"],
        prf_salt=parameters["prf_salt"],
        salt=parameters["salt"],
    )


def open_passkey_slot(slot: KeySlot, prf_output: bytes, repository_id: bytes) -> MasterKey:
    """Return the master key in ``slot``; raise IntegrityError if ``prf_output`` does not
    open it."""
    info = passkey_slot_info(slot)
    if len(prf_output) != PRF_OUTPUT_SIZE:
        raise IntegrityError(f"key slot {slot.name}")
    return unwrap_master_key(slot, passkey_kek(prf_output, info.salt), repository_id)


def check_new_passkey_slot(
    slot: KeySlot, prf_output: bytes, master_key: MasterKey, repository_id: bytes
) -> None:
    """Open the stored form of a new slot with a second PRF output, as the repository would.

    Raises IntegrityError when the slot does not open or opens to another key, so that a
    slot that cannot open the repository is never saved.
    """
    decoded = decode_slot(encode_slot(slot), subject=f"new key slot {slot.name}")
    opened = open_passkey_slot(decoded, prf_output, repository_id)
    if not hmac.compare_digest(opened.raw, master_key.raw):
        raise IntegrityError(f"new key slot {slot.name}")


def _parameter_problem(parameters: dict[str, Any]) -> str | None:
    """Name the first invalid parameter of a passkey slot, or return None if all are valid."""
    method = parameters.get("method")
    rp_id = parameters.get("rp_id")
    server = parameters.get("server")
    credential_id = parameters.get("credential_id")
    if method not in METHODS:
        return f"method {method!r}"
    if not isinstance(rp_id, str) or not 0 < len(rp_id) <= MAX_RP_ID_LENGTH:
        return f"rp_id {rp_id!r}"
    if not isinstance(server, str) or (method == METHOD_FIDO2) != (server == ""):
        return f"server {server!r} for method {method}"
    if method == METHOD_WEBAUTHN and not _is_http_url(server):
        return f"server {server!r}"
    if not isinstance(credential_id, bytes):
        return "credential_id"
    if not 0 < len(credential_id) <= MAX_CREDENTIAL_ID_SIZE:
        return f"credential_id of {len(credential_id)} bytes"
    for name, size in (("prf_salt", PRF_SALT_SIZE), ("salt", aead.SALT_SIZE)):
        value = parameters.get(name)
        if not isinstance(value, bytes) or len(value) != size:
            return name
    return None


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)

"""Key slots: the master key wrapped under one protection each.

A key slot stores ``{kind, id, created, parameters, nonce, wrapped}``: the master key
encrypted with AES-256-GCM under a key-encryption key (KEK) that only the holder of the
protection can derive. Adding or removing a slot never touches the data. The associated
data of the wrap is the header, the repository id and every other field of the slot, so a
slot cannot be moved to another repository, passed off as another kind, or changed in
any field without failing to open.

Stored layout (one file per slot, named by the hex slot id)::

    offset  size  field
    0       8     header: magic "BVKS", version 1, 3 reserved bytes
    8       n     msgpack map: kind (str), id (16 bytes), created (int, ns since the
                  epoch), label (str), parameters (map), nonce (12 bytes), wrapped (48 bytes)

Kinds of version 1: ``recovery`` (KEK from the recovery key). The password and passkey
kinds add their own parameters and derive their KEK elsewhere, then use the same
:func:`wrap_master_key` and :func:`unwrap_master_key`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from backvault.crypto import aead
from backvault.crypto.keys import MasterKey, hkdf_sha256
from backvault.crypto.recovery import RecoveryKey
from backvault.errors import IntegrityError
from backvault.repository.format import MAGIC_KEY_SLOT, check_header, make_header

SLOT_ID_SIZE = 16  # bytes
KIND_RECOVERY = "recovery"
LABEL_RECOVERY_KEK = b"backvault v1 recovery key kek"


@dataclass
class KeySlot:
    kind: str
    slot_id: bytes
    created_ns: int
    label: str
    parameters: dict[str, Any] = field(default_factory=dict)
    nonce: bytes = b""
    wrapped: bytes = b""

    @property
    def name(self) -> str:
        return self.slot_id.hex()


def new_slot(kind: str, label: str, parameters: dict[str, Any]) -> KeySlot:
    return KeySlot(
        kind=kind,
        slot_id=secrets.token_bytes(SLOT_ID_SIZE),
        created_ns=time.time_ns(),
        label=label,
        parameters=parameters,
    )


def _wrap_associated_data(slot: KeySlot, repository_id: bytes) -> bytes:
    """Bind the wrap to the repository and to every field of the slot but the wrap itself.

    Changing the kind, label, creation time or any parameter of a stored slot therefore
    makes it fail to open, like flipping a byte of the wrapped key would.
    """
    fields = [slot.kind, slot.slot_id, slot.created_ns, slot.label, slot.parameters]
    return make_header(MAGIC_KEY_SLOT) + repository_id + msgpack.packb(fields, use_bin_type=True)


def wrap_master_key(slot: KeySlot, kek: bytes, master_key: MasterKey, repository_id: bytes) -> None:
    """Store ``master_key`` in ``slot``, encrypted under ``kek``."""
    associated_data = _wrap_associated_data(slot, repository_id)
    slot.nonce, slot.wrapped = aead.wrap_key(kek, master_key.raw, associated_data)


def unwrap_master_key(slot: KeySlot, kek: bytes, repository_id: bytes) -> MasterKey:
    """Return the master key in ``slot``; raise IntegrityError if ``kek`` does not open it."""
    associated_data = _wrap_associated_data(slot, repository_id)
    raw = aead.unwrap_key(
        kek, slot.nonce, slot.wrapped, associated_data, subject=f"key slot {slot.name}"
    )
    return MasterKey(raw)


def recovery_kek(recovery_key: RecoveryKey, salt: bytes) -> bytes:
    # The recovery key carries 240 random bits, so a fast KDF is enough: no guessing
    # attack can enumerate that space, and slow stretching would add nothing.
    return hkdf_sha256(recovery_key.secret, salt=salt, info=LABEL_RECOVERY_KEK)


def make_recovery_slot(
    recovery_key: RecoveryKey, master_key: MasterKey, repository_id: bytes
) -> KeySlot:
    """Make the slot that the recovery key opens, with an escrowed copy of the key.

    The escrow is the recovery key encrypted under a subkey of the master key, so that
    ``key show`` can display the recovery key to someone who unlocked any slot.
    """
    salt = aead.new_salt()
    slot = new_slot(KIND_RECOVERY, "recovery key", {"salt": salt})

    escrow_key = master_key.derive_subkeys(repository_id).recovery_escrow
    escrow_nonce, escrow = aead.wrap_key(escrow_key, recovery_key.secret, slot.slot_id)
    slot.parameters["escrow_nonce"] = escrow_nonce
    slot.parameters["escrow"] = escrow

    # The wrap comes last: its associated data covers the parameters set above.
    wrap_master_key(slot, recovery_kek(recovery_key, salt), master_key, repository_id)
    return slot


def open_recovery_slot(slot: KeySlot, recovery_key: RecoveryKey, repository_id: bytes) -> MasterKey:
    kek = recovery_kek(recovery_key, _bytes_parameter(slot, "salt"))
    return unwrap_master_key(slot, kek, repository_id)


def read_escrowed_recovery_key(
    slot: KeySlot, master_key: MasterKey, repository_id: bytes
) -> RecoveryKey:
    escrow_key = master_key.derive_subkeys(repository_id).recovery_escrow
    secret = aead.unwrap_key(
        escrow_key,
        _bytes_parameter(slot, "escrow_nonce"),
        _bytes_parameter(slot, "escrow"),
        slot.slot_id,
        subject=f"key slot {slot.name}",
    )
    return RecoveryKey.from_secret(secret)


def encode_slot(slot: KeySlot) -> bytes:
    body = {
        "kind": slot.kind,
        "id": slot.slot_id,
        "created": slot.created_ns,
        "label": slot.label,
        "parameters": slot.parameters,
        "nonce": slot.nonce,
        "wrapped": slot.wrapped,
    }
    return make_header(MAGIC_KEY_SLOT) + msgpack.packb(body, use_bin_type=True)


def decode_slot(data: bytes, *, subject: str) -> KeySlot:
    check_header(data, MAGIC_KEY_SLOT, subject=subject)
    try:
        body = msgpack.unpackb(data[8:], raw=False)
        slot = KeySlot(
            kind=str(body["kind"]),
            slot_id=bytes(body["id"]),
            created_ns=int(body["created"]),
            label=str(body["label"]),
            parameters=dict(body["parameters"]),
            nonce=bytes(body["nonce"]),
            wrapped=bytes(body["wrapped"]),
        )
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        raise IntegrityError(subject) from None
    if len(slot.slot_id) != SLOT_ID_SIZE:
        raise IntegrityError(subject)
    return slot


def _bytes_parameter(slot: KeySlot, name: str) -> bytes:
    value = slot.parameters.get(name)
    if not isinstance(value, bytes):
        raise IntegrityError(f"key slot {slot.name}")
    return value

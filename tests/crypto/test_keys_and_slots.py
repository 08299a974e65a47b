"""Tests of the master key, its HKDF subkeys and the key slots that wrap it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backvault import api
from backvault.crypto.keys import MasterKey, Subkeys
from backvault.crypto.recovery import RecoveryKey
from backvault.crypto.slots import (
    KIND_RECOVERY,
    KeySlot,
    decode_slot,
    encode_slot,
    make_recovery_slot,
    new_slot,
    open_recovery_slot,
    read_escrowed_recovery_key,
    unwrap_master_key,
    wrap_master_key,
)
from backvault.errors import IntegrityError

MASTER_KEY_BYTES = bytes.fromhex(
    "6b1f0c2a9e44d3577a80c5e1f2093b6d4c8e0a1b2c3d4e5f60718293a4b5c6d7"
)
REPOSITORY_ID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
OTHER_REPOSITORY_ID = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
KEK = bytes(range(32))
RECOVERY_KEY = RecoveryKey.from_secret(bytes(range(100, 130)))
OTHER_RECOVERY_KEY = RecoveryKey.from_secret(bytes(range(130, 160)))

SUBKEY_LABELS = {
    "data": b"backvault v1 data key",
    "chunk_id": b"backvault v1 chunk id key",
    "metadata": b"backvault v1 metadata key",
    "config_mac": b"backvault v1 config mac key",
    "recovery_escrow": b"backvault v1 recovery escrow key",
}


def byte_subkeys(subkeys: Subkeys) -> dict[str, bytes]:
    return {name: getattr(subkeys, name) for name in SUBKEY_LABELS}


def hkdf_reference(key: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


# Subkeys ------------------------------------------------------------------------------


def test_subkeys_follow_rfc5869_labels() -> None:
    subkeys = MasterKey(MASTER_KEY_BYTES).derive_subkeys(REPOSITORY_ID)

    for name, label in SUBKEY_LABELS.items():
        expected = hkdf_reference(MASTER_KEY_BYTES, REPOSITORY_ID, label)
        assert getattr(subkeys, name) == expected, name


def test_chunker_seed_is_63_bit_and_nonzero() -> None:
    seed_bytes = hkdf_reference(
        MASTER_KEY_BYTES, REPOSITORY_ID, b"backvault v1 chunker seed", length=8
    )
    subkeys = MasterKey(MASTER_KEY_BYTES).derive_subkeys(REPOSITORY_ID)

    assert subkeys.chunker_seed == (int.from_bytes(seed_bytes, "big") & (2**63 - 1)) | 1
    assert 0 < subkeys.chunker_seed < 2**63


def test_subkeys_differ_per_label() -> None:
    subkeys = MasterKey(MASTER_KEY_BYTES).derive_subkeys(REPOSITORY_ID)
    values = list(byte_subkeys(subkeys).values())

    assert len(set(values)) == len(values)
    assert all(len(value) == 32 for value in values)
    assert MASTER_KEY_BYTES not in values


def test_subkeys_differ_per_repository_id() -> None:
    master_key = MasterKey(MASTER_KEY_BYTES)
    first = master_key.derive_subkeys(REPOSITORY_ID)
    second = master_key.derive_subkeys(OTHER_REPOSITORY_ID)

    for name in SUBKEY_LABELS:
        assert getattr(first, name) != getattr(second, name), name
    assert first.chunker_seed != second.chunker_seed


def test_subkeys_differ_per_master_key() -> None:
    first = MasterKey(MASTER_KEY_BYTES).derive_subkeys(REPOSITORY_ID)
    second = MasterKey(bytes(32)).derive_subkeys(REPOSITORY_ID)

    for name in SUBKEY_LABELS:
        assert getattr(first, name) != getattr(second, name), name


def test_subkeys_are_deterministic() -> None:
    first = MasterKey(MASTER_KEY_BYTES).derive_subkeys(REPOSITORY_ID)
    second = MasterKey(MASTER_KEY_BYTES).derive_subkeys(REPOSITORY_ID)

    assert first == second


# Keeping keys out of output -----------------------------------------------------------


def assert_hides(text: str, secret: bytes) -> None:
    assert secret.hex() not in text.lower()
    assert repr(secret) not in text
    assert str(list(secret)) not in text


def test_master_key_repr_hides_key() -> None:
    master_key = MasterKey(MASTER_KEY_BYTES)

    for text in (repr(master_key), str(master_key), f"{master_key}", repr([master_key])):
        assert "hidden" in text
        assert_hides(text, MASTER_KEY_BYTES)


def test_subkeys_repr_hides_keys() -> None:
    subkeys = MasterKey(MASTER_KEY_BYTES).derive_subkeys(REPOSITORY_ID)

    for text in (repr(subkeys), str(subkeys), f"{subkeys}", repr({"keys": subkeys})):
        assert "hidden" in text
        for value in byte_subkeys(subkeys).values():
            assert_hides(text, value)
        assert str(subkeys.chunker_seed) not in text


def test_master_key_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey(bytes(31))
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey(bytes(33))


def test_master_key_equality() -> None:
    assert MasterKey(MASTER_KEY_BYTES) == MasterKey(MASTER_KEY_BYTES)
    assert MasterKey(MASTER_KEY_BYTES) != MasterKey(bytes(32))
    assert MasterKey(MASTER_KEY_BYTES) != MASTER_KEY_BYTES


def test_master_key_is_unhashable() -> None:
    """Equal keys compare equal, so a hash would have to come from the key bytes."""
    with pytest.raises(TypeError):
        hash(MasterKey(MASTER_KEY_BYTES))


def test_generated_master_keys_differ() -> None:
    first, second = MasterKey.generate(), MasterKey.generate()

    assert first != second
    assert len(first.raw) == 32


# Wrapping the master key --------------------------------------------------------------


def wrapped_slot(kind: str = "test") -> KeySlot:
    slot = new_slot(kind, "test slot", {})
    wrap_master_key(slot, KEK, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID)
    return slot


def test_slot_wrap_round_trip() -> None:
    slot = wrapped_slot()

    assert len(slot.nonce) == 12
    assert len(slot.wrapped) == 32 + 16
    assert MASTER_KEY_BYTES not in slot.wrapped
    assert unwrap_master_key(slot, KEK, REPOSITORY_ID) == MasterKey(MASTER_KEY_BYTES)


def test_slot_round_trip_through_encoding() -> None:
    slot = wrapped_slot()

    decoded = decode_slot(encode_slot(slot), subject="test slot")

    assert decoded == slot
    assert unwrap_master_key(decoded, KEK, REPOSITORY_ID) == MasterKey(MASTER_KEY_BYTES)


def test_wraps_use_fresh_nonces() -> None:
    first, second = wrapped_slot(), wrapped_slot()

    assert first.slot_id != second.slot_id
    assert first.nonce != second.nonce
    assert first.wrapped != second.wrapped


def unwrap_error(slot: KeySlot, kek: bytes, repository_id: bytes) -> IntegrityError:
    with pytest.raises(IntegrityError) as caught:
        unwrap_master_key(slot, kek, repository_id)
    return caught.value


def test_slot_in_other_repository_fails() -> None:
    slot = wrapped_slot()

    error = unwrap_error(slot, KEK, OTHER_REPOSITORY_ID)

    assert error.message == f"key slot {slot.name}: decryption or authentication failed"


def test_slot_with_changed_kind_fails() -> None:
    slot = dataclasses.replace(wrapped_slot(kind="password"), kind=KIND_RECOVERY)

    unwrap_error(slot, KEK, REPOSITORY_ID)


def test_slot_with_changed_id_fails() -> None:
    slot = dataclasses.replace(wrapped_slot(), slot_id=bytes(16))

    unwrap_error(slot, KEK, REPOSITORY_ID)


@pytest.mark.parametrize(
    "change",
    [
        {"label": "another label"},
        {"created_ns": 1},
        {"parameters": {"extra": b"added"}},
    ],
    ids=["label", "created", "parameters"],
)
def test_slot_with_changed_field_fails(change: dict[str, object]) -> None:
    slot = dataclasses.replace(wrapped_slot(), **change)  # type: ignore[arg-type]

    unwrap_error(slot, KEK, REPOSITORY_ID)


def test_slot_with_wrong_kek_fails() -> None:
    unwrap_error(wrapped_slot(), bytes(32), REPOSITORY_ID)


@pytest.mark.parametrize("position", [0, 15, 31, 32, 47])
def test_slot_with_flipped_wrapped_byte_fails(position: int) -> None:
    slot = wrapped_slot()
    wrapped = bytearray(slot.wrapped)
    wrapped[position] ^= 0x01

    unwrap_error(dataclasses.replace(slot, wrapped=bytes(wrapped)), KEK, REPOSITORY_ID)


@pytest.mark.parametrize("nonce", [b"", bytes(12), bytes(16)], ids=["empty", "zero", "long"])
def test_slot_with_wrong_nonce_fails(nonce: bytes) -> None:
    slot = dataclasses.replace(wrapped_slot(), nonce=nonce)

    unwrap_error(slot, KEK, REPOSITORY_ID)


def test_every_unwrap_failure_has_one_message() -> None:
    slot = wrapped_slot()
    failures = [
        unwrap_error(slot, KEK, OTHER_REPOSITORY_ID),
        unwrap_error(dataclasses.replace(slot, kind="other"), KEK, REPOSITORY_ID),
        unwrap_error(slot, bytes(32), REPOSITORY_ID),
        unwrap_error(dataclasses.replace(slot, nonce=b""), KEK, REPOSITORY_ID),
    ]

    assert {type(error) for error in failures} == {IntegrityError}
    assert len({error.message for error in failures}) == 1


# Recovery slots and the escrowed recovery key -----------------------------------------


def recovery_slot() -> KeySlot:
    return make_recovery_slot(RECOVERY_KEY, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID)


def test_recovery_slot_opens_with_its_key() -> None:
    slot = recovery_slot()

    assert slot.kind == KIND_RECOVERY
    assert open_recovery_slot(slot, RECOVERY_KEY, REPOSITORY_ID) == MasterKey(MASTER_KEY_BYTES)


def test_recovery_slot_rejects_other_key() -> None:
    with pytest.raises(IntegrityError):
        open_recovery_slot(recovery_slot(), OTHER_RECOVERY_KEY, REPOSITORY_ID)


def test_recovery_slot_in_other_repository() -> None:
    with pytest.raises(IntegrityError):
        open_recovery_slot(recovery_slot(), RECOVERY_KEY, OTHER_REPOSITORY_ID)


def test_recovery_slot_without_salt_fails() -> None:
    slot = recovery_slot()
    slot.parameters["salt"] = "not bytes"

    with pytest.raises(IntegrityError):
        open_recovery_slot(slot, RECOVERY_KEY, REPOSITORY_ID)


def test_recovery_escrow_returns_same_key() -> None:
    slot = recovery_slot()

    escrowed = read_escrowed_recovery_key(slot, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID)

    assert escrowed == RECOVERY_KEY
    assert escrowed.format() == RECOVERY_KEY.format()


def test_recovery_escrow_survives_encoding() -> None:
    slot = decode_slot(encode_slot(recovery_slot()), subject="test slot")

    escrowed = read_escrowed_recovery_key(slot, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID)

    assert escrowed == RECOVERY_KEY


def test_recovery_escrow_rejects_other_master_key() -> None:
    with pytest.raises(IntegrityError):
        read_escrowed_recovery_key(recovery_slot(), MasterKey(bytes(32)), REPOSITORY_ID)


def test_recovery_escrow_is_bound_to_slot_id() -> None:
    slot = dataclasses.replace(recovery_slot(), slot_id=bytes(16))

    with pytest.raises(IntegrityError):
        read_escrowed_recovery_key(slot, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID)


def test_repository_escrow_returns_init_key(tmp_path: Path) -> None:
    repository, recovery_key = api.init_repository(str(tmp_path / "repository"))

    reopened = api.open_repository(str(tmp_path / "repository"), recovery_key=recovery_key)

    assert reopened.recovery_key() == recovery_key
    assert reopened.master_key == repository.master_key

"""Tests of passkey key slots: the KEK derivation, the stored bytes, and tampering.

The golden values were computed once by backvault with fixed randomness and time, and
checked by an independent computation (cryptography's HKDF and AES-GCM with msgpack, as
the tests below still do) before they were pasted here.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backvault.crypto.keys import MasterKey
from backvault.crypto.slots import KeySlot, decode_slot, encode_slot
from backvault.errors import IntegrityError
from backvault.passkey.slot import (
    KIND_PASSKEY,
    check_new_passkey_slot,
    create_passkey_slot,
    new_passkey_parameters,
    new_prf_salt,
    open_passkey_slot,
    passkey_kek,
    passkey_slot_info,
)

MASTER_KEY_BYTES = bytes(range(32))
REPOSITORY_ID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
OTHER_REPOSITORY_ID = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
PRF_OUTPUT = bytes(range(0x40, 0x60))
OTHER_PRF_OUTPUT = bytes(range(0x60, 0x80))
PRF_SALT = bytes(range(0xA0, 0xC0))
CREDENTIAL_ID = bytes.fromhex("c0ffee00112233445566778899aabbcc")
SERVER = "http://localhost:8443"

# Fixed stand-ins for secrets.token_bytes, by size, and for time.time_ns.
FIXED_RANDOM = {16: b"\x11" * 16, 32: b"\x22" * 32, 12: b"\x33" * 12}
FIXED_TIME_NS = 1_700_000_000_123_456_789

GOLDEN_KEK = bytes.fromhex("970f3a5089e3e3d87734556e83fbea06f6aa87ff575237eebd26e083bfdb8808")
GOLDEN_SLOT = bytes.fromhex(
    "42564b530100000087a46b696e64a7706173736b6579a26964c41011111111111111111111111111111111"
    "a763726561746564cf17979cfe3d85cd15a56c6162656ca66c6170746f70aa706172616d65746572738"
    "6a66d6574686f64a8776562617574686ea572705f6964a96c6f63616c686f7374a6736572766572b568"
    "7474703a2f2f6c6f63616c686f73743a38343433ad63726564656e7469616c5f6964c410c0ffee001122"
    "33445566778899aabbcca87072665f73616c74c420a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4"
    "b5b6b7b8b9babbbcbdbebfa473616c74c420222222222222222222222222222222222222222222222222"
    "2222222222222222a56e6f6e6365c40c333333333333333333333333a777726170706564c4307ca56806"
    "1f74112c4706ac3fa0ed6617421cd01eeaf1ea47b54774adaac30f3eed84db3ce0032a0d5c0f70e7aca1"
    "5088"
)


def hkdf_reference(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def make_slot(prf_output: bytes = PRF_OUTPUT, **overrides: Any) -> KeySlot:
    options: dict[str, Any] = {
        "method": "webauthn", "rp_id": "localhost", "server": SERVER,
        "credential_id": CREDENTIAL_ID, "prf_salt": PRF_SALT, "name": "laptop",
    }
    options.update(overrides)
    return create_passkey_slot(prf_output, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID, **options)


def stored_copy(slot: KeySlot) -> KeySlot:
    return decode_slot(encode_slot(slot), subject="test slot")


@pytest.fixture
def fixed_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "token_bytes", lambda size: FIXED_RANDOM[size])
    monkeypatch.setattr(time, "time_ns", lambda: FIXED_TIME_NS)


# Golden bytes ---------------------------------------------------------------------------


def test_kek_matches_golden_value() -> None:
    assert passkey_kek(PRF_OUTPUT, FIXED_RANDOM[32]) == GOLDEN_KEK


def test_kek_matches_reference_hkdf() -> None:
    expected = hkdf_reference(PRF_OUTPUT, FIXED_RANDOM[32], b"backvault v1 passkey slot kek")

    assert passkey_kek(PRF_OUTPUT, FIXED_RANDOM[32]) == expected


@pytest.mark.usefixtures("fixed_randomness")
def test_slot_encoding_matches_golden_bytes() -> None:
    assert encode_slot(make_slot()) == GOLDEN_SLOT


def test_golden_slot_fields_read_independently() -> None:
    assert GOLDEN_SLOT[:8] == b"BVKS\x01\x00\x00\x00"
    body = msgpack.unpackb(GOLDEN_SLOT[8:], raw=False)

    assert body["kind"] == "passkey"
    assert body["id"] == FIXED_RANDOM[16]
    assert body["created"] == FIXED_TIME_NS
    assert body["label"] == "laptop"
    assert body["parameters"] == {
        "method": "webauthn", "rp_id": "localhost", "server": SERVER,
        "credential_id": CREDENTIAL_ID, "prf_salt": PRF_SALT, "salt": FIXED_RANDOM[32],
    }
    assert body["nonce"] == FIXED_RANDOM[12]
    assert len(body["wrapped"]) == 48


def test_golden_slot_opens_with_reference_crypto() -> None:
    body = msgpack.unpackb(GOLDEN_SLOT[8:], raw=False)
    kek = hkdf_reference(PRF_OUTPUT, body["parameters"]["salt"], b"backvault v1 passkey slot kek")
    wrap_key = hkdf_reference(kek, b"", b"backvault v1 key slot wrap")
    fields = [body["kind"], body["id"], body["created"], body["label"], body["parameters"]]
    associated_data = GOLDEN_SLOT[:8] + REPOSITORY_ID + msgpack.packb(fields, use_bin_type=True)

    master_key = AESGCM(wrap_key).decrypt(body["nonce"], body["wrapped"], associated_data)

    assert master_key == MASTER_KEY_BYTES


def test_golden_slot_opens_with_backvault() -> None:
    slot = decode_slot(GOLDEN_SLOT, subject="golden slot")

    assert open_passkey_slot(slot, PRF_OUTPUT, REPOSITORY_ID).raw == MASTER_KEY_BYTES


# Round trip and parameters --------------------------------------------------------------


def test_slot_info_reads_parameters() -> None:
    slot = make_slot()

    info = passkey_slot_info(stored_copy(slot))

    assert slot.kind == KIND_PASSKEY
    assert info.name == "laptop"
    assert info.method == "webauthn"
    assert info.rp_id == "localhost"
    assert info.server == SERVER
    assert info.credential_id == CREDENTIAL_ID
    assert info.prf_salt == PRF_SALT
    assert len(info.salt) == 32


def test_fido2_slot_round_trip() -> None:
    slot = make_slot(method="fido2", rp_id="backvault", server="")

    master_key = open_passkey_slot(stored_copy(slot), PRF_OUTPUT, REPOSITORY_ID)

    assert master_key.raw == MASTER_KEY_BYTES


def test_new_slots_get_fresh_salts() -> None:
    first, second = make_slot(), make_slot()

    assert first.parameters["salt"] != second.parameters["salt"]
    assert first.slot_id != second.slot_id
    assert new_prf_salt() != new_prf_salt()
    assert len(new_prf_salt()) == 32


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("method", "u2f"),
        ("rp_id", ""),
        ("server", ""),
        ("server", "ftp://localhost"),
        ("credential_id", b""),
        ("credential_id", b"x" * 1024),
        ("prf_salt", b"short"),
    ],
)
def test_invalid_parameters_are_rejected(name: str, value: Any) -> None:
    options: dict[str, Any] = {
        "method": "webauthn", "rp_id": "localhost", "server": SERVER,
        "credential_id": CREDENTIAL_ID, "prf_salt": PRF_SALT,
    }
    options[name] = value

    with pytest.raises(ValueError, match=name):
        new_passkey_parameters(**options)


def test_fido2_slot_rejects_server() -> None:
    with pytest.raises(ValueError, match="server"):
        make_slot(method="fido2", rp_id="backvault", server=SERVER)


def test_short_prf_output_is_rejected_at_creation() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        make_slot(prf_output=PRF_OUTPUT[:16])


# Tampering ------------------------------------------------------------------------------

CHANGED_PARAMETERS = {
    "method": "fido2",
    "rp_id": "example.com",
    "server": "http://localhost:9999",
    "credential_id": bytes.fromhex("c0ffee00112233445566778899aabbcd"),
    "prf_salt": bytes(range(0xA1, 0xC1)),
    "salt": b"\x44" * 32,
}


@pytest.mark.parametrize("name", sorted(CHANGED_PARAMETERS))
def test_changed_parameter_fails_to_open(name: str) -> None:
    slot = stored_copy(make_slot())
    slot.parameters[name] = CHANGED_PARAMETERS[name]
    if name == "method":
        slot.parameters["server"] = ""  # still a valid fido2 slot, so the wrap is what fails

    with pytest.raises(IntegrityError):
        open_passkey_slot(stored_copy(slot), PRF_OUTPUT, REPOSITORY_ID)


@pytest.mark.parametrize("name", ["label", "created_ns", "nonce", "wrapped"])
def test_changed_slot_field_fails_to_open(name: str) -> None:
    slot = stored_copy(make_slot())
    value = getattr(slot, name)
    if isinstance(value, bytes):
        changed: Any = bytes([value[0] ^ 1]) + value[1:]
    elif isinstance(value, int):
        changed = value + 1
    else:
        changed = value + " (copy)"
    setattr(slot, name, changed)

    with pytest.raises(IntegrityError):
        open_passkey_slot(stored_copy(slot), PRF_OUTPUT, REPOSITORY_ID)


def test_other_kind_is_not_a_passkey_slot() -> None:
    slot = stored_copy(make_slot())
    slot.kind = "recovery"

    with pytest.raises(IntegrityError):
        passkey_slot_info(slot)
    with pytest.raises(IntegrityError):
        open_passkey_slot(slot, PRF_OUTPUT, REPOSITORY_ID)


def test_missing_parameter_is_integrity_error() -> None:
    slot = stored_copy(make_slot())
    del slot.parameters["prf_salt"]

    with pytest.raises(IntegrityError):
        passkey_slot_info(slot)


def test_wrong_prf_output_fails_to_open() -> None:
    slot = stored_copy(make_slot())

    with pytest.raises(IntegrityError):
        open_passkey_slot(slot, OTHER_PRF_OUTPUT, REPOSITORY_ID)


def test_short_prf_output_fails_to_open() -> None:
    slot = stored_copy(make_slot())

    with pytest.raises(IntegrityError):
        open_passkey_slot(slot, PRF_OUTPUT[:31], REPOSITORY_ID)


def test_other_repository_fails_to_open() -> None:
    slot = stored_copy(make_slot())

    with pytest.raises(IntegrityError):
        open_passkey_slot(slot, PRF_OUTPUT, OTHER_REPOSITORY_ID)


# The check before a new slot is stored --------------------------------------------------


def test_new_slot_check_passes_with_same_output() -> None:
    slot = make_slot()

    check_new_passkey_slot(slot, PRF_OUTPUT, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID)


def test_new_slot_check_fails_with_other_output() -> None:
    slot = make_slot()

    with pytest.raises(IntegrityError):
        check_new_passkey_slot(slot, OTHER_PRF_OUTPUT, MasterKey(MASTER_KEY_BYTES), REPOSITORY_ID)


def test_new_slot_check_fails_for_other_master_key() -> None:
    slot = make_slot()
    other_master_key = MasterKey(bytes(range(1, 33)))

    with pytest.raises(IntegrityError):
        check_new_passkey_slot(slot, PRF_OUTPUT, other_master_key, REPOSITORY_ID)

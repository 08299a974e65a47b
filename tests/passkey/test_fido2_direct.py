"""FIDO2 passkeys over CTAP2, against the software authenticator of tests/helpers/soft_ctap2.py.

The authenticator does its own CBOR and cryptography, so these tests check that
backvault's CTAP2 requests (PIN/UV auth protocols 1 and 2, hmac-secret) are valid, and
that its output is the WebAuthn PRF output for the same credential and input.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
import sys
from pathlib import Path

import pytest
from fido2 import hid
from fido2.ctap import CtapError

from backvault.errors import PasskeyError, UsageError
from backvault.passkey.fido2_direct import (
    ENV_PIN_FILE,
    TOUCH_PROMPT,
    enrol_fido2,
    evaluate_fido2,
    find_fido2_device,
)
from tests.helpers.soft_ctap2 import SoftCtap2Authenticator

PIN = "4831"


@pytest.fixture(autouse=True)
def no_pin_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test with no PIN file and no terminal, whatever runs the tests."""
    monkeypatch.delenv(ENV_PIN_FILE, raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)


def pin_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pin: str) -> Path:
    path = tmp_path / "fido2-pin"
    path.write_text(pin + "\n")
    monkeypatch.setenv(ENV_PIN_FILE, str(path))
    return path


def quiet(message: str) -> None:
    del message


def enrol(authenticator: SoftCtap2Authenticator, prf_salt: bytes) -> tuple[bytes, bytes]:
    return enrol_fido2(authenticator, name="laptop key", prf_salt=prf_salt, notify=quiet)


def evaluate(
    authenticator: SoftCtap2Authenticator, credentials: list[tuple[bytes, bytes]]
) -> tuple[bytes, bytes]:
    return evaluate_fido2(authenticator, credentials=credentials, notify=quiet)


def expected_prf_output(
    authenticator: SoftCtap2Authenticator, credential_id: bytes, prf_salt: bytes
) -> bytes:
    """HMAC-SHA-256(CredRandomWithUV, SHA-256("WebAuthn PRF" || 0x00 || prf_salt))."""
    cred_random = authenticator.credentials[credential_id].cred_random_with_uv
    assert cred_random is not None
    hmac_secret_salt = hashlib.sha256(b"WebAuthn PRF" + b"\x00" + prf_salt).digest()
    return hmac.new(cred_random, hmac_secret_salt, hashlib.sha256).digest()


# Round trip and the PRF mapping ----------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="built-in-uv-protocol-2"),
        pytest.param({"pin_uv_protocols": (1,)}, id="built-in-uv-protocol-1"),
        pytest.param({"pin_uv_auth_token": False}, id="ctap-2.0-uv-option"),
    ],
)
def test_enrol_then_evaluate_round_trip(options: dict[str, object]) -> None:
    authenticator = SoftCtap2Authenticator(**options)  # type: ignore[arg-type]
    prf_salt = secrets.token_bytes(32)

    credential_id, enrolled_output = enrol(authenticator, prf_salt)
    used_id, output = evaluate(authenticator, [(credential_id, prf_salt)])

    assert list(authenticator.credentials) == [credential_id]
    assert used_id == credential_id
    assert len(output) == 32
    assert output == enrolled_output


@pytest.mark.parametrize("protocols", [(2,), (1,)], ids=["protocol-2", "protocol-1"])
def test_output_is_webauthn_prf_output(protocols: tuple[int, ...]) -> None:
    authenticator = SoftCtap2Authenticator(pin_uv_protocols=protocols)
    prf_salt = secrets.token_bytes(32)

    credential_id, enrolled_output = enrol(authenticator, prf_salt)
    _, output = evaluate(authenticator, [(credential_id, prf_salt)])

    expected = expected_prf_output(authenticator, credential_id, prf_salt)
    assert enrolled_output == expected
    assert output == expected


def test_output_depends_on_salt_and_credential() -> None:
    authenticator = SoftCtap2Authenticator()
    salt_a, salt_b = secrets.token_bytes(32), secrets.token_bytes(32)
    first_id, _ = enrol(authenticator, salt_a)
    second_id, _ = enrol(authenticator, salt_a)

    first_a = evaluate(authenticator, [(first_id, salt_a)])[1]
    first_a_again = evaluate(authenticator, [(first_id, salt_a)])[1]
    first_b = evaluate(authenticator, [(first_id, salt_b)])[1]
    second_a = evaluate(authenticator, [(second_id, salt_a)])[1]

    assert first_id != second_id
    assert first_a == first_a_again
    assert first_a != first_b
    assert first_a != second_a


def test_evaluate_uses_the_credential_the_key_holds() -> None:
    authenticator = SoftCtap2Authenticator()
    other_key = SoftCtap2Authenticator()
    salt_here, salt_elsewhere = secrets.token_bytes(32), secrets.token_bytes(32)
    held_id, _ = enrol(authenticator, salt_here)
    elsewhere_id, _ = enrol(other_key, salt_elsewhere)

    used_id, output = evaluate(
        authenticator, [(elsewhere_id, salt_elsewhere), (held_id, salt_here)]
    )

    assert used_id == held_id
    assert output == expected_prf_output(authenticator, held_id, salt_here)


def test_touch_prompt_is_shown() -> None:
    authenticator = SoftCtap2Authenticator()
    notices: list[str] = []

    enrol_fido2(authenticator, name="key", prf_salt=secrets.token_bytes(32), notify=notices.append)

    assert TOUCH_PROMPT in notices


def test_relying_party_id_is_used() -> None:
    authenticator = SoftCtap2Authenticator()
    prf_salt = secrets.token_bytes(32)
    credential_id, _ = enrol_fido2(
        authenticator, rp_id="example.org", name="key", prf_salt=prf_salt, notify=quiet
    )

    assert authenticator.credentials[credential_id].rp_id == "example.org"
    with pytest.raises(PasskeyError, match="does not hold"):
        evaluate(authenticator, [(credential_id, prf_salt)])  # the default rp id: backvault


# Keys that cannot protect backups --------------------------------------------------------


def test_key_without_hmac_secret_is_rejected_at_enrolment() -> None:
    authenticator = SoftCtap2Authenticator(hmac_secret=False)

    with pytest.raises(PasskeyError) as raised:
        enrol(authenticator, secrets.token_bytes(32))

    assert "cannot protect backups" in raised.value.message
    assert "hmac-secret" in raised.value.message
    assert raised.value.hint is not None
    assert "No key slot was added" in raised.value.hint
    assert authenticator.credentials == {}
    assert authenticator.touches == 0


def test_key_without_pin_or_uv_is_rejected() -> None:
    authenticator = SoftCtap2Authenticator(built_in_uv=False)

    with pytest.raises(PasskeyError, match="no PIN set"):
        enrol(authenticator, secrets.token_bytes(32))

    assert authenticator.credentials == {}


def test_key_without_pin_uv_protocol_is_rejected() -> None:
    authenticator = SoftCtap2Authenticator(pin_uv_protocols=())

    with pytest.raises(PasskeyError) as raised:
        enrol(authenticator, secrets.token_bytes(32))

    assert "cannot protect backups" in raised.value.message
    assert "no PIN/UV auth protocol" in raised.value.message
    assert authenticator.credentials == {}


def test_unknown_credential_is_rejected() -> None:
    authenticator = SoftCtap2Authenticator()
    enrol(authenticator, secrets.token_bytes(32))

    with pytest.raises(PasskeyError) as raised:
        evaluate(authenticator, [(secrets.token_bytes(32), secrets.token_bytes(32))])

    assert "does not hold the repository's FIDO2 passkey" in raised.value.message
    assert raised.value.hint is not None
    assert "recovery key" in raised.value.hint


# PIN --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocols", [(2,), (1,)], ids=["protocol-2", "protocol-1"])
def test_pin_from_file_unlocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocols: tuple[int, ...]
) -> None:
    authenticator = SoftCtap2Authenticator(
        pin=PIN, built_in_uv=False, pin_uv_protocols=protocols
    )
    pin_file(tmp_path, monkeypatch, PIN)
    prf_salt = secrets.token_bytes(32)

    credential_id, enrolled_output = enrol(authenticator, prf_salt)
    _, output = evaluate(authenticator, [(credential_id, prf_salt)])

    assert output == enrolled_output
    assert output == expected_prf_output(authenticator, credential_id, prf_salt)


def test_pin_from_terminal_unlocks(monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator = SoftCtap2Authenticator(pin=PIN, built_in_uv=False)
    prompts: list[str] = []

    def type_pin(prompt: str = "") -> str:
        prompts.append(prompt)
        return PIN

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(getpass, "getpass", type_pin)
    prf_salt = secrets.token_bytes(32)

    credential_id, enrolled_output = enrol(authenticator, prf_salt)

    assert prompts == ["PIN of the security key: "]  # asked once for both requests
    assert enrolled_output == expected_prf_output(authenticator, credential_id, prf_salt)


def test_wrong_pin_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator = SoftCtap2Authenticator(pin=PIN, built_in_uv=False)
    path = pin_file(tmp_path, monkeypatch, "0000")

    with pytest.raises(PasskeyError) as raised:
        enrol(authenticator, secrets.token_bytes(32))

    assert "wrong PIN" in raised.value.message
    assert "7 attempts left" in raised.value.message
    assert raised.value.hint is not None
    assert str(path) in raised.value.hint
    assert authenticator.credentials == {}


def test_three_wrong_pins_need_replugging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authenticator = SoftCtap2Authenticator(pin=PIN, built_in_uv=False)
    pin_file(tmp_path, monkeypatch, "0000")
    messages = []

    for _ in range(3):
        with pytest.raises(PasskeyError) as raised:
            enrol(authenticator, secrets.token_bytes(32))
        messages.append(raised.value.message)

    assert "wrong PIN" in messages[0]
    assert "wrong PIN" in messages[1]
    assert "unplugged" in messages[2]


def test_blocked_pin_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator = SoftCtap2Authenticator(pin=PIN, built_in_uv=False, pin_retries=1)
    pin_file(tmp_path, monkeypatch, "0000")

    with pytest.raises(PasskeyError) as raised:
        enrol(authenticator, secrets.token_bytes(32))

    assert "PIN is blocked" in raised.value.message
    assert raised.value.hint is not None
    assert "recovery key" in raised.value.hint


def test_missing_pin_without_terminal_is_rejected() -> None:
    authenticator = SoftCtap2Authenticator(pin=PIN, built_in_uv=False)

    with pytest.raises(UsageError) as raised:
        enrol(authenticator, secrets.token_bytes(32))

    assert "needs its PIN" in raised.value.message
    assert raised.value.hint is not None
    assert ENV_PIN_FILE in raised.value.hint
    assert authenticator.pin_retries == 8


def test_missing_pin_file_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator = SoftCtap2Authenticator(pin=PIN, built_in_uv=False)
    missing = tmp_path / "no-such-pin"
    monkeypatch.setenv(ENV_PIN_FILE, str(missing))

    with pytest.raises(UsageError, match=f"PIN file {missing} does not exist"):
        enrol(authenticator, secrets.token_bytes(32))


def test_short_pin_costs_no_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator = SoftCtap2Authenticator(pin=PIN, built_in_uv=False)
    pin_file(tmp_path, monkeypatch, "12")

    with pytest.raises(UsageError, match="has 2 characters"):
        enrol(authenticator, secrets.token_bytes(32))

    assert authenticator.pin_retries == 8


# Touches that fail -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (CtapError.ERR.USER_ACTION_TIMEOUT, "timed out waiting for a touch"),
        (CtapError.ERR.OPERATION_DENIED, "denied on the security key"),
        (CtapError.ERR.KEEPALIVE_CANCEL, "cancelled on the security key"),
    ],
)
def test_failed_touch_is_reported(status: CtapError.ERR, expected: str) -> None:
    authenticator = SoftCtap2Authenticator()
    prf_salt = secrets.token_bytes(32)
    credential_id, _ = enrol(authenticator, prf_salt)
    authenticator.user_presence_error = status

    with pytest.raises(PasskeyError) as raised:
        evaluate(authenticator, [(credential_id, prf_salt)])

    assert expected in raised.value.message
    assert raised.value.hint is not None
    assert "Run the command again" in raised.value.hint


# Finding a device ------------------------------------------------------------------------


def test_find_device_missing_path_names_it(tmp_path: Path) -> None:
    path = tmp_path / "hidraw9"

    with pytest.raises(UsageError) as raised:
        find_fido2_device(str(path))

    assert str(path) in raised.value.message
    assert "does not exist" in raised.value.message


def test_find_device_not_hidraw_names_it(tmp_path: Path) -> None:
    path = tmp_path / "regular-file"
    path.write_bytes(b"not a device")

    with pytest.raises(UsageError) as raised:
        find_fido2_device(str(path))

    assert str(path) in raised.value.message
    assert raised.value.hint is not None
    assert "/dev/hidraw0" in raised.value.hint


def test_find_device_none_plugged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hid, "list_descriptors", lambda: [])

    with pytest.raises(PasskeyError) as raised:
        find_fido2_device(None)

    assert "no FIDO2 security key found" in raised.value.message
    assert raised.value.hint is not None
    assert "--fido2-path" in raised.value.hint

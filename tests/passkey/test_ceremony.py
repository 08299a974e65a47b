"""The ceremony records of the relying party: single use, expiry, hashing, input checks.

The browser runs of the same code are in tests/server/test_passkey_routes.py; these tests
use a SQLite metadata database directly and move the clock instead of waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backvault.passkey.ceremony import (
    CEREMONY_LIFETIME,
    CeremonyNotFoundError,
    CredentialRequest,
    InvalidPasskeyRequestError,
    PasskeyNotFoundError,
    PasskeyVerificationError,
    RelyingParty,
    decode_base64url,
    encode_base64url,
    hash_ceremony_id,
    reject_prf_results,
)
from backvault.server.metadata import Account, Metadata

SECOND_NS = 1_000_000_000
START_NS = 1_700_000_000 * SECOND_NS


class Clock:
    def __init__(self) -> None:
        self.now_ns = START_NS

    def __call__(self) -> int:
        return self.now_ns


@pytest.fixture
def metadata(tmp_path: Path) -> Iterator[Metadata]:
    store = Metadata(f"sqlite:///{tmp_path / 'metadata.sqlite3'}")
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def account(metadata: Metadata) -> Account:
    return metadata.create_account("alice")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def relying_party(metadata: Metadata, clock: Clock) -> RelyingParty:
    return RelyingParty(metadata, rp_id="localhost", origin="http://localhost:8420", clock=clock)


def test_options_until_expiry(relying_party: RelyingParty, account: Account, clock: Clock) -> None:
    ceremony = relying_party.start_registration(account, "laptop", bytes(32))
    clock.now_ns += CEREMONY_LIFETIME * SECOND_NS - 1
    assert relying_party.page_options(ceremony)["kind"] == "register"
    clock.now_ns += 1
    with pytest.raises(CeremonyNotFoundError):
        relying_party.page_options(ceremony)
    with pytest.raises(CeremonyNotFoundError):
        relying_party.finish(ceremony, {})


def test_finish_uses_ceremony_up(relying_party: RelyingParty, account: Account) -> None:
    ceremony = relying_party.start_registration(account, "laptop", bytes(32))
    with pytest.raises(PasskeyVerificationError):
        relying_party.finish(ceremony, {"id": "AAAA"})
    with pytest.raises(CeremonyNotFoundError):
        relying_party.finish(ceremony, {"id": "AAAA"})
    with pytest.raises(CeremonyNotFoundError):
        relying_party.page_options(ceremony)


def test_claim_happens_once(metadata: Metadata, relying_party: RelyingParty,
                            account: Account) -> None:
    ceremony = relying_party.start_registration(account, "laptop", bytes(32))
    claimed = metadata.claim_passkey_ceremony(hash_ceremony_id(ceremony), START_NS)
    assert claimed is not None
    assert claimed.account_id == account.id
    assert claimed.name == "laptop"
    assert metadata.claim_passkey_ceremony(hash_ceremony_id(ceremony), START_NS) is None


def test_expired_ceremonies_are_purged(
    metadata: Metadata, relying_party: RelyingParty, account: Account, clock: Clock
) -> None:
    old = relying_party.start_registration(account, "old", bytes(32))
    clock.now_ns += SECOND_NS
    recent = relying_party.start_registration(account, "recent", bytes(32))
    clock.now_ns = START_NS + CEREMONY_LIFETIME * SECOND_NS  # when "old" expires
    relying_party.start_registration(account, "new", bytes(32))
    # Looked up at time 0, so only the purge can make a ceremony disappear.
    assert metadata.find_passkey_ceremony(hash_ceremony_id(old), 0) is None
    assert metadata.find_passkey_ceremony(hash_ceremony_id(recent), 0) is not None


def test_registration_options(relying_party: RelyingParty, account: Account) -> None:
    first = relying_party.page_options(
        relying_party.start_registration(account, "laptop", bytes(range(32)))
    )["options"]
    second = relying_party.page_options(
        relying_party.start_registration(account, "phone", bytes(32))
    )["options"]
    assert first["prf_salt"] == encode_base64url(bytes(range(32)))
    assert first["user"]["name"] == "alice"
    assert first["user"]["displayName"] == "alice: laptop"
    assert first["attestation"] == "none"
    # Every passkey gets its own user handle and challenge.
    assert first["user"]["id"] != second["user"]["id"]
    assert first["challenge"] != second["challenge"]
    assert len(decode_base64url(first["challenge"], "challenge")) == 32


def test_authentication_needs_own_credentials(
    relying_party: RelyingParty, account: Account
) -> None:
    with pytest.raises(PasskeyNotFoundError):
        relying_party.start_authentication(account, [CredentialRequest(b"unknown", bytes(32))])
    with pytest.raises(InvalidPasskeyRequestError):
        relying_party.start_authentication(account, [])


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "tab\there"])
def test_invalid_names(relying_party: RelyingParty, account: Account, name: str) -> None:
    with pytest.raises(InvalidPasskeyRequestError):
        relying_party.start_registration(account, name, bytes(32))


@pytest.mark.parametrize("salt", [b"", bytes(31), bytes(33)])
def test_invalid_prf_salts(relying_party: RelyingParty, account: Account, salt: bytes) -> None:
    with pytest.raises(InvalidPasskeyRequestError, match="32 bytes"):
        relying_party.start_registration(account, "laptop", salt)


def test_base64url_round_trip() -> None:
    for size in range(0, 70):
        data = bytes(range(size))
        encoded = encode_base64url(data)
        assert "=" not in encoded
        assert decode_base64url(encoded, "value") == data


@pytest.mark.parametrize("text", ["AAA=", "A+B/", "A", "AB CD", "é", 5, None])
def test_base64url_rejects(text: object) -> None:
    with pytest.raises(InvalidPasskeyRequestError, match="value"):
        decode_base64url(text, "value")


def test_reject_prf_results() -> None:
    reject_prf_results({})
    reject_prf_results({"clientExtensionResults": {"prf": {"enabled": True}}})
    with pytest.raises(PasskeyVerificationError):
        reject_prf_results({"clientExtensionResults": {"prf": {"results": {}}}})
    with pytest.raises(PasskeyVerificationError):
        reject_prf_results({"clientExtensionResults": "text"})

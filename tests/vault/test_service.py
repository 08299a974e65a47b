"""The vault service and the password slot client, joined in one process (no HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from backvault.crypto.keys import MasterKey
from backvault.crypto.password_slot import (
    KIND_PASSWORD,
    LoginChallenge,
    create_password_slot,
    open_password_slot,
    password_slot_info,
)
from backvault.errors import IntegrityError, WrongPasswordError
from backvault.opaque import IdentityKsf, client_login_start
from backvault.opaque.messages import KE2_BYTES
from backvault.server.metadata import Metadata, vault_tables
from backvault.vault.errors import (
    KeyStoreError,
    LoginFailedError,
    LoginNotFoundError,
    RecordDestroyedError,
    SealedDataError,
)
from backvault.vault.keystore import KeyFileStore
from backvault.vault.protocol import new_id
from backvault.vault.service import InvalidRequestError, VaultService
from backvault.vault.settings import DEFAULT_LOGIN_TIMEOUT, VaultSettings
from backvault.vault.store import VaultStore

REPOSITORY_ID = bytes(range(16))
PASSWORD = b"correct horse battery staple"
GUESS_LIMIT = 5


class LocalTransport:
    """The client's calls, sent straight to a VaultService for one account."""

    def __init__(self, service: VaultService, account_id: int) -> None:
        self.service = service
        self.account_id = account_id
        self.uploads: list[tuple[bytes, bytes]] = []  # (record, wrapped key) registered

    def register_start(self, request: bytes) -> tuple[str, bytes]:
        registration = self.service.register_start(self.account_id, request)
        return registration.record_id, registration.response

    def register_finish(
        self, record_id: str, record: bytes, wrapped_key: bytes, guess_limit: int | None
    ) -> None:
        self.service.register_finish(self.account_id, record_id, record, wrapped_key, guess_limit)
        self.uploads.append((record, wrapped_key))

    def login_start(self, record_id: str, ke1: bytes) -> LoginChallenge:
        try:
            challenge = self.service.login_start(self.account_id, record_id, ke1)
        except RecordDestroyedError:
            raise WrongPasswordError("destroyed", guesses_left=0) from None
        return LoginChallenge(challenge.login_id, challenge.ke2, challenge.guesses_left)

    def login_finish(self, login_id: str, ke3: bytes) -> bytes:
        return self.service.login_finish(self.account_id, login_id, ke3)[1]

    def login_abort(self, login_id: str) -> int:
        return self.service.login_abort(self.account_id, login_id)

    def delete_record(self, record_id: str) -> bool:
        self.service.delete_record(self.account_id, record_id)
        return True


@dataclass
class VaultSetup:
    metadata: Metadata
    service: VaultService
    key_path: Path

    def account(self, name: str | None = None) -> LocalTransport:
        account = self.metadata.create_account(name or f"account-{new_id()[:8]}")
        return LocalTransport(self.service, account.id)


def open_service(
    metadata: Metadata, key_path: Path, *, login_timeout: int = DEFAULT_LOGIN_TIMEOUT
) -> VaultService:
    store = VaultStore(
        metadata.engine, vault_tables, sqlite=metadata.engine.dialect.name == "sqlite"
    )
    return VaultService(
        store, KeyFileStore.open_or_create(key_path),
        VaultSettings(guess_limit=GUESS_LIMIT, login_timeout=login_timeout),
    )


@pytest.fixture
def vault(metadata: Metadata, tmp_path: Path) -> Iterator[VaultSetup]:
    key_path = tmp_path / "vault-keys"
    service = open_service(metadata, key_path)
    yield VaultSetup(metadata, service, key_path)
    service.close()


def test_password_opens_slot(vault: VaultSetup) -> None:
    transport = vault.account()
    master_key = MasterKey.generate()
    slot = create_password_slot(
        PASSWORD, master_key, REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    assert slot.kind == KIND_PASSWORD
    assert slot.wrapped == b""  # the wrap lives only in the vault
    info = password_slot_info(slot)
    assert info.vault_url == "https://vault.example"

    opened = open_password_slot(slot, PASSWORD, REPOSITORY_ID, transport)
    assert opened.raw == master_key.raw
    # Twice in a row: the count was reset by the first login.
    assert open_password_slot(slot, PASSWORD, REPOSITORY_ID, transport).raw == master_key.raw
    record = vault.service.list_records(transport.account_id)[0]
    assert record.guesses_used == 0


def test_wrong_passwords_count_down_then_destroy(vault: VaultSetup) -> None:
    transport = vault.account()
    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    left = []
    for _ in range(GUESS_LIMIT):
        with pytest.raises(WrongPasswordError) as caught:
            open_password_slot(slot, b"wrong password", REPOSITORY_ID, transport)
        left.append(caught.value.guesses_left)
    assert left == [4, 3, 2, 1, 0]
    assert "destroyed" in str(caught.value)

    with pytest.raises(WrongPasswordError) as caught:
        open_password_slot(slot, PASSWORD, REPOSITORY_ID, transport)
    assert caught.value.guesses_left == 0
    assert caught.value.hint is not None
    assert "recovery key" in caught.value.hint
    [record] = vault.service.list_records(transport.account_id)
    assert record.state == "destroyed"


def test_warning_before_last_guess(vault: VaultSetup) -> None:
    transport = vault.account()
    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(), guess_limit=2,
    )
    with pytest.raises(WrongPasswordError) as caught:
        open_password_slot(slot, b"wrong password", REPOSITORY_ID, transport)
    assert caught.value.guesses_left == 1
    assert caught.value.hint is not None
    assert "One more wrong password destroys" in caught.value.hint
    assert "recovery key" in caught.value.hint


def test_unknown_record_gets_fake_ke2(vault: VaultSetup) -> None:
    transport = vault.account()
    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    real_record = password_slot_info(slot).record_id
    _, ke1 = client_login_start(PASSWORD)

    real = vault.service.login_start(transport.account_id, real_record, ke1)
    fake = vault.service.login_start(transport.account_id, new_id(), ke1)
    assert len(real.ke2) == KE2_BYTES
    assert len(fake.ke2) == KE2_BYTES
    assert len(fake.login_id) == len(real.login_id)
    assert fake.guesses_left == GUESS_LIMIT - 1

    with pytest.raises(LoginFailedError) as caught:
        vault.service.login_finish(transport.account_id, fake.login_id, bytes(64))
    assert caught.value.guesses_left == GUESS_LIMIT - 1


def test_fake_oprf_output_stable_per_record(vault: VaultSetup) -> None:
    first, second = vault.account(), vault.account()
    unknown = new_id()
    _, ke1 = client_login_start(PASSWORD)

    def evaluated(transport: LocalTransport, record_id: str) -> bytes:
        # The first 32 bytes of KE2 are the OPRF evaluation of the blinded password.
        return vault.service.login_start(transport.account_id, record_id, ke1).ke2[:32]

    assert evaluated(first, unknown) == evaluated(first, unknown)
    assert evaluated(first, unknown) != evaluated(first, new_id())
    assert evaluated(first, unknown) != evaluated(second, unknown)


def test_other_account_sees_fake(vault: VaultSetup) -> None:
    owner, stranger = vault.account(), vault.account()
    master_key = MasterKey.generate()
    slot = create_password_slot(
        PASSWORD, master_key, REPOSITORY_ID, vault_url="https://vault.example",
        transport=owner, ksf=IdentityKsf(),
    )
    with pytest.raises(WrongPasswordError):
        open_password_slot(slot, PASSWORD, REPOSITORY_ID, stranger)
    assert vault.service.list_records(stranger.account_id) == []
    [record] = vault.service.list_records(owner.account_id)
    assert record.guesses_used == 0
    assert open_password_slot(slot, PASSWORD, REPOSITORY_ID, owner).raw == master_key.raw


def test_bad_ke3_counts_guess(vault: VaultSetup) -> None:
    transport = vault.account()
    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    record_id = password_slot_info(slot).record_id
    _, ke1 = client_login_start(PASSWORD)
    challenge = vault.service.login_start(transport.account_id, record_id, ke1)

    with pytest.raises(LoginFailedError) as caught:
        vault.service.login_finish(transport.account_id, challenge.login_id, bytes(64))
    assert caught.value.guesses_left == GUESS_LIMIT - 1
    with pytest.raises(LoginNotFoundError):
        vault.service.login_finish(transport.account_id, challenge.login_id, bytes(64))
    [record] = vault.service.list_records(transport.account_id)
    assert record.guesses_used == 1


def test_malformed_ke1_counts_nothing(vault: VaultSetup) -> None:
    transport = vault.account()
    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    record_id = password_slot_info(slot).record_id
    with pytest.raises(InvalidRequestError):
        vault.service.login_start(transport.account_id, record_id, b"short")
    [record] = vault.service.list_records(transport.account_id)
    assert record.guesses_used == 0


def test_expired_login_rejected(metadata: Metadata, tmp_path: Path) -> None:
    service = open_service(metadata, tmp_path / "vault-keys", login_timeout=1)
    try:
        transport = VaultSetup(metadata, service, tmp_path).account()
        slot = create_password_slot(
            PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
            transport=transport, ksf=IdentityKsf(),
        )
        record_id = password_slot_info(slot).record_id
        _, ke1 = client_login_start(PASSWORD)
        challenge = service.login_start(transport.account_id, record_id, ke1)
        time.sleep(1.1)
        with pytest.raises(LoginNotFoundError):
            service.login_finish(transport.account_id, challenge.login_id, bytes(64))
    finally:
        service.close()


def test_guess_limit_above_server_rejected(vault: VaultSetup) -> None:
    transport = vault.account()
    with pytest.raises(InvalidRequestError, match="guess_limit"):
        create_password_slot(
            PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
            transport=transport, ksf=IdentityKsf(), guess_limit=GUESS_LIMIT + 1,
        )


def test_records_sealed_at_rest(vault: VaultSetup) -> None:
    transport = vault.account()
    create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    records = vault_tables.records
    with vault.metadata.engine.connect() as connection:
        sealed = connection.execute(sa.select(records.c.sealed)).scalar_one()
    [(record, wrapped_key)] = transport.uploads
    assert isinstance(sealed, bytes)
    assert record[:32] not in sealed  # the client's public key
    assert record[32:96] not in sealed  # the masking key
    assert wrapped_key[13:] not in sealed


def test_sealed_record_bound_to_account(vault: VaultSetup) -> None:
    owner, other = vault.account(), vault.account()
    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=owner, ksf=IdentityKsf(),
    )
    record_id = password_slot_info(slot).record_id
    records = vault_tables.records
    with vault.metadata.engine.begin() as connection:
        # Move the row to the other account, as someone with database access could.
        connection.execute(
            records.update().where(records.c.record_id == record_id)
            .values(account_id=other.account_id)
        )
    _, ke1 = client_login_start(PASSWORD)
    with pytest.raises(SealedDataError):
        vault.service.login_start(other.account_id, record_id, ke1)


def test_changed_slot_parameters_rejected(vault: VaultSetup) -> None:
    transport = vault.account()
    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    slot.parameters["vault"] = "https://elsewhere.example"
    with pytest.raises(IntegrityError):
        open_password_slot(slot, PASSWORD, REPOSITORY_ID, transport)


def test_server_key_persists(metadata: Metadata, tmp_path: Path) -> None:
    key_path = tmp_path / "vault-keys"
    first = open_service(metadata, key_path)
    transport = LocalTransport(first, metadata.create_account("owner").id)
    master_key = MasterKey.generate()
    slot = create_password_slot(
        PASSWORD, master_key, REPOSITORY_ID, vault_url="https://vault.example",
        transport=transport, ksf=IdentityKsf(),
    )
    first.close()

    second = open_service(metadata, key_path)
    try:
        transport.service = second
        assert open_password_slot(slot, PASSWORD, REPOSITORY_ID, transport).raw == master_key.raw
    finally:
        second.close()

    with pytest.raises(KeyStoreError, match="do not belong together"):
        open_service(metadata, tmp_path / "other-keys")

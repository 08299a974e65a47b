"""The metadata layer on both databases it supports: SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from backvault.server.config import normalize_database_url
from backvault.server.errors import (
    AccountExistsError,
    AccountNotFoundError,
    QuotaExceededError,
    TokenNotFoundError,
)
from backvault.server.metadata import (
    Metadata,
    RepositoryInfo,
    Reservation,
    hash_token,
    tokens,
)
from tests.helpers.postgres import PostgresCluster

CONCURRENT_WRITERS = 8
BLAKE3_A = "a" * 64
BLAKE3_B = "b" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Metadata]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        url = normalize_database_url(cluster.create_database("metadata"))
    store = Metadata(url)
    store.create_schema()
    yield store
    store.close()


def new_repository(metadata: Metadata, quota: int | None = None) -> RepositoryInfo:
    account = metadata.create_account("owner", quota_bytes=quota)
    repository, created = metadata.create_repository(account.id, "repo")
    assert created
    return repository


def test_account_lifecycle(metadata: Metadata) -> None:
    account = metadata.create_account("alice", append_only=True, quota_bytes=1000)
    assert account.append_only
    assert account.quota_bytes == 1000
    assert account.used_bytes == 0
    with pytest.raises(AccountExistsError):
        metadata.create_account("alice")

    assert metadata.set_disabled("alice", True).disabled
    assert not metadata.set_disabled("alice", False).disabled
    assert [item.name for item in metadata.list_accounts()] == ["alice"]

    metadata.issue_token(account.id)
    metadata.create_repository(account.id, "repo")
    metadata.delete_account(account.id)
    assert metadata.find_account("alice") is None
    with pytest.raises(AccountNotFoundError):
        metadata.account_by_name("alice")


def test_tokens_stored_as_hashes(metadata: Metadata) -> None:
    account = metadata.create_account("bob")
    info, token = metadata.issue_token(account.id, label="laptop")
    found = metadata.account_for_token(token)
    assert found is not None
    assert found.name == "bob"
    assert metadata.account_for_token(token + "x") is None

    with metadata.engine.connect() as connection:
        stored = connection.execute(sa.select(tokens.c.token_hash)).scalars().all()
    assert stored == [hash_token(token)]
    assert token not in stored

    assert metadata.revoke_token(info.id).revoked
    assert metadata.account_for_token(token) is None
    with pytest.raises(TokenNotFoundError):
        metadata.revoke_token("no-such-id")
    assert [item.label for item in metadata.list_tokens(account.id)] == ["laptop"]


def test_ensure_account_creates_once(metadata: Metadata) -> None:
    first = metadata.ensure_account("+15551234567")
    second = metadata.ensure_account("+15551234567")
    assert first.id == second.id


def test_repositories_per_account(metadata: Metadata) -> None:
    alice = metadata.create_account("alice")
    bob = metadata.create_account("bob")
    mine, created = metadata.create_repository(alice.id, "photos")
    assert created
    again, created_again = metadata.create_repository(alice.id, "photos")
    assert not created_again
    assert again.id == mine.id
    theirs, _ = metadata.create_repository(bob.id, "photos")
    assert theirs.id != mine.id
    assert metadata.find_repository(bob.id, "nothing") is None
    assert [item.name for item in metadata.list_repositories(alice.id)] == ["photos"]


def test_object_reservation_outcomes(metadata: Metadata) -> None:
    repository = new_repository(metadata)
    assert metadata.reserve_object(repository, "data", "aa", 10, BLAKE3_A) is Reservation.NEW
    # Not committed yet: invisible, and the same bytes may be written again.
    assert metadata.find_object(repository.id, "data", "aa") is None
    assert metadata.list_objects(repository.id, "data") == []
    assert metadata.reserve_object(repository, "data", "aa", 10, BLAKE3_A) is Reservation.UNFINISHED

    metadata.commit_object(repository.id, "data", "aa")
    assert metadata.list_objects(repository.id, "data") == [("aa", 10)]
    assert metadata.reserve_object(repository, "data", "aa", 10, BLAKE3_A) is Reservation.EXISTS
    assert metadata.reserve_object(repository, "data", "aa", 10, BLAKE3_B) is Reservation.CONFLICT

    account = metadata.account_by_name("owner")
    assert account.used_bytes == 10
    assert metadata.remove_object(repository, "data", "aa")
    assert not metadata.remove_object(repository, "data", "aa")
    assert metadata.account_by_name("owner").used_bytes == 0


def test_quota_enforced(metadata: Metadata) -> None:
    repository = new_repository(metadata, quota=100)
    assert metadata.reserve_object(repository, "data", "01", 60, BLAKE3_A) is Reservation.NEW
    with pytest.raises(QuotaExceededError, match="uses 60 of 100 bytes"):
        metadata.reserve_object(repository, "data", "02", 41, BLAKE3_B)
    assert metadata.find_object(repository.id, "data", "02", committed_only=False) is None
    assert metadata.reserve_object(repository, "data", "03", 40, BLAKE3_B) is Reservation.NEW
    assert metadata.account_by_name("owner").used_bytes == 100


def test_concurrent_reservations_respect_quota(metadata: Metadata) -> None:
    # Each writer wants 30 of 100 bytes: exactly three may succeed, whatever the order.
    repository = new_repository(metadata, quota=100)
    outcomes: list[str] = []
    lock = threading.Lock()

    def reserve(index: int) -> None:
        try:
            metadata.reserve_object(repository, "data", f"{index:02x}", 30, BLAKE3_A)
            result = "stored"
        except QuotaExceededError:
            result = "full"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(CONCURRENT_WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("stored") == 3
    assert outcomes.count("full") == CONCURRENT_WRITERS - 3
    assert metadata.account_by_name("owner").used_bytes == 90


def test_concurrent_writers_of_one_name(metadata: Metadata) -> None:
    repository = new_repository(metadata)
    outcomes: list[Reservation] = []
    lock = threading.Lock()

    def reserve(digest: str) -> None:
        outcome = metadata.reserve_object(repository, "keys", "0a", 5, digest)
        with lock:
            outcomes.append(outcome)

    digests = [BLAKE3_A, BLAKE3_B] * (CONCURRENT_WRITERS // 2)
    threads = [threading.Thread(target=reserve, args=(digest,)) for digest in digests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(Reservation.NEW) == 1
    assert outcomes.count(Reservation.CONFLICT) == CONCURRENT_WRITERS // 2
    assert metadata.account_by_name("owner").used_bytes == 5

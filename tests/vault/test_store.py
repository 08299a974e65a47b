"""The guess counter and record rows on SQLite and PostgreSQL, without a server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from backvault.server.metadata import Metadata, vault_tables
from backvault.vault.protocol import new_id
from backvault.vault.store import (
    STATE_ACTIVE,
    STATE_DESTROYED,
    GuessOutcome,
    GuessTaken,
    PendingLogin,
    VaultStore,
)

LIMIT = 10
PARALLEL_GUESSES = 50
MINUTE_NS = 60 * 1_000_000_000


def vault_store(metadata: Metadata) -> VaultStore:
    return VaultStore(
        metadata.engine, vault_tables, sqlite=metadata.engine.dialect.name == "sqlite"
    )


def new_record(metadata: Metadata, store: VaultStore, limit: int = LIMIT) -> tuple[int, str]:
    account = metadata.create_account(f"owner-{new_id()[:8]}")
    record_id = new_id()
    assert store.add_record(account.id, record_id, limit, b"sealed record")
    return account.id, record_id


def later() -> int:
    return time.time_ns() + MINUTE_NS


def respond(sealed_record: bytes, guesses_left: int) -> bytes:
    """Stand in for the service's KE2: return the login state to store."""
    return b"state for " + sealed_record


def take_guess(
    store: VaultStore, account_id: int, record_id: str, login_id: str | None = None,
    expires_ns: int | None = None,
) -> GuessTaken | str:
    return store.take_guess(
        account_id, record_id, login_id or new_id(), expires_ns or later(), respond
    )


def fail_login(store: VaultStore, account_id: int, record_id: str) -> int:
    """Take a guess and end its login as a client with a wrong password does."""
    login_id = new_id()
    assert isinstance(take_guess(store, account_id, record_id, login_id), GuessTaken)
    aborted = store.abort_login(account_id, login_id)
    assert aborted is not None
    assert aborted[0] == record_id
    return aborted[1]


def succeed_login(store: VaultStore, account_id: int, login_id: str) -> bytes | None:
    finished = store.finish_login(account_id, login_id, lambda pending: True)
    assert finished is not None
    assert finished.verified
    return finished.sealed_record


def test_guess_counts_down(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)

    seen: list[tuple[bytes, int]] = []

    def remember(sealed_record: bytes, guesses_left: int) -> bytes:
        seen.append((sealed_record, guesses_left))
        return b"state"

    taken = store.take_guess(account_id, record_id, new_id(), later(), remember)
    assert isinstance(taken, GuessTaken)
    assert taken.guesses_left == LIMIT - 1
    assert seen == [(b"sealed record", LIMIT - 1)]
    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.guesses_used == 1


def test_limit_destroys_record(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)

    left = [fail_login(store, account_id, record_id) for _ in range(LIMIT)]
    assert left == list(range(LIMIT - 1, -1, -1))

    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.state == STATE_DESTROYED
    assert found.destroyed_ns is not None
    assert take_guess(store, account_id, record_id) == GuessOutcome.DESTROYED
    records = vault_tables.records
    with metadata.engine.connect() as connection:
        sealed = connection.execute(
            sa.select(records.c.sealed).where(records.c.record_id == record_id)
        ).scalar_one()
    assert sealed is None


def test_success_resets_count(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)
    for _ in range(LIMIT - 1):
        fail_login(store, account_id, record_id)

    login_id = new_id()
    assert isinstance(take_guess(store, account_id, record_id, login_id), GuessTaken)
    assert succeed_login(store, account_id, login_id) == b"sealed record"

    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.guesses_used == 0
    assert found.state == STATE_ACTIVE


def test_failed_ke3_keeps_guess(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)
    login_id = new_id()
    assert isinstance(take_guess(store, account_id, record_id, login_id), GuessTaken)

    checked = []

    def reject(pending: PendingLogin) -> bool:
        checked.append(pending.sealed_state)
        return False

    finished = store.finish_login(account_id, login_id, reject)
    assert finished is not None
    assert not finished.verified
    assert finished.guesses_left == LIMIT - 1
    assert checked == [b"state for sealed record"]
    assert store.finish_login(account_id, login_id, reject) is None


def test_failed_respond_counts_nothing(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)

    def fail(sealed_record: bytes, guesses_left: int) -> bytes:
        raise ValueError("invalid KE1")

    with pytest.raises(ValueError):
        store.take_guess(account_id, record_id, new_id(), later(), fail)
    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.guesses_used == 0


def test_last_guess_in_progress_is_busy(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store, limit=1)
    login_id = new_id()
    assert isinstance(take_guess(store, account_id, record_id, login_id), GuessTaken)

    # The last guess is held by a login in progress: wait for it, destroy nothing.
    assert take_guess(store, account_id, record_id) == GuessOutcome.BUSY
    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.state == STATE_ACTIVE

    # When that login succeeds, the record lives on with a fresh count.
    assert succeed_login(store, account_id, login_id) == b"sealed record"


def test_expired_last_login_destroys(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store, limit=1)
    expired = time.time_ns() - 1
    assert isinstance(
        take_guess(store, account_id, record_id, expires_ns=expired), GuessTaken
    )

    assert take_guess(store, account_id, record_id) == GuessOutcome.DESTROYED
    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.state == STATE_DESTROYED


def test_settle_exhausted_records(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store, limit=1)
    assert isinstance(
        take_guess(store, account_id, record_id, expires_ns=time.time_ns() - 1), GuessTaken
    )

    store.settle_exhausted_records(account_id)
    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.state == STATE_DESTROYED


def test_unknown_record(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, _ = new_record(metadata, store)
    assert take_guess(store, account_id, new_id()) == GuessOutcome.UNKNOWN


def test_other_account_cannot_take_guess(metadata: Metadata) -> None:
    store = vault_store(metadata)
    owner_id, record_id = new_record(metadata, store)
    stranger = metadata.create_account("stranger")

    assert take_guess(store, stranger.id, record_id) == GuessOutcome.UNKNOWN
    assert store.find_record(stranger.id, record_id) is None
    assert store.delete_record(stranger.id, record_id) is False
    found = store.find_record(owner_id, record_id)
    assert found is not None
    assert found.guesses_used == 0


def test_login_finished_once(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)
    login_id = new_id()
    assert isinstance(take_guess(store, account_id, record_id, login_id), GuessTaken)

    finished = []
    barrier = threading.Barrier(8)

    def finish() -> None:
        barrier.wait()
        finished.append(store.finish_login(account_id, login_id, lambda pending: True))

    threads = [threading.Thread(target=finish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    found = [login for login in finished if login is not None]
    assert len(found) == 1
    assert found[0].sealed_record == b"sealed record"


def test_parallel_guesses_hold_limit(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)
    outcomes: list[GuessTaken | str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(PARALLEL_GUESSES)

    def guess() -> None:
        barrier.wait()
        try:
            outcomes.append(take_guess(store, account_id, record_id))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guess) for _ in range(PARALLEL_GUESSES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    taken = [outcome for outcome in outcomes if isinstance(outcome, GuessTaken)]
    assert len(taken) == LIMIT
    assert sorted(outcome.guesses_left for outcome in taken) == list(range(LIMIT))
    assert [outcome for outcome in outcomes if not isinstance(outcome, GuessTaken)] == [
        GuessOutcome.BUSY
    ] * (PARALLEL_GUESSES - LIMIT)
    found = store.find_record(account_id, record_id)
    assert found is not None
    assert found.guesses_used == LIMIT


def test_delete_account_removes_vault_rows(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)
    assert isinstance(take_guess(store, account_id, record_id), GuessTaken)

    metadata.delete_account(account_id)
    with metadata.engine.connect() as connection:
        for table in (vault_tables.records, vault_tables.logins):
            count = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            assert count == 0


def test_delete_record_removes_logins(metadata: Metadata) -> None:
    store = vault_store(metadata)
    account_id, record_id = new_record(metadata, store)
    login_id = new_id()
    assert isinstance(take_guess(store, account_id, record_id, login_id), GuessTaken)

    assert store.delete_record(account_id, record_id) is True
    assert store.find_record(account_id, record_id) is None
    assert store.abort_login(account_id, login_id) is None
    assert store.delete_record(account_id, record_id) is False


def test_destroyed_record_erased_from_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "metadata.sqlite3"
    metadata = Metadata(f"sqlite:///{path}")
    metadata.create_schema()
    try:
        store = vault_store(metadata)
        account = metadata.create_account("owner")
        record_id = new_id()
        marker = b"sealed-record-marker-" + new_id().encode()
        assert store.add_record(account.id, record_id, 1, marker)
        assert marker in read_database_files(path)

        assert fail_login(store, account.id, record_id) == 0

        assert marker not in read_database_files(path)
    finally:
        metadata.close()


def read_database_files(path: Path) -> bytes:
    """Return the bytes of a SQLite database and of its write-ahead log, if any."""
    contents = path.read_bytes()
    log = path.with_name(path.name + "-wal")
    return contents + (log.read_bytes() if log.exists() else b"")

"""The vault's SQL tables and the guess counter (SQLAlchemy Core, SQLite or PostgreSQL).

Tables, defined on the server's schema by :func:`define_tables`:

- ``vault_records``: one row per record, keyed by its account and a random id. A row has
  the state (``active`` or ``destroyed``), the guess limit, the guesses used and the
  sealed record, which is the OPAQUE registration record and the client's wrapped master
  key encrypted under the record-encryption key. Destroying a record sets ``sealed`` to
  NULL and keeps the row as a tombstone.
- ``vault_logins``: one row per login between KE2 and KE3: the sealed server state and
  when it expires. A row is deleted when the login finishes, so each KE3 is checked once.
- ``vault_server_key``: the server's OPAQUE key pair, with the private key sealed, and
  the client public key of fake records (RFC 9807, section 6.3.2.2).

The counter holds under concurrency because a guess is taken by one conditional UPDATE,
``guesses_used = guesses_used + 1 WHERE ... AND guesses_used < guess_limit``, whose
row count says whether it succeeded. PostgreSQL re-evaluates the condition on the
latest row version after a concurrent update, and SQLite runs one writer at a time
(the server begins every SQLite transaction with BEGIN IMMEDIATE).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

# Execution option that marks a connection whose transactions write; the server's SQLite
# engine begins those with BEGIN IMMEDIATE (backvault.server.metadata).
WRITE_OPTION = "backvault_write"

STATE_ACTIVE = "active"
STATE_DESTROYED = "destroyed"
ID_LENGTH = 32  # hex digits of a record or login id (16 random bytes)
SERVER_KEY_ROW = 1


@dataclass(frozen=True)
class VaultTables:
    records: sa.Table
    logins: sa.Table
    server_key: sa.Table


def define_tables(schema: sa.MetaData) -> VaultTables:
    """Add the vault's tables to ``schema``, which must have an ``accounts`` table."""
    records = sa.Table(
        "vault_records", schema,
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("record_id", sa.String(ID_LENGTH), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("guess_limit", sa.Integer, nullable=False),
        sa.Column("guesses_used", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=True),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("destroyed_ns", sa.BigInteger, nullable=True),
    )
    logins = sa.Table(
        "vault_logins", schema,
        sa.Column("login_id", sa.String(ID_LENGTH), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        # Not a foreign key: a login for an unknown record id gets a fake KE2 and a row.
        sa.Column("record_id", sa.String(ID_LENGTH), nullable=False, index=True),
        sa.Column("counted", sa.Boolean, nullable=False),
        sa.Column("guesses_left", sa.Integer, nullable=False),
        sa.Column("sealed_state", sa.LargeBinary, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False, index=True),
    )
    server_key = sa.Table(
        "vault_server_key", schema,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary, nullable=False),
        sa.Column("fake_client_public_key", sa.LargeBinary, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    return VaultTables(records, logins, server_key)


class _LoginStatements:
    """The statements of a login's two transactions, built once with bind parameters.

    Building a SQLAlchemy statement and its cache key costs more CPU than running it on
    SQLite. A login runs these four, so the store builds them once.
    """

    def __init__(self, tables: VaultTables) -> None:
        records, logins = tables.records, tables.logins
        record_key = sa.and_(
            records.c.account_id == sa.bindparam("b_account_id"),
            records.c.record_id == sa.bindparam("b_record_id"),
        )
        self.take_guess = (
            records.update()
            .where(
                record_key,
                records.c.state == STATE_ACTIVE,
                records.c.guesses_used < records.c.guess_limit,
            )
            .values(guesses_used=records.c.guesses_used + 1)
            .returning(records.c.sealed, records.c.guess_limit, records.c.guesses_used)
        )
        self.add_login = logins.insert()
        self.take_login = (
            logins.delete()
            .where(
                logins.c.login_id == sa.bindparam("b_login_id"),
                logins.c.account_id == sa.bindparam("b_account_id"),
            )
            .returning(*logins.c)
        )
        self.reset_guesses = (
            records.update()
            .where(record_key, records.c.state == STATE_ACTIVE)
            .values(guesses_used=0)
            .returning(records.c.sealed)
        )


@dataclass(frozen=True, repr=False)
class StoredServerKey:
    public_key: bytes
    sealed_private_key: bytes
    fake_client_public_key: bytes


@dataclass(frozen=True)
class RecordInfo:
    """A record as the account's record list shows it, without the sealed contents."""

    record_id: str
    state: str
    guess_limit: int
    guesses_used: int
    created_ns: int
    destroyed_ns: int | None

    @property
    def guesses_left(self) -> int:
        return max(self.guess_limit - self.guesses_used, 0) if self.state == STATE_ACTIVE else 0


@dataclass(frozen=True)
class GuessTaken:
    """A guess was counted, and the login that uses it was stored."""

    guesses_left: int  # after this guess, if it fails


class GuessOutcome:
    """Why no guess was taken: one of the constants below."""

    UNKNOWN = "unknown"
    DESTROYED = "destroyed"
    BUSY = "busy"  # every remaining guess is held by an unfinished login


@dataclass(frozen=True)
class PendingLogin:
    """A login row between KE2 and KE3."""

    login_id: str
    account_id: int
    record_id: str
    counted: bool
    guesses_left: int
    sealed_state: bytes


@dataclass(frozen=True)
class FinishedLogin:
    """The outcome of :meth:`VaultStore.finish_login` for a login that was found."""

    record_id: str
    verified: bool
    sealed_record: bytes | None  # verified, and the record still exists
    guesses_left: int  # not verified: the guesses left now


# Called inside the counting transaction with the sealed record and the guesses left;
# returns the sealed login state to store.
RespondToLogin = Callable[[bytes, int], bytes]
# Called inside the finishing transaction; returns whether KE3 verified.
VerifyLogin = Callable[[PendingLogin], bool]


class VaultStore:
    """The vault's rows in the server's metadata database."""

    def __init__(
        self,
        engine: Engine,
        tables: VaultTables,
        *,
        sqlite: bool,
        begin_write: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        """``begin_write`` starts a transaction that writes; the server passes its
        Metadata.write_transaction, which makes SQLite writers take turns."""
        self._engine = engine
        self._tables = tables
        self._sqlite = sqlite
        self._begin_write = begin_write or engine.execution_options(**{WRITE_OPTION: True}).begin
        self._statements = _LoginStatements(tables)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._begin_write() as connection:
            yield connection

    def _record_key(self, account_id: int, record_id: str) -> sa.ColumnElement[bool]:
        records = self._tables.records
        return sa.and_(records.c.account_id == account_id, records.c.record_id == record_id)

    # Server key -----------------------------------------------------------------------

    def server_key(self) -> StoredServerKey | None:
        """Return the stored server key, or None before the first start."""
        table = self._tables.server_key
        with self._engine.connect() as connection:
            row = connection.execute(table.select().where(table.c.id == SERVER_KEY_ROW)).first()
        if row is None:
            return None
        return StoredServerKey(
            bytes(row.public_key), bytes(row.sealed_private_key),
            bytes(row.fake_client_public_key),
        )

    def add_server_key(self, key: StoredServerKey) -> bool:
        """Store the server key unless one exists; return whether this one was stored."""
        table = self._tables.server_key
        try:
            with self._transaction() as connection:
                connection.execute(table.insert().values(
                    id=SERVER_KEY_ROW, public_key=key.public_key,
                    sealed_private_key=key.sealed_private_key,
                    fake_client_public_key=key.fake_client_public_key,
                    created_ns=time.time_ns(),
                ))
        except IntegrityError:
            return False  # another server process stored its key first
        return True

    # Records --------------------------------------------------------------------------

    def add_record(self, account_id: int, record_id: str, guess_limit: int, sealed: bytes) -> bool:
        """Insert an active record; return False if the id is taken."""
        try:
            with self._transaction() as connection:
                connection.execute(self._tables.records.insert().values(
                    record_id=record_id, account_id=account_id, state=STATE_ACTIVE,
                    guess_limit=guess_limit, guesses_used=0, sealed=sealed,
                    created_ns=time.time_ns(), destroyed_ns=None,
                ))
        except IntegrityError:
            return False
        return True

    def list_records(self, account_id: int) -> list[RecordInfo]:
        records = self._tables.records
        query = (
            sa.select(
                records.c.record_id, records.c.state, records.c.guess_limit,
                records.c.guesses_used, records.c.created_ns, records.c.destroyed_ns,
            )
            .where(records.c.account_id == account_id)
            .order_by(records.c.created_ns)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_record_info(row) for row in rows]

    def find_record(self, account_id: int, record_id: str) -> RecordInfo | None:
        records = self._tables.records
        query = sa.select(
            records.c.record_id, records.c.state, records.c.guess_limit,
            records.c.guesses_used, records.c.created_ns, records.c.destroyed_ns,
        ).where(self._record_key(account_id, record_id))
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return _record_info(row) if row is not None else None

    def delete_record(self, account_id: int, record_id: str) -> bool:
        """Delete a record, destroyed or not, and its unfinished logins; False if absent."""
        logins = self._tables.logins
        with self._transaction() as connection:
            result = connection.execute(
                self._tables.records.delete().where(self._record_key(account_id, record_id))
            )
            connection.execute(logins.delete().where(
                logins.c.account_id == account_id, logins.c.record_id == record_id
            ))
        self._flush_deleted_pages()
        return result.rowcount == 1

    # The guess counter ----------------------------------------------------------------

    def take_guess(
        self, account_id: int, record_id: str, login_id: str, expires_ns: int,
        respond: RespondToLogin,
    ) -> GuessTaken | str:
        """Count one guess and store the login that uses it, in one transaction.

        ``respond`` makes KE2 inside the transaction. If it raises, the transaction is
        rolled back and nothing is counted. Otherwise the count is committed before this
        returns, so before KE2 can reach the client. Returns :class:`GuessTaken`, or a
        :class:`GuessOutcome` constant when no guess is left to take. A record whose
        guesses are all used and whose last logins have all ended is destroyed here.
        """
        statements = self._statements
        now = time.time_ns()
        with self._transaction() as connection:
            row = connection.execute(
                statements.take_guess, {"b_account_id": account_id, "b_record_id": record_id}
            ).first()
            if row is not None:
                guesses_left = int(row.guess_limit - row.guesses_used)
                sealed_state = respond(bytes(row.sealed), guesses_left)
                # The login row is stored with the count, so a concurrent request never
                # finds the guess counted without its login in progress.
                connection.execute(statements.add_login, {
                    "login_id": login_id, "account_id": account_id, "record_id": record_id,
                    "counted": True, "guesses_left": guesses_left,
                    "sealed_state": sealed_state, "expires_ns": expires_ns,
                })
                return GuessTaken(guesses_left)

            outcome = self._no_guess_left(connection, account_id, record_id, now)
        if outcome == GuessOutcome.DESTROYED:
            self._flush_deleted_pages()
        return outcome

    def _no_guess_left(
        self, connection: Connection, account_id: int, record_id: str, now: int
    ) -> str:
        records = self._tables.records
        row = connection.execute(
            sa.select(records.c.state).where(self._record_key(account_id, record_id))
        ).first()
        if row is None:
            return GuessOutcome.UNKNOWN
        if row.state == STATE_DESTROYED:
            return GuessOutcome.DESTROYED
        if self._has_unfinished_logins(connection, account_id, record_id, now):
            return GuessOutcome.BUSY
        self._destroy(connection, account_id, record_id, now)
        return GuessOutcome.DESTROYED

    def add_fake_login(
        self, account_id: int, record_id: str, login_id: str, guesses_left: int,
        expires_ns: int, sealed_state: bytes,
    ) -> None:
        """Store a login for an unknown record, which cannot succeed."""
        with self._transaction() as connection:
            connection.execute(self._tables.logins.insert().values(
                login_id=login_id, account_id=account_id, record_id=record_id, counted=False,
                guesses_left=guesses_left, sealed_state=sealed_state, expires_ns=expires_ns,
            ))

    def finish_login(
        self, account_id: int, login_id: str, verify: VerifyLogin
    ) -> FinishedLogin | None:
        """Take the login out of the table, check KE3 with ``verify``, and settle the count.

        The login row is deleted in the same transaction, so no KE3 is checked twice.
        After a valid KE3 the count is reset and the sealed record returned. After an
        invalid one the guess stays counted, and the record is destroyed if that was its
        last guess. Returns None if the account has no such login or it expired.
        """
        now = time.time_ns()
        destroyed = False
        with self._transaction() as connection:
            pending = self._take_login(connection, account_id, login_id)
            if pending is None:
                return None
            pending_login, expired = pending
            record_id = pending_login.record_id
            if expired:
                if pending_login.counted:
                    _, destroyed = self._settle(connection, account_id, record_id, now)
                result = None
            elif verify(pending_login):
                # Only a counted login can verify: the KE3 of a fake login never does.
                sealed_record = self._reset_guesses(connection, account_id, record_id)
                result = FinishedLogin(
                    record_id, verified=True, sealed_record=sealed_record, guesses_left=0
                )
            else:
                guesses_left = pending_login.guesses_left
                if pending_login.counted:
                    guesses_left, destroyed = self._settle(
                        connection, account_id, record_id, now
                    )
                result = FinishedLogin(
                    record_id, verified=False, sealed_record=None, guesses_left=guesses_left
                )
        if destroyed:
            self._flush_deleted_pages()
        return result

    def abort_login(self, account_id: int, login_id: str) -> tuple[str, int] | None:
        """End a login whose client gave up; return its record id and the guesses left.

        Returns None if the account has no such login.
        """
        now = time.time_ns()
        destroyed = False
        with self._transaction() as connection:
            pending = self._take_login(connection, account_id, login_id)
            if pending is None:
                return None
            pending_login = pending[0]
            guesses_left = pending_login.guesses_left
            if pending_login.counted:
                guesses_left, destroyed = self._settle(
                    connection, account_id, pending_login.record_id, now
                )
        if destroyed:
            self._flush_deleted_pages()
        return pending_login.record_id, guesses_left

    def _take_login(
        self, connection: Connection, account_id: int, login_id: str
    ) -> tuple[PendingLogin, bool] | None:
        """Delete the login row and return it with whether it had expired."""
        row = connection.execute(
            self._statements.take_login, {"b_login_id": login_id, "b_account_id": account_id}
        ).first()
        if row is None:
            return None
        pending = PendingLogin(
            login_id=row.login_id, account_id=row.account_id, record_id=row.record_id,
            counted=bool(row.counted), guesses_left=row.guesses_left,
            sealed_state=bytes(row.sealed_state),
        )
        return pending, row.expires_ns <= time.time_ns()

    def _reset_guesses(
        self, connection: Connection, account_id: int, record_id: str
    ) -> bytes | None:
        """Reset the count after a valid KE3; return the sealed record, or None if gone."""
        row = connection.execute(
            self._statements.reset_guesses, {"b_account_id": account_id, "b_record_id": record_id}
        ).first()
        return bytes(row.sealed) if row is not None else None

    def settle_failed_login(self, account_id: int, record_id: str) -> int:
        """Destroy the record if its guesses are used up and its logins ended.

        Returns the guesses left.
        """
        with self._transaction() as connection:
            guesses_left, destroyed = self._settle(
                connection, account_id, record_id, time.time_ns()
            )
        if destroyed:
            self._flush_deleted_pages()
        return guesses_left

    def _settle(
        self, connection: Connection, account_id: int, record_id: str, now: int
    ) -> tuple[int, bool]:
        records = self._tables.records
        row = connection.execute(
            sa.select(records.c.state, records.c.guess_limit, records.c.guesses_used)
            .where(self._record_key(account_id, record_id))
        ).first()
        if row is None or row.state != STATE_ACTIVE:
            return 0, False
        guesses_left = int(row.guess_limit - row.guesses_used)
        if guesses_left > 0 or self._has_unfinished_logins(
            connection, account_id, record_id, now
        ):
            return max(guesses_left, 0), False
        self._destroy(connection, account_id, record_id, now)
        return 0, True

    def settle_exhausted_records(self, account_id: int) -> None:
        """Destroy the account's records whose guesses are used up and whose logins ended."""
        records = self._tables.records
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(records.c.record_id).where(
                    records.c.account_id == account_id,
                    records.c.state == STATE_ACTIVE,
                    records.c.guesses_used >= records.c.guess_limit,
                )
            ).all()
        for row in rows:
            self.settle_failed_login(account_id, row.record_id)

    def delete_expired_logins(self) -> int:
        logins = self._tables.logins
        with self._transaction() as connection:
            result = connection.execute(
                logins.delete().where(logins.c.expires_ns <= time.time_ns())
            )
        return int(result.rowcount)

    def _has_unfinished_logins(
        self, connection: Connection, account_id: int, record_id: str, now: int
    ) -> bool:
        logins = self._tables.logins
        row = connection.execute(
            sa.select(logins.c.login_id).where(
                logins.c.account_id == account_id, logins.c.record_id == record_id,
                logins.c.counted.is_(True), logins.c.expires_ns > now,
            ).limit(1)
        ).first()
        return row is not None

    def _destroy(self, connection: Connection, account_id: int, record_id: str, now: int) -> None:
        records, logins = self._tables.records, self._tables.logins
        connection.execute(
            records.update()
            .where(
                self._record_key(account_id, record_id),
                records.c.state == STATE_ACTIVE,
                records.c.guesses_used >= records.c.guess_limit,
            )
            .values(state=STATE_DESTROYED, sealed=None, destroyed_ns=now)
        )
        connection.execute(logins.delete().where(
            logins.c.account_id == account_id, logins.c.record_id == record_id
        ))

    def _flush_deleted_pages(self) -> None:
        """Move SQLite's write-ahead log into the database file and empty it.

        The server turns on SQLite's secure_delete, which overwrites deleted contents in
        the database file, but the log still contains the pages as they were until a
        checkpoint. A busy reader can make the checkpoint partial, so this is best effort.
        """
        if not self._sqlite:
            return
        # The raw connection runs outside SQLAlchemy's transactions, where a checkpoint
        # cannot run.
        connection = self._engine.raw_connection()
        try:
            connection.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()


def _record_info(row: Any) -> RecordInfo:
    return RecordInfo(
        record_id=row.record_id, state=row.state, guess_limit=row.guess_limit,
        guesses_used=row.guesses_used, created_ns=row.created_ns, destroyed_ns=row.destroyed_ns,
    )

"""The server's metadata: accounts, tokens, repositories and objects, in SQL.

SQLAlchemy Core over SQLite (the default, one file in the data dir) or PostgreSQL (through
psycopg 3). The ``objects`` table is the authority on which objects exist: a row is
inserted, with the account's quota reserved, before the bytes are written, and marked
committed after the storage backend has them. A row that is not committed is invisible
to readers, so a crash between the two steps leaves no half-visible object, and the next
write of the same bytes completes it.

Tokens are stored only as SHA-256 hashes. A token is 32 random bytes, so a plain hash
(without salt or stretching) is enough: guessing is as hard as guessing the token.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from backvault.server.config import ServerConfig
from backvault.server.errors import (
    AccountExistsError,
    AccountNotFoundError,
    QuotaExceededError,
    TokenNotFoundError,
)
from backvault.vault.store import define_tables as define_vault_tables

TOKEN_PREFIX = "bv_"
TOKEN_BYTES = 32
TOKEN_ID_BYTES = 6
SQLITE_BUSY_TIMEOUT = 30  # seconds a SQLite writer waits for another one to finish

schema = sa.MetaData()

accounts = sa.Table(
    "accounts", schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("append_only", sa.Boolean, nullable=False, default=False),
    sa.Column("quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("used_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)

tokens = sa.Table(
    "tokens", schema,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(200), nullable=False, default=""),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)

repositories = sa.Table(
    "repositories", schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("append_only", sa.Boolean, nullable=False, default=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("account_id", "name"),
)

objects = sa.Table(
    "objects", schema,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id"), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("blake3", sa.String(64), nullable=False),
    sa.Column("committed", sa.Boolean, nullable=False, default=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)

# The key vault's records, logins in progress and server key (see backvault.vault.store).
vault_tables = define_vault_tables(schema)


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    disabled: bool
    append_only: bool
    quota_bytes: int | None
    used_bytes: int


@dataclass(frozen=True)
class TokenInfo:
    id: str
    account_id: int
    label: str
    created_ns: int
    revoked: bool


@dataclass(frozen=True)
class RepositoryInfo:
    id: int
    account_id: int
    name: str
    append_only: bool


@dataclass(frozen=True)
class StoredObject:
    kind: str
    name: str
    size: int
    blake3: str
    committed: bool


class Reservation(enum.Enum):
    """The outcome of reserving an object name before its bytes are written."""

    NEW = "new"                # the row was inserted and the quota reserved: write the bytes
    UNFINISHED = "unfinished"  # a row with the same hash exists but is not committed: write
    EXISTS = "exists"          # the same bytes are already stored: nothing to do
    CONFLICT = "conflict"      # different bytes are stored under this name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def create_metadata_engine(url: str) -> Engine:
    """Create the engine; SQLite gets a busy timeout and write-locking transactions."""
    if not url.startswith("sqlite"):
        # pool_pre_ping replaces connections that a database restart has closed.
        return sa.create_engine(url, pool_pre_ping=True)

    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        # Overwrite deleted rows in the file, so an erased vault record does not linger.
        dbapi_connection.execute("PRAGMA secure_delete=ON")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with "database
        # is locked" when another writer got there first; IMMEDIATE waits its turn.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def open_metadata(config: ServerConfig) -> Metadata:
    """Open the metadata database and create its tables if they are missing."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    metadata = Metadata(config.database_url)
    metadata.create_schema()
    return metadata


class Metadata:
    """Accounts, tokens, repositories and objects in one SQL database."""

    def __init__(self, url: str) -> None:
        self.engine = create_metadata_engine(url)

    def create_schema(self) -> None:
        schema.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def ping(self) -> None:
        """Run a trivial query; raises the driver's error when the database is down."""
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    # Accounts -----------------------------------------------------------------------

    def create_account(
        self, name: str, *, append_only: bool = False, quota_bytes: int | None = None
    ) -> Account:
        values = {
            "name": name, "disabled": False, "append_only": append_only,
            "quota_bytes": quota_bytes, "used_bytes": 0, "created_ns": time.time_ns(),
        }
        try:
            with self._transaction() as connection:
                connection.execute(accounts.insert().values(**values))
        except IntegrityError:
            raise AccountExistsError(
                f"account {name!r} already exists",
                hint="Choose another name, or issue a new token for it with "
                "'backvault server account token issue'.",
            ) from None
        return self.account_by_name(name)

    def ensure_account(self, name: str) -> Account:
        """Return the account called ``name``, created with default settings if missing."""
        found = self.find_account(name)
        if found is not None:
            return found
        try:
            return self.create_account(name)
        except AccountExistsError:
            # Another request created it between the lookup and the insert.
            return self.account_by_name(name)

    def find_account(self, name: str) -> Account | None:
        with self.engine.connect() as connection:
            row = connection.execute(accounts.select().where(accounts.c.name == name)).first()
        return _account(row) if row is not None else None

    def account_by_name(self, name: str) -> Account:
        account = self.find_account(name)
        if account is None:
            raise AccountNotFoundError(
                f"no account is called {name!r}",
                hint="List the accounts with 'backvault server account list'.",
            )
        return account

    def list_accounts(self) -> list[Account]:
        with self.engine.connect() as connection:
            rows = connection.execute(accounts.select().order_by(accounts.c.name)).all()
        return [_account(row) for row in rows]

    def set_disabled(self, name: str, disabled: bool) -> Account:
        account = self.account_by_name(name)
        with self._transaction() as connection:
            connection.execute(
                accounts.update().where(accounts.c.id == account.id).values(disabled=disabled)
            )
        return self.account_by_name(name)

    def delete_account(self, account_id: int) -> None:
        """Delete the account with its tokens, repositories, object rows and vault records.

        The caller deletes the objects' bytes from storage first.
        """
        repository_ids = sa.select(repositories.c.id).where(
            repositories.c.account_id == account_id
        )
        with self._transaction() as connection:
            connection.execute(objects.delete().where(objects.c.repository_id.in_(repository_ids)))
            connection.execute(repositories.delete().where(repositories.c.account_id == account_id))
            connection.execute(tokens.delete().where(tokens.c.account_id == account_id))
            for vault_table in (vault_tables.logins, vault_tables.records):
                connection.execute(
                    vault_table.delete().where(vault_table.c.account_id == account_id)
                )
            connection.execute(accounts.delete().where(accounts.c.id == account_id))

    # Tokens -------------------------------------------------------------------------

    def issue_token(self, account_id: int, label: str = "") -> tuple[TokenInfo, str]:
        """Create a token for the account; return its record and the token itself."""
        token = new_token()
        info = TokenInfo(
            id=secrets.token_hex(TOKEN_ID_BYTES), account_id=account_id, label=label,
            created_ns=time.time_ns(), revoked=False,
        )
        with self._transaction() as connection:
            connection.execute(tokens.insert().values(
                id=info.id, account_id=account_id, token_hash=hash_token(token), label=label,
                created_ns=info.created_ns, revoked=False,
            ))
        return info, token

    def revoke_token(self, token_id: str) -> TokenInfo:
        with self._transaction() as connection:
            result = connection.execute(
                tokens.update().where(tokens.c.id == token_id).values(revoked=True)
            )
            if result.rowcount == 0:
                raise TokenNotFoundError(
                    f"no token has the id {token_id!r}",
                    hint="List an account's tokens with 'backvault server account token list'.",
                )
            row = connection.execute(tokens.select().where(tokens.c.id == token_id)).one()
        return _token(row)

    def list_tokens(self, account_id: int) -> list[TokenInfo]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                tokens.select().where(tokens.c.account_id == account_id)
                .order_by(tokens.c.created_ns)
            ).all()
        return [_token(row) for row in rows]

    def account_for_token(self, token: str) -> Account | None:
        """Return the account of a valid, unrevoked token, or None."""
        query = (
            sa.select(accounts)
            .join(tokens, tokens.c.account_id == accounts.c.id)
            .where(tokens.c.token_hash == hash_token(token), tokens.c.revoked.is_(False))
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return _account(row) if row is not None else None

    # Repositories -------------------------------------------------------------------

    def find_repository(self, account_id: int, name: str) -> RepositoryInfo | None:
        query = repositories.select().where(
            repositories.c.account_id == account_id, repositories.c.name == name
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return _repository(row) if row is not None else None

    def create_repository(
        self, account_id: int, name: str, *, append_only: bool = False
    ) -> tuple[RepositoryInfo, bool]:
        """Create a repository row; return it and whether it is new."""
        try:
            with self._transaction() as connection:
                connection.execute(repositories.insert().values(
                    account_id=account_id, name=name, append_only=append_only,
                    created_ns=time.time_ns(),
                ))
            created = True
        except IntegrityError:
            created = False
        found = self.find_repository(account_id, name)
        assert found is not None
        return found, created

    def set_repository_append_only(self, repository_id: int) -> None:
        """Make a repository append-only; there is deliberately no way back through the API."""
        with self._transaction() as connection:
            connection.execute(
                repositories.update().where(repositories.c.id == repository_id)
                .values(append_only=True)
            )

    def list_repositories(self, account_id: int) -> list[RepositoryInfo]:
        query = repositories.select().where(repositories.c.account_id == account_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(repositories.c.name)).all()
        return [_repository(row) for row in rows]

    def repository_is_empty(self, repository_id: int) -> bool:
        query = sa.select(objects.c.name).where(objects.c.repository_id == repository_id).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is None

    # Objects ------------------------------------------------------------------------

    def reserve_object(
        self, repository: RepositoryInfo, kind: str, name: str, size: int, blake3_hex: str
    ) -> Reservation:
        """Record an object about to be written and reserve its size from the quota.

        Raises :class:`QuotaExceededError` when the account has no room for it.
        """
        existing = self.find_object(repository.id, kind, name, committed_only=False)
        if existing is not None:
            return _compare(existing, blake3_hex)
        try:
            with self._transaction() as connection:
                _reserve_quota(connection, repository.account_id, size)
                connection.execute(objects.insert().values(
                    repository_id=repository.id, kind=kind, name=name, size=size,
                    blake3=blake3_hex, committed=False, created_ns=time.time_ns(),
                ))
        except IntegrityError:
            # A concurrent request inserted the same name first; its row decides.
            existing = self.find_object(repository.id, kind, name, committed_only=False)
            if existing is None:
                raise
            return _compare(existing, blake3_hex)
        return Reservation.NEW

    def commit_object(self, repository_id: int, kind: str, name: str) -> None:
        with self._transaction() as connection:
            connection.execute(
                objects.update()
                .where(_object_key(repository_id, kind, name))
                .values(committed=True)
            )

    def remove_object(self, repository: RepositoryInfo, kind: str, name: str) -> bool:
        """Delete an object's row and give its size back to the quota; False if absent."""
        with self._transaction() as connection:
            row = connection.execute(
                objects.select().where(_object_key(repository.id, kind, name))
            ).first()
            if row is None:
                return False
            connection.execute(objects.delete().where(_object_key(repository.id, kind, name)))
            connection.execute(
                accounts.update().where(accounts.c.id == repository.account_id)
                .values(used_bytes=accounts.c.used_bytes - row.size)
            )
        return True

    def find_object(
        self, repository_id: int, kind: str, name: str, *, committed_only: bool = True
    ) -> StoredObject | None:
        query = objects.select().where(_object_key(repository_id, kind, name))
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None or (committed_only and not row.committed):
            return None
        return StoredObject(row.kind, row.name, row.size, row.blake3, row.committed)

    def list_objects(self, repository_id: int, kind: str) -> list[tuple[str, int]]:
        query = (
            sa.select(objects.c.name, objects.c.size)
            .where(
                objects.c.repository_id == repository_id,
                objects.c.kind == kind,
                objects.c.committed.is_(True),
            )
            .order_by(objects.c.name)
        )
        with self.engine.connect() as connection:
            return [(row.name, row.size) for row in connection.execute(query)]

    def list_all_objects(self, repository_id: int) -> list[tuple[str, str]]:
        """Return ``(kind, name)`` of every object row, committed or not."""
        query = sa.select(objects.c.kind, objects.c.name).where(
            objects.c.repository_id == repository_id
        )
        with self.engine.connect() as connection:
            return [(row.kind, row.name) for row in connection.execute(query)]


def _reserve_quota(connection: Connection, account_id: int, size: int) -> None:
    # One conditional UPDATE, so two concurrent writers cannot both pass the check.
    fits = sa.or_(
        accounts.c.quota_bytes.is_(None),
        accounts.c.used_bytes + size <= accounts.c.quota_bytes,
    )
    result = connection.execute(
        accounts.update().where(accounts.c.id == account_id, fits)
        .values(used_bytes=accounts.c.used_bytes + size)
    )
    if result.rowcount == 1:
        return
    row = connection.execute(accounts.select().where(accounts.c.id == account_id)).one()
    raise QuotaExceededError(
        f"quota exceeded: account {row.name!r} uses {row.used_bytes} of {row.quota_bytes} "
        f"bytes, and this object needs {size} more",
        hint="Delete old snapshots with prune, or ask the server's operator for more space.",
    )


def _compare(existing: StoredObject, blake3_hex: str) -> Reservation:
    # NOTE: an uncommitted row left by a crash also blocks different bytes under its name
    # (409) until an operator deletes the row; content-named objects never hit this.
    if existing.blake3 != blake3_hex:
        return Reservation.CONFLICT
    return Reservation.EXISTS if existing.committed else Reservation.UNFINISHED


def _object_key(repository_id: int, kind: str, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        objects.c.repository_id == repository_id, objects.c.kind == kind, objects.c.name == name
    )


def _account(row: Any) -> Account:
    return Account(
        id=row.id, name=row.name, disabled=bool(row.disabled), append_only=bool(row.append_only),
        quota_bytes=row.quota_bytes, used_bytes=row.used_bytes,
    )


def _token(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id, account_id=row.account_id, label=row.label, created_ns=row.created_ns,
        revoked=bool(row.revoked),
    )


def _repository(row: Any) -> RepositoryInfo:
    return RepositoryInfo(
        id=row.id, account_id=row.account_id, name=row.name, append_only=bool(row.append_only)
    )

"""The server's metadata: accounts, tokens, repositories, objects and passkeys, in SQL.

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
import fcntl
import hashlib
import os
import secrets
import threading
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
from backvault.vault.store import WRITE_OPTION
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

# Passkeys (WebAuthn credentials) of an account, and ceremonies in progress. A ceremony
# is stored under the SHA-256 hash of its id, because the id alone lets a page finish it.
passkey_credentials = sa.Table(
    "passkey_credentials", schema,
    # WebAuthn limits credential ids to 1023 bytes.
    sa.Column("credential_id", sa.LargeBinary(1023), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),  # COSE_Key
    sa.Column("sign_count", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prf", sa.Boolean, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("last_used_ns", sa.BigInteger, nullable=True),
)

passkey_ceremonies = sa.Table(
    "passkey_ceremonies", schema,
    sa.Column("ceremony_hash", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("challenge", sa.LargeBinary(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("page_options", sa.Text, nullable=False),  # JSON sent to the page
    sa.Column("expires_ns", sa.BigInteger, nullable=False),
    sa.Column("used", sa.Boolean, nullable=False, default=False),
    # The passkey a finished registration stored, until the ceremony expires: the page
    # may still undo it when the command that asked for it is gone.
    sa.Column("credential_id", sa.LargeBinary(1023), nullable=True),
)


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


@dataclass(frozen=True)
class PasskeyCredential:
    """A WebAuthn credential registered to an account, as the relying party keeps it."""

    credential_id: bytes
    account_id: int
    public_key: bytes  # COSE_Key, as in the attested credential data
    sign_count: int
    name: str
    prf: bool  # the browser reported the PRF extension enabled at registration
    created_ns: int
    last_used_ns: int | None


@dataclass(frozen=True)
class PasskeyCeremony:
    """A registration or authentication that a passkey page is to finish."""

    account_id: int
    kind: str  # "register" or "authenticate"
    challenge: bytes
    name: str  # the new passkey's name; empty for an authentication
    page_options: str  # JSON for the page: WebAuthn options and PRF salts
    expires_ns: int


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
    """Create the engine; SQLite gets a busy timeout and write-locking write transactions."""
    if not url.startswith("sqlite"):
        # pool_pre_ping replaces connections that a database restart has closed.
        return sa.create_engine(url, pool_pre_ping=True)

    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode, NORMAL syncs at checkpoints rather than at every commit. A commit
        # survives a crash of the server process, but the last ones before a power cut
        # or kernel crash can be lost, guess counts among them. With FULL, each commit
        # waited about 0.4 ms for the disk (measured here) while it held the write lock.
        # docs/vault.md recommends PostgreSQL where every commit must reach the disk.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        # Overwrite deleted rows in the file, so an erased vault record does not linger.
        dbapi_connection.execute("PRAGMA secure_delete=ON")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with "database
        # is locked" when another writer got there first, so IMMEDIATE waits its turn. Reads
        # stay deferred, because in WAL mode readers do not wait for writers.
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


class WriteQueue:
    """Lets one SQLite writer at a time in, across threads and server worker processes.

    SQLite's own busy handler polls with sleeps that grow to 100 ms, so under load a
    writer that lost the race can wait far longer than the transaction it waits for.
    A thread lock and an flock(2) on a file beside the database make writers queue in
    the kernel instead and start as soon as the previous one commits. Processes that do
    not take the lock (an operator's ``backvault server account`` command) still fall
    back on the busy timeout, so this is a speed-up, never a condition for correctness.
    """

    def __init__(self, database_path: str | None) -> None:
        self._thread_lock = threading.Lock()
        self._lock_path = f"{database_path}.write-lock" if database_path else None
        self._lock_file: int | None = None
        self._owner_pid = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._thread_lock:
            descriptor = self._descriptor()
            if descriptor is None:
                yield
                return
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _descriptor(self) -> int | None:
        # Opened lazily and again after a fork: an inherited descriptor would share its
        # lock with the parent process.
        if self._lock_path is None:
            return None
        if self._lock_file is None or self._owner_pid != os.getpid():
            self._lock_file = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._owner_pid = os.getpid()
        return self._lock_file

    def close(self) -> None:
        if self._lock_file is not None and self._owner_pid == os.getpid():
            os.close(self._lock_file)
        self._lock_file = None


def _sqlite_database_path(engine: Engine) -> str | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return os.path.abspath(database)


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
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._write_queue = WriteQueue(_sqlite_database_path(self.engine))

    def create_schema(self) -> None:
        schema.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self._write_queue.close()

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """Begin a transaction that writes; on SQLite, writers take turns (WriteQueue)."""
        if not self._sqlite:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._write_queue.turn(), self._write_engine.begin() as connection:
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
            with self.write_transaction() as connection:
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
        with self.write_transaction() as connection:
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
        with self.write_transaction() as connection:
            connection.execute(objects.delete().where(objects.c.repository_id.in_(repository_ids)))
            connection.execute(repositories.delete().where(repositories.c.account_id == account_id))
            connection.execute(tokens.delete().where(tokens.c.account_id == account_id))
            for account_table in (
                vault_tables.logins, vault_tables.records, passkey_ceremonies,
                passkey_credentials,
            ):
                connection.execute(
                    account_table.delete().where(account_table.c.account_id == account_id)
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
        with self.write_transaction() as connection:
            connection.execute(tokens.insert().values(
                id=info.id, account_id=account_id, token_hash=hash_token(token), label=label,
                created_ns=info.created_ns, revoked=False,
            ))
        return info, token

    def revoke_token(self, token_id: str) -> TokenInfo:
        with self.write_transaction() as connection:
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
        return self.account_for_token_hash(hash_token(token))

    def account_for_token_hash(self, token_hash: str) -> Account | None:
        query = (
            sa.select(accounts)
            .join(tokens, tokens.c.account_id == accounts.c.id)
            .where(tokens.c.token_hash == token_hash, tokens.c.revoked.is_(False))
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
            with self.write_transaction() as connection:
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
        with self.write_transaction() as connection:
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
            with self.write_transaction() as connection:
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
        with self.write_transaction() as connection:
            connection.execute(
                objects.update()
                .where(_object_key(repository_id, kind, name))
                .values(committed=True)
            )

    def remove_object(self, repository: RepositoryInfo, kind: str, name: str) -> bool:
        """Delete an object's row and give its size back to the quota; False if absent."""
        with self.write_transaction() as connection:
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

    # Passkeys -----------------------------------------------------------------------

    def add_passkey_ceremony(
        self, ceremony_hash: str, ceremony: PasskeyCeremony, now_ns: int
    ) -> None:
        """Store a new ceremony, and delete the ceremonies expired at ``now_ns``."""
        with self.write_transaction() as connection:
            connection.execute(
                passkey_ceremonies.delete().where(passkey_ceremonies.c.expires_ns <= now_ns)
            )
            connection.execute(passkey_ceremonies.insert().values(
                ceremony_hash=ceremony_hash, account_id=ceremony.account_id, kind=ceremony.kind,
                challenge=ceremony.challenge, name=ceremony.name,
                page_options=ceremony.page_options, expires_ns=ceremony.expires_ns, used=False,
            ))

    def find_passkey_ceremony(self, ceremony_hash: str, now_ns: int) -> PasskeyCeremony | None:
        """Return the ceremony if it is unused and unexpired at ``now_ns``, else None."""
        with self.engine.connect() as connection:
            row = connection.execute(
                passkey_ceremonies.select().where(_open_ceremony(ceremony_hash, now_ns))
            ).first()
        return _passkey_ceremony(row) if row is not None else None

    def claim_passkey_ceremony(self, ceremony_hash: str, now_ns: int) -> PasskeyCeremony | None:
        """Mark an unused, unexpired ceremony used and return it; None if there is none.

        One conditional UPDATE decides, so two requests cannot both claim a ceremony.
        """
        with self.write_transaction() as connection:
            result = connection.execute(
                passkey_ceremonies.update().where(_open_ceremony(ceremony_hash, now_ns))
                .values(used=True)
            )
            if result.rowcount != 1:
                return None
            row = connection.execute(
                passkey_ceremonies.select()
                .where(passkey_ceremonies.c.ceremony_hash == ceremony_hash)
            ).one()
        return _passkey_ceremony(row)

    def note_ceremony_credential(self, ceremony_hash: str, credential_id: bytes) -> None:
        """Remember which passkey a registration ceremony stored, so it can be undone."""
        with self.write_transaction() as connection:
            connection.execute(
                passkey_ceremonies.update()
                .where(passkey_ceremonies.c.ceremony_hash == ceremony_hash)
                .values(credential_id=credential_id)
            )

    def take_ceremony_credential(
        self, ceremony_hash: str, now_ns: int
    ) -> tuple[int, bytes] | None:
        """Forget and return ``(account id, credential id)`` of an unexpired registration.

        None when the ceremony is unknown, expired, not a finished registration, or was
        undone already: one conditional UPDATE decides, so a passkey is undone once.
        """
        with self.write_transaction() as connection:
            row = connection.execute(
                passkey_ceremonies.select().where(
                    passkey_ceremonies.c.ceremony_hash == ceremony_hash,
                    passkey_ceremonies.c.kind == "register",
                    passkey_ceremonies.c.used.is_(True),
                    passkey_ceremonies.c.credential_id.is_not(None),
                    passkey_ceremonies.c.expires_ns > now_ns,
                )
            ).first()
            if row is None:
                return None
            connection.execute(
                passkey_ceremonies.update()
                .where(passkey_ceremonies.c.ceremony_hash == ceremony_hash)
                .values(credential_id=None)
            )
        return int(row.account_id), bytes(row.credential_id)

    def add_passkey_credential(self, credential: PasskeyCredential) -> bool:
        """Store a credential; False if a credential with its id is already stored."""
        try:
            with self.write_transaction() as connection:
                connection.execute(passkey_credentials.insert().values(
                    credential_id=credential.credential_id, account_id=credential.account_id,
                    public_key=credential.public_key, sign_count=credential.sign_count,
                    name=credential.name, prf=credential.prf, created_ns=credential.created_ns,
                    last_used_ns=credential.last_used_ns,
                ))
        except IntegrityError:
            return False
        return True

    def find_passkey_credential(
        self, account_id: int, credential_id: bytes
    ) -> PasskeyCredential | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                passkey_credentials.select().where(_credential_key(account_id, credential_id))
            ).first()
        return _passkey_credential(row) if row is not None else None

    def list_passkey_credentials(self, account_id: int) -> list[PasskeyCredential]:
        query = (
            passkey_credentials.select()
            .where(passkey_credentials.c.account_id == account_id)
            .order_by(passkey_credentials.c.created_ns)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_passkey_credential(row) for row in rows]

    def record_passkey_use(
        self, account_id: int, credential_id: bytes, sign_count: int, used_ns: int
    ) -> bool:
        """Store a verified assertion's sign count and time; False if the credential is gone."""
        with self.write_transaction() as connection:
            result = connection.execute(
                passkey_credentials.update().where(_credential_key(account_id, credential_id))
                .values(sign_count=sign_count, last_used_ns=used_ns)
            )
        return result.rowcount == 1

    def delete_passkey_credential(self, account_id: int, credential_id: bytes) -> bool:
        """Delete one of the account's credentials; False if the account has no such one."""
        with self.write_transaction() as connection:
            result = connection.execute(
                passkey_credentials.delete().where(_credential_key(account_id, credential_id))
            )
        return result.rowcount == 1


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


def _open_ceremony(ceremony_hash: str, now_ns: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        passkey_ceremonies.c.ceremony_hash == ceremony_hash,
        passkey_ceremonies.c.used.is_(False),
        passkey_ceremonies.c.expires_ns > now_ns,
    )


def _credential_key(account_id: int, credential_id: bytes) -> sa.ColumnElement[bool]:
    return sa.and_(
        passkey_credentials.c.account_id == account_id,
        passkey_credentials.c.credential_id == credential_id,
    )


def _passkey_ceremony(row: Any) -> PasskeyCeremony:
    return PasskeyCeremony(
        account_id=row.account_id, kind=row.kind, challenge=bytes(row.challenge), name=row.name,
        page_options=row.page_options, expires_ns=row.expires_ns,
    )


def _passkey_credential(row: Any) -> PasskeyCredential:
    return PasskeyCredential(
        credential_id=bytes(row.credential_id), account_id=row.account_id,
        public_key=bytes(row.public_key), sign_count=row.sign_count, name=row.name,
        prf=bool(row.prf), created_ns=row.created_ns, last_used_ns=row.last_used_ns,
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

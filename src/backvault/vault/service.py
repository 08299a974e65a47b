"""The vault service: OPAQUE registration and login over the records of one account.

A login attempt is counted when KE2 is made, before it is returned, and only a valid KE3
resets the count. When every guess is used and no login that holds one is still
unfinished, the record is destroyed: its sealed contents are deleted and a tombstone
stays, so that every later attempt gets RecordDestroyedError. A login for a record id
that the account does not have gets a fake KE2 of the same size (RFC 9807, section
6.3.2.2), whose login can never finish.

Each record gets its own OPRF key, derived from the OPRF seed with the credential
identifier ``"backvault vault v1" || account id (8 bytes) || record id``, so the OPRF
output for a record id is the same on every attempt, whether the record exists or not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from backvault.opaque import (
    OpaqueError,
    ServerKeys,
    ServerLoginState,
    generate_fake_client_public_key,
    generate_server_keys,
    server_login_finish,
    server_login_start,
    server_registration_finish,
    server_registration_response,
)
from backvault.opaque.messages import KE1_BYTES, REGISTRATION_REQUEST_BYTES
from backvault.vault.errors import (
    KeyStoreError,
    LoginFailedError,
    LoginInProgressError,
    LoginNotFoundError,
    RecordDestroyedError,
    RecordNotFoundError,
    SealedDataError,
    VaultError,
)
from backvault.vault.keystore import KeyStore
from backvault.vault.protocol import LOGIN_CONTEXT, new_id, seal_release
from backvault.vault.settings import VaultSettings
from backvault.vault.store import (
    STATE_DESTROYED,
    GuessOutcome,
    GuessTaken,
    PendingLogin,
    RecordInfo,
    StoredServerKey,
    VaultStore,
)

logger = logging.getLogger("backvault.server.vault")

CREDENTIAL_PREFIX = b"backvault vault v1"
AD_RECORD = b"backvault vault v1 record\x00"
AD_LOGIN = b"backvault vault v1 login state\x00"
AD_SERVER_KEY = b"backvault vault v1 server private key"
EXPIRED_LOGIN_SWEEP_INTERVAL = 60.0  # seconds between deletions of expired login rows


class InvalidRequestError(VaultError):
    """A message from the client is malformed; nothing was counted or stored."""


class RecordExistsError(VaultError):
    """The account already has a record with this id."""


@dataclass(frozen=True)
class Registration:
    record_id: str
    response: bytes
    guess_limit: int


@dataclass(frozen=True)
class LoginChallenge:
    login_id: str
    ke2: bytes
    guesses_left: int  # if this attempt fails


def credential_identifier(account_id: int, record_id: str) -> bytes:
    return CREDENTIAL_PREFIX + account_id.to_bytes(8, "big") + record_id.encode("ascii")


def _record_associated_data(account_id: int, record_id: str) -> bytes:
    return AD_RECORD + account_id.to_bytes(8, "big") + record_id.encode("ascii")


def _login_associated_data(account_id: int, record_id: str, login_id: str) -> bytes:
    return (
        AD_LOGIN + account_id.to_bytes(8, "big") + record_id.encode("ascii")
        + login_id.encode("ascii")
    )


class VaultService:
    """Registration, login, listing and deletion of vault records, per account."""

    def __init__(self, store: VaultStore, key_store: KeyStore, settings: VaultSettings) -> None:
        self._store = store
        self._key_store = key_store
        self._settings = settings
        self._keys, self._fake_client_public_key = self._load_server_keys()
        self._next_sweep = 0.0

    @property
    def settings(self) -> VaultSettings:
        return self._settings

    def close(self) -> None:
        self._key_store.close()

    def _load_server_keys(self) -> tuple[ServerKeys, bytes]:
        """Read the server's OPAQUE key pair, creating it on the first start."""
        stored = self._store.server_key()
        if stored is None:
            _, generated = generate_server_keys()  # its software OPRF seed is not used
            self._store.add_server_key(StoredServerKey(
                public_key=generated.server_public_key,
                sealed_private_key=self._key_store.seal(
                    generated.server_private_key, AD_SERVER_KEY
                ),
                fake_client_public_key=generate_fake_client_public_key(),
            ))
            stored = self._store.server_key()
            assert stored is not None
        try:
            private_key = self._key_store.open(stored.sealed_private_key, AD_SERVER_KEY)
        except SealedDataError as error:
            raise KeyStoreError(
                f"the vault's OPAQUE private key in the database does not decrypt with the "
                f"{self._key_store.description}; the database and the vault keys do not "
                "belong together"
            ) from error
        keys = ServerKeys(
            oprf_seed_expand=self._key_store.oprf_seed_expand,
            server_private_key=private_key,
            server_public_key=stored.public_key,
        )
        return keys, stored.fake_client_public_key

    # Registration ---------------------------------------------------------------------

    def register_start(self, account_id: int, request: bytes) -> Registration:
        """Evaluate the client's blinded password under the OPRF key of a new record id."""
        if len(request) != REGISTRATION_REQUEST_BYTES:
            raise InvalidRequestError("the registration request has the wrong size")
        record_id = new_id()
        try:
            response = server_registration_response(
                self._keys, request, credential_identifier(account_id, record_id)
            )
        except OpaqueError:
            raise InvalidRequestError("the registration request is not a valid element") from None
        return Registration(record_id, response, self._settings.guess_limit)

    def register_finish(
        self, account_id: int, record_id: str, record: bytes, wrapped_key: bytes,
        guess_limit: int | None,
    ) -> RecordInfo:
        """Store the client's registration record and wrapped master key as a new record.

        ``guess_limit`` may lower the server's limit for this record, never raise it.
        """
        try:
            server_registration_finish(record)
        except OpaqueError:
            raise InvalidRequestError("the registration record is malformed") from None
        limit = self._settings.guess_limit if guess_limit is None else guess_limit
        if not 1 <= limit <= self._settings.guess_limit:
            raise InvalidRequestError(
                f"guess_limit must be from 1 to {self._settings.guess_limit} on this server"
            )
        contents = msgpack.packb({"record": record, "wrapped_key": wrapped_key})
        sealed = self._key_store.seal(contents, _record_associated_data(account_id, record_id))
        if not self._store.add_record(account_id, record_id, limit, sealed):
            raise RecordExistsError(f"record {record_id} already exists")
        logger.info(
            "vault record registered",
            extra={"account_id": account_id, "record_id": record_id, "guess_limit": limit},
        )
        found = self._store.find_record(account_id, record_id)
        assert found is not None
        return found

    # Login ----------------------------------------------------------------------------

    def login_start(self, account_id: int, record_id: str, ke1: bytes) -> LoginChallenge:
        """Count a guess, then return KE2; a fake KE2 if the account has no such record.

        Raises RecordDestroyedError or LoginInProgressError when no guess can be taken,
        and InvalidRequestError, with nothing counted, for a malformed KE1.
        """
        if len(ke1) != KE1_BYTES:
            raise InvalidRequestError("KE1 has the wrong size")
        self._sweep_expired_logins()
        login_id = new_id()
        expires_ns = time.time_ns() + self._settings.login_timeout * 1_000_000_000
        credential = credential_identifier(account_id, record_id)
        login_associated_data = _login_associated_data(account_id, record_id, login_id)
        ke2_holder: list[bytes] = []

        def respond(sealed_record: bytes, _guesses_left: int) -> bytes:
            record = self._open_record(account_id, record_id, sealed_record)["record"]
            state, ke2 = server_login_start(
                self._keys, record, ke1, credential, context=LOGIN_CONTEXT,
                fake_client_public_key=self._fake_client_public_key,
            )
            ke2_holder.append(ke2)
            return self._key_store.seal(state.to_bytes(), login_associated_data)

        try:
            taken = self._store.take_guess(account_id, record_id, login_id, expires_ns, respond)
        except OpaqueError:
            # KE1 had the right size but an invalid element; the transaction that would
            # have counted the guess was rolled back.
            raise InvalidRequestError("KE1 is not a valid login message") from None

        if taken == GuessOutcome.UNKNOWN:
            return self._fake_login(account_id, record_id, login_id, ke1, expires_ns)
        if taken == GuessOutcome.DESTROYED:
            logger.info(
                "vault login rejected: record destroyed",
                extra={"account_id": account_id, "record_id": record_id},
            )
            raise RecordDestroyedError(record_id)
        if taken == GuessOutcome.BUSY:
            raise LoginInProgressError(retry_after=float(self._settings.login_timeout))
        assert isinstance(taken, GuessTaken)
        logger.info(
            "vault login started",
            extra={"account_id": account_id, "record_id": record_id,
                   "guesses_left": taken.guesses_left},
        )
        return LoginChallenge(login_id, ke2_holder[0], taken.guesses_left)

    def _fake_login(
        self, account_id: int, record_id: str, login_id: str, ke1: bytes, expires_ns: int
    ) -> LoginChallenge:
        try:
            state, ke2 = server_login_start(
                self._keys, None, ke1, credential_identifier(account_id, record_id),
                context=LOGIN_CONTEXT, fake_client_public_key=self._fake_client_public_key,
            )
        except OpaqueError:
            raise InvalidRequestError("KE1 is not a valid login message") from None
        # A new record would have its full limit minus this guess left.
        guesses_left = self._settings.guess_limit - 1
        sealed_state = self._key_store.seal(
            state.to_bytes(), _login_associated_data(account_id, record_id, login_id)
        )
        self._store.add_fake_login(
            account_id, record_id, login_id, guesses_left, expires_ns, sealed_state
        )
        return LoginChallenge(login_id, ke2, guesses_left)

    def login_finish(self, account_id: int, login_id: str, ke3: bytes) -> tuple[str, bytes]:
        """Check KE3; if it verifies, reset the count and release the wrapped master key.

        Returns the record id and the release (see :mod:`backvault.vault.protocol`).
        Raises LoginFailedError with the guesses left when KE3 does not verify.
        """
        session_keys: list[bytes] = []

        def verify(pending: PendingLogin) -> bool:
            state_bytes = self._key_store.open(
                pending.sealed_state,
                _login_associated_data(account_id, pending.record_id, login_id),
            )
            try:
                state = ServerLoginState.from_bytes(state_bytes)
            except OpaqueError:
                raise SealedDataError(f"login {login_id} has a malformed state") from None
            try:
                session_keys.append(server_login_finish(state, ke3))
            except OpaqueError:
                return False
            return True

        finished = self._store.finish_login(account_id, login_id, verify)
        if finished is None:
            raise LoginNotFoundError(login_id)
        record_id = finished.record_id
        if not finished.verified:
            self._log_failed_login(account_id, record_id, finished.guesses_left)
            raise LoginFailedError(finished.guesses_left)
        if finished.sealed_record is None:
            # Deleted (or destroyed) between KE2 and KE3.
            raise RecordNotFoundError(record_id)

        wrapped_key = self._open_record(account_id, record_id, finished.sealed_record)[
            "wrapped_key"
        ]
        logger.info(
            "vault login succeeded; guess count reset",
            extra={"account_id": account_id, "record_id": record_id},
        )
        return record_id, seal_release(session_keys[0], wrapped_key, record_id)

    def login_abort(self, account_id: int, login_id: str) -> int:
        """End a login that the client gave up (its password was wrong); return guesses left.

        The guess stays counted. Ending the login at once lets the record be destroyed
        without waiting for the login to expire when that was its last guess.
        """
        aborted = self._store.abort_login(account_id, login_id)
        if aborted is None:
            raise LoginNotFoundError(login_id)
        record_id, guesses_left = aborted
        self._log_failed_login(account_id, record_id, guesses_left)
        return guesses_left

    def _log_failed_login(self, account_id: int, record_id: str, guesses_left: int) -> None:
        if guesses_left > 0:
            logger.info(
                "vault login failed",
                extra={"account_id": account_id, "record_id": record_id,
                       "guesses_left": guesses_left},
            )
            return
        found = self._store.find_record(account_id, record_id)
        if found is not None and found.state == STATE_DESTROYED:
            logger.warning(
                "vault record destroyed: guess limit reached",
                extra={"account_id": account_id, "record_id": record_id,
                       "guess_limit": found.guess_limit},
            )

    def _open_record(self, account_id: int, record_id: str, sealed: bytes) -> dict[str, bytes]:
        contents = self._key_store.open(sealed, _record_associated_data(account_id, record_id))
        unpacked: Any = msgpack.unpackb(contents, raw=False)
        if not isinstance(unpacked, dict):
            raise SealedDataError(f"vault record {record_id} has an unknown layout")
        return {
            "record": bytes(unpacked["record"]), "wrapped_key": bytes(unpacked["wrapped_key"])
        }

    def _sweep_expired_logins(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + EXPIRED_LOGIN_SWEEP_INTERVAL
        self._store.delete_expired_logins()

    # Listing and deletion -------------------------------------------------------------

    def list_records(self, account_id: int) -> list[RecordInfo]:
        """Return the account's records, after destroying those with no guess left."""
        self._store.settle_exhausted_records(account_id)
        return self._store.list_records(account_id)

    def delete_record(self, account_id: int, record_id: str) -> None:
        if not self._store.delete_record(account_id, record_id):
            raise RecordNotFoundError(record_id)
        logger.info(
            "vault record deleted", extra={"account_id": account_id, "record_id": record_id}
        )

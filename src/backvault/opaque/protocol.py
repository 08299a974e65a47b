"""OPAQUE-3DH with ristretto255-SHA512 (RFC 9807): the client and server halves.

Registration::

    client_registration_start -> request -> server_registration_response -> response
    client_registration_finish -> (record, export_key); the server keeps the record
                                  after server_registration_finish has checked it

Login::

    client_login_start -> ke1 -> server_login_start -> ke2
    client_login_finish -> (ke3, session_key, export_key) -> server_login_finish -> session_key

All messages are bytes of a fixed size. Every failed check raises :class:`OpaqueError`.
The public functions draw their randomness from :mod:`secrets`. The functions with a
leading underscore take it as arguments, so the RFC 9807 test vectors can be reproduced,
and are for tests only.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from backvault.opaque import oprf, ristretto255
from backvault.opaque.ake import auth_client_finalize, auth_server_respond
from backvault.opaque.credentials import (
    NOK,
    create_credential_response,
    derive_oprf_key,
    recover_credentials,
)
from backvault.opaque.envelope import (
    create_cleartext_credentials,
    derive_diffie_hellman_key_pair,
    derive_randomized_password,
    store,
)
from backvault.opaque.errors import OpaqueError
from backvault.opaque.kdf import NH, NM, NX, expand
from backvault.opaque.ksf import Ksf
from backvault.opaque.messages import (
    ENVELOPE_BYTES,
    KE1,
    KE2,
    NN,
    NSEED,
    RegistrationRecord,
    RegistrationResponse,
    parse_ke3,
    parse_registration_request,
)

OPRF_SEED_BYTES = NH  # RFC 9807: "the seed of Nh bytes used by the server"


def software_expand(oprf_seed: bytes) -> Callable[[bytes], bytes]:
    """Return ``info -> Expand(oprf_seed, info, Nok)`` computed in this process.

    HKDF-Expand of at most one block is ``HMAC-SHA512(oprf_seed, info || 0x01)`` truncated
    to 32 bytes, so an HSM that holds ``oprf_seed`` as an HMAC key can replace this
    function.
    """
    if len(oprf_seed) != OPRF_SEED_BYTES:
        raise ValueError(f"oprf_seed is {len(oprf_seed)} bytes, expected {OPRF_SEED_BYTES}")

    def expand_oprf_seed(info: bytes) -> bytes:
        return expand(oprf_seed, info, NOK)

    return expand_oprf_seed


@dataclass(frozen=True, repr=False)
class ServerKeys:
    """The server's long-term secrets: the OPRF seed (behind a function) and the AKE key pair.

    ``oprf_seed_expand(info)`` returns Expand(oprf_seed, info, 32); see
    :func:`software_expand`. Construction raises ``ValueError`` if the private key is not
    a canonical non-zero scalar or the public key does not belong to it.
    """

    oprf_seed_expand: Callable[[bytes], bytes]
    server_private_key: bytes
    server_public_key: bytes

    def __post_init__(self) -> None:
        try:
            ristretto255.deserialize_nonzero_scalar(self.server_private_key)
        except OpaqueError:
            raise ValueError("server_private_key is not a canonical non-zero scalar") from None
        expected_public_key = ristretto255.scalar_mult_base(self.server_private_key)
        if not hmac.compare_digest(expected_public_key, self.server_public_key):
            raise ValueError("server_public_key does not match server_private_key")

    def __repr__(self) -> str:
        return f"ServerKeys(server_public_key={self.server_public_key.hex()}, ...)"


def generate_server_keys() -> tuple[bytes, ServerKeys]:
    """Return a new random OPRF seed and the server keys that use it through software_expand."""
    oprf_seed = secrets.token_bytes(OPRF_SEED_BYTES)
    server_private_key = ristretto255.random_scalar()
    keys = ServerKeys(
        oprf_seed_expand=software_expand(oprf_seed),
        server_private_key=server_private_key,
        server_public_key=ristretto255.scalar_mult_base(server_private_key),
    )
    return oprf_seed, keys


def generate_fake_client_public_key() -> bytes:
    """Return a public key for fake records that has no known private key.

    RFC 9807 (section 6.3.2.2) recommends creating the fake record once and storing it
    with the real ones. Store this key and pass it to every :func:`server_login_start`
    for an unknown credential.
    """
    return ristretto255.random_element()


@dataclass(frozen=True, repr=False)
class ClientRegistrationState:
    """The client's password and OPRF blind between the two registration steps."""

    password: bytes
    blind: bytes

    def __repr__(self) -> str:
        return "ClientRegistrationState(<secret>)"


@dataclass(frozen=True, repr=False)
class ClientLoginState:
    """The client's password, OPRF blind, ephemeral private key and KE1 between KE1 and KE3."""

    password: bytes
    blind: bytes
    client_secret: bytes
    ke1: KE1

    def __repr__(self) -> str:
        return "ClientLoginState(<secret>)"


SERVER_LOGIN_STATE_BYTES = NM + NX + 1


@dataclass(frozen=True, repr=False)
class ServerLoginState:
    """The server's state between KE2 and KE3: the expected client MAC and the session key.

    ``record_found`` is False for a fake record, so :func:`server_login_finish` then fails
    even if a client MAC matched. ``to_bytes`` and ``from_bytes`` let a server keep the
    state between two requests; the bytes are secret.
    """

    expected_client_mac: bytes
    session_key: bytes
    record_found: bool

    def to_bytes(self) -> bytes:
        return self.expected_client_mac + self.session_key + bytes([self.record_found])

    @classmethod
    def from_bytes(cls, data: bytes) -> ServerLoginState:
        if len(data) != SERVER_LOGIN_STATE_BYTES or data[-1] not in (0, 1):
            raise OpaqueError()
        return cls(data[:NM], data[NM : NM + NX], data[-1] == 1)

    def __repr__(self) -> str:
        return f"ServerLoginState(<secret>, record_found={self.record_found})"


@dataclass(frozen=True, repr=False)
class ServerLoginRandomness:
    """The random inputs of GenerateKE2; ``fake_masking_key`` is used only for a fake record."""

    masking_nonce: bytes
    server_nonce: bytes
    server_keyshare_seed: bytes
    fake_masking_key: bytes

    @classmethod
    def generate(cls) -> ServerLoginRandomness:
        return cls(
            masking_nonce=secrets.token_bytes(NN),
            server_nonce=secrets.token_bytes(NN),
            server_keyshare_seed=secrets.token_bytes(NSEED),
            fake_masking_key=secrets.token_bytes(NH),
        )


# Registration (RFC 9807, section 5)


def client_registration_start(password: bytes) -> tuple[ClientRegistrationState, bytes]:
    """CreateRegistrationRequest: return the client state and the request for the server."""
    return _client_registration_start(password, ristretto255.random_scalar())


def _client_registration_start(
    password: bytes, blind: bytes
) -> tuple[ClientRegistrationState, bytes]:
    ristretto255.deserialize_nonzero_scalar(blind)
    blinded_message = oprf.blind(password, blind)
    return ClientRegistrationState(password, blind), blinded_message


def server_registration_response(
    keys: ServerKeys, request: bytes, credential_identifier: bytes
) -> bytes:
    """CreateRegistrationResponse (RFC 9807, section 5.2.2): evaluate the blinded password."""
    blinded_message = parse_registration_request(request)
    oprf_key = derive_oprf_key(keys.oprf_seed_expand, credential_identifier)
    evaluated_message = oprf.blind_evaluate(oprf_key, blinded_message)
    return RegistrationResponse(evaluated_message, keys.server_public_key).serialize()


def client_registration_finish(
    state: ClientRegistrationState,
    response: bytes,
    *,
    ksf: Ksf,
    server_identity: bytes | None = None,
    client_identity: bytes | None = None,
) -> tuple[bytes, bytes]:
    """FinalizeRegistrationRequest (RFC 9807, section 5.2.3): return (record, export_key).

    The server public key in ``response`` is taken as is: the client has nothing to check
    it against unless the application pins it.
    """
    return _client_registration_finish(
        state,
        response,
        ksf=ksf,
        server_identity=server_identity,
        client_identity=client_identity,
        envelope_nonce=secrets.token_bytes(NN),
    )


def _client_registration_finish(
    state: ClientRegistrationState,
    response: bytes,
    *,
    ksf: Ksf,
    server_identity: bytes | None,
    client_identity: bytes | None,
    envelope_nonce: bytes,
) -> tuple[bytes, bytes]:
    parsed = RegistrationResponse.parse(response)
    ristretto255.deserialize_element(parsed.server_public_key)
    oprf_output = oprf.finalize(state.password, state.blind, parsed.evaluated_message)
    randomized_password = derive_randomized_password(oprf_output, ksf)
    stored = store(
        randomized_password,
        parsed.server_public_key,
        server_identity,
        client_identity,
        envelope_nonce,
    )
    record = RegistrationRecord(stored.client_public_key, stored.masking_key, stored.envelope)
    return record.serialize(), stored.export_key


def server_registration_finish(record: bytes) -> bytes:
    """Check an uploaded registration record and return it for storage.

    Raises OpaqueError if the record has the wrong size or its client public key is not a
    valid element.
    """
    parsed = RegistrationRecord.parse(record)
    ristretto255.deserialize_element(parsed.client_public_key)
    return record


# Login (RFC 9807, section 6)


def client_login_start(password: bytes) -> tuple[ClientLoginState, bytes]:
    """GenerateKE1 (RFC 9807, section 6.2.1): return the client state and KE1."""
    return _client_login_start(
        password,
        blind=ristretto255.random_scalar(),
        client_nonce=secrets.token_bytes(NN),
        client_keyshare_seed=secrets.token_bytes(NSEED),
    )


def _client_login_start(
    password: bytes, *, blind: bytes, client_nonce: bytes, client_keyshare_seed: bytes
) -> tuple[ClientLoginState, bytes]:
    ristretto255.deserialize_nonzero_scalar(blind)
    blinded_message = oprf.blind(password, blind)
    # AuthClientStart (RFC 9807, section 6.4.3)
    client_secret, client_public_keyshare = derive_diffie_hellman_key_pair(client_keyshare_seed)
    ke1 = KE1(blinded_message, client_nonce, client_public_keyshare)
    return ClientLoginState(password, blind, client_secret, ke1), ke1.serialize()


def server_login_start(
    keys: ServerKeys,
    record: bytes | None,
    ke1: bytes,
    credential_identifier: bytes,
    *,
    context: bytes,
    server_identity: bytes | None = None,
    client_identity: bytes | None = None,
    fake_client_public_key: bytes | None = None,
) -> tuple[ServerLoginState, bytes]:
    """GenerateKE2 (RFC 9807, section 6.2.2): return the server state and KE2.

    With ``record`` None the server responds with a fake record (RFC 9807, section
    6.3.2.2): ``fake_client_public_key`` (a fresh random element if None), a random masking
    key and an all-zero envelope. The KE2 has the same size and form as a real one, and
    the login can never finish. Pass a stored fake key, as the RFC recommends, so both
    paths do the same work.
    """
    return _server_login_start(
        keys,
        record,
        ke1,
        credential_identifier,
        context=context,
        server_identity=server_identity,
        client_identity=client_identity,
        fake_client_public_key=fake_client_public_key,
        randomness=ServerLoginRandomness.generate(),
    )


def _server_login_start(
    keys: ServerKeys,
    record: bytes | None,
    ke1: bytes,
    credential_identifier: bytes,
    *,
    context: bytes,
    server_identity: bytes | None,
    client_identity: bytes | None,
    fake_client_public_key: bytes | None,
    randomness: ServerLoginRandomness,
) -> tuple[ServerLoginState, bytes]:
    parsed_ke1 = KE1.parse(ke1)
    # Both branches validate one element, so that they cost the same.
    if record is None:
        parsed_record = _fake_record(fake_client_public_key, randomness.fake_masking_key)
    else:
        parsed_record = RegistrationRecord.parse(record)
        ristretto255.deserialize_element(parsed_record.client_public_key)

    oprf_key = derive_oprf_key(keys.oprf_seed_expand, credential_identifier)
    credential_response = create_credential_response(
        parsed_ke1.blinded_message,
        keys.server_public_key,
        parsed_record,
        oprf_key,
        randomness.masking_nonce,
    )
    cleartext_credentials = create_cleartext_credentials(
        keys.server_public_key, parsed_record.client_public_key, server_identity, client_identity
    )
    server_keyshare = derive_diffie_hellman_key_pair(randomness.server_keyshare_seed)
    auth = auth_server_respond(
        cleartext_credentials,
        keys.server_private_key,
        parsed_record.client_public_key,
        parsed_ke1,
        credential_response,
        context=context,
        server_nonce=randomness.server_nonce,
        server_keyshare=server_keyshare,
    )
    ke2 = KE2(
        credential_response,
        server_nonce=randomness.server_nonce,
        server_public_keyshare=server_keyshare[1],
        server_mac=auth.server_mac,
    )
    state = ServerLoginState(auth.expected_client_mac, auth.session_key, record is not None)
    return state, ke2.serialize()


def _fake_record(
    fake_client_public_key: bytes | None, fake_masking_key: bytes
) -> RegistrationRecord:
    if fake_client_public_key is None:
        fake_client_public_key = ristretto255.random_element()
    try:
        ristretto255.deserialize_element(fake_client_public_key)
    except OpaqueError:
        raise ValueError("fake_client_public_key is not a valid ristretto255 element") from None
    return RegistrationRecord(fake_client_public_key, fake_masking_key, bytes(ENVELOPE_BYTES))


def client_login_finish(
    state: ClientLoginState,
    ke2: bytes,
    *,
    ksf: Ksf,
    context: bytes,
    server_identity: bytes | None = None,
    client_identity: bytes | None = None,
) -> tuple[bytes, bytes, bytes]:
    """GenerateKE3 (RFC 9807, section 6.2.3): return (ke3, session_key, export_key).

    Raises OpaqueError if the envelope does not open (wrong password or a changed record)
    or the server MAC fails. The export key is returned only after the server MAC has
    been verified, as RFC 9807 (section 6) requires.
    """
    parsed_ke2 = KE2.parse(ke2)
    credentials = recover_credentials(
        state.password,
        state.blind,
        parsed_ke2.credential_response,
        ksf,
        server_identity,
        client_identity,
    )
    envelope = credentials.envelope
    ke3, session_key = auth_client_finalize(
        envelope.cleartext_credentials,
        envelope.client_private_key,
        state.client_secret,
        state.ke1,
        parsed_ke2,
        context=context,
    )
    return ke3, session_key, envelope.export_key


def server_login_finish(state: ServerLoginState, ke3: bytes) -> bytes:
    """ServerFinish (RFC 9807, section 6.2.4): return the session key if the client MAC verifies.

    Raises OpaqueError for a wrong client MAC and for every login against a fake record.
    """
    client_mac = parse_ke3(ke3)
    mac_matches = hmac.compare_digest(client_mac, state.expected_client_mac)
    if not (mac_matches and state.record_found):
        raise OpaqueError()
    return state.session_key

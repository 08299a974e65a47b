"""Interoperability with opaque-ke 4.0.1 through its Python binding opaque-ke-py 0.1.0.

opaque-ke-py fixes its cipher suite to ristretto255 OPRF, 3DH over ristretto255 with
SHA-512, and ``argon2::Argon2::default()`` as the key-stretching function. The binding
links the argon2 crate 0.5.3, whose defaults are Argon2id version 0x13 with m = 19456 KiB,
t = 2 and p = 1 (``Params::DEFAULT_M_COST`` and so on). opaque-ke adds a 16-byte
all-zero salt and a 64-byte output, which is what :class:`Argon2idKsf` does. The binding
passes no identities (both default to the public keys) and an empty context, so the tests
here do the same.

``ServerSetupData.to_bytes()`` is ``oprf_seed (64) || server private key (32) || fake
public key (32)``, which lets both servers share one set of keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import opaque_ke_py
import pytest

from backvault.opaque import (
    Argon2idKsf,
    OpaqueError,
    ServerKeys,
    client_login_finish,
    client_login_start,
    client_registration_finish,
    client_registration_start,
    generate_server_keys,
    ristretto255,
    server_login_finish,
    server_login_start,
    server_registration_finish,
    server_registration_response,
    software_expand,
)

OPAQUE_KE_ARGON2 = Argon2idKsf(memory_kib=19456, iterations=2, lanes=1)
PASSWORD = b"interop password"
WRONG_PASSWORD = b"interop passworD"
CREDENTIAL_ID = b"alice@example.org"
CONTEXT = b""  # opaque-ke-py passes no context


@dataclass
class SharedServer:
    """One set of server keys, loaded into both implementations."""

    keys: ServerKeys
    setup: opaque_ke_py.ServerSetupData


@pytest.fixture(scope="module")
def shared_from_opaque_ke() -> SharedServer:
    setup = opaque_ke_py.server_setup()
    setup_bytes = setup.to_bytes()
    oprf_seed, private_key = setup_bytes[:64], setup_bytes[64:96]
    keys = ServerKeys(
        oprf_seed_expand=software_expand(oprf_seed),
        server_private_key=private_key,
        server_public_key=ristretto255.scalar_mult_base(private_key),
    )
    return SharedServer(keys, setup)


@pytest.fixture(scope="module")
def shared_from_ours() -> SharedServer:
    oprf_seed, keys = generate_server_keys()
    fake_public_key = ristretto255.scalar_mult_base(ristretto255.random_scalar())
    setup_bytes = oprf_seed + keys.server_private_key + fake_public_key
    return SharedServer(keys, opaque_ke_py.ServerSetupData.from_bytes(setup_bytes))


def our_client_registers(server: SharedServer, *, with_our_server: bool) -> tuple[bytes, bytes]:
    state, request = client_registration_start(PASSWORD)
    if with_our_server:
        response = server_registration_response(server.keys, request, CREDENTIAL_ID)
    else:
        response = opaque_ke_py.server_registration_start(
            server.setup, request, CREDENTIAL_ID
        ).get_message()
    record, export_key = client_registration_finish(state, response, ksf=OPAQUE_KE_ARGON2)
    if with_our_server:
        return server_registration_finish(record), export_key
    password_file = opaque_ke_py.server_registration_finish(record).get_password_file()
    return password_file, export_key


def their_client_registers(server: SharedServer, *, with_our_server: bool) -> tuple[bytes, bytes]:
    start = opaque_ke_py.client_registration_start(PASSWORD)
    if with_our_server:
        response = server_registration_response(server.keys, start.get_message(), CREDENTIAL_ID)
    else:
        response = opaque_ke_py.server_registration_start(
            server.setup, start.get_message(), CREDENTIAL_ID
        ).get_message()
    finish = opaque_ke_py.client_registration_finish(PASSWORD, start.get_state(), response)
    if with_our_server:
        return server_registration_finish(finish.get_message()), finish.get_export_key()
    password_file = opaque_ke_py.server_registration_finish(
        finish.get_message()
    ).get_password_file()
    return password_file, finish.get_export_key()


def our_client_logs_in_to_their_server(
    server: SharedServer, record: bytes, password: bytes = PASSWORD
) -> tuple[bytes, bytes]:
    """Return (client session key, export key) after their server accepted KE3."""
    client_state, ke1 = client_login_start(password)
    server_start = opaque_ke_py.server_login_start(server.setup, record, ke1, CREDENTIAL_ID)
    ke3, session_key, export_key = client_login_finish(
        client_state, server_start.get_message(), ksf=OPAQUE_KE_ARGON2, context=CONTEXT
    )
    server_finish = opaque_ke_py.server_login_finish(server_start.get_state(), ke3)
    assert server_finish.get_session_key() == session_key
    return session_key, export_key


def their_client_logs_in_to_our_server(
    server: SharedServer, record: bytes, password: bytes = PASSWORD
) -> tuple[bytes, bytes]:
    """Return (client session key, export key) after our server accepted KE3."""
    client_start = opaque_ke_py.client_login_start(password)
    server_state, ke2 = server_login_start(
        server.keys, record, client_start.get_message(), CREDENTIAL_ID, context=CONTEXT
    )
    client_finish = opaque_ke_py.client_login_finish(password, client_start.get_state(), ke2)
    session_key = server_login_finish(server_state, client_finish.get_message())
    assert client_finish.get_session_key() == session_key
    return session_key, client_finish.get_export_key()


def test_same_registration_response(shared_from_opaque_ke: SharedServer) -> None:
    start = opaque_ke_py.client_registration_start(PASSWORD)
    theirs = opaque_ke_py.server_registration_start(
        shared_from_opaque_ke.setup, start.get_message(), CREDENTIAL_ID
    ).get_message()
    ours = server_registration_response(
        shared_from_opaque_ke.keys, start.get_message(), CREDENTIAL_ID
    )

    assert ours == theirs


def test_our_client_with_their_server(shared_from_opaque_ke: SharedServer) -> None:
    record, registration_export_key = our_client_registers(
        shared_from_opaque_ke, with_our_server=False
    )

    _, login_export_key = our_client_logs_in_to_their_server(shared_from_opaque_ke, record)

    assert login_export_key == registration_export_key


def test_their_client_with_our_server(shared_from_ours: SharedServer) -> None:
    record, registration_export_key = their_client_registers(shared_from_ours, with_our_server=True)

    _, login_export_key = their_client_logs_in_to_our_server(shared_from_ours, record)

    assert login_export_key == registration_export_key


def test_their_registration_our_login(shared_from_opaque_ke: SharedServer) -> None:
    """Their client and server register; our client logs in to our server on the same keys."""
    record, their_export_key = their_client_registers(shared_from_opaque_ke, with_our_server=False)
    client_state, ke1 = client_login_start(PASSWORD)
    server_state, ke2 = server_login_start(
        shared_from_opaque_ke.keys, record, ke1, CREDENTIAL_ID, context=CONTEXT
    )

    ke3, session_key, our_export_key = client_login_finish(
        client_state, ke2, ksf=OPAQUE_KE_ARGON2, context=CONTEXT
    )

    assert server_login_finish(server_state, ke3) == session_key
    assert our_export_key == their_export_key


def test_our_registration_their_login(shared_from_ours: SharedServer) -> None:
    """Our client and server register; their client logs in to their server on the same keys."""
    record, our_export_key = our_client_registers(shared_from_ours, with_our_server=True)
    client_start = opaque_ke_py.client_login_start(PASSWORD)
    server_start = opaque_ke_py.server_login_start(
        shared_from_ours.setup, record, client_start.get_message(), CREDENTIAL_ID
    )

    client_finish = opaque_ke_py.client_login_finish(
        PASSWORD, client_start.get_state(), server_start.get_message()
    )
    server_finish = opaque_ke_py.server_login_finish(
        server_start.get_state(), client_finish.get_message()
    )

    assert server_finish.get_session_key() == client_finish.get_session_key()
    assert client_finish.get_export_key() == our_export_key


def test_our_client_wrong_password_with_their_server(shared_from_opaque_ke: SharedServer) -> None:
    record, _ = their_client_registers(shared_from_opaque_ke, with_our_server=False)

    with pytest.raises(OpaqueError):
        our_client_logs_in_to_their_server(shared_from_opaque_ke, record, WRONG_PASSWORD)


def test_their_client_wrong_password_with_our_server(shared_from_ours: SharedServer) -> None:
    record, _ = our_client_registers(shared_from_ours, with_our_server=True)

    with pytest.raises(ValueError, match="InvalidLoginError"):
        their_client_logs_in_to_our_server(shared_from_ours, record, WRONG_PASSWORD)

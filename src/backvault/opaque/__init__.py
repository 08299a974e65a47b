"""OPAQUE (RFC 9807) with the ristretto255-SHA512 OPRF of RFC 9497, on libsodium.

The password never leaves the client. The server stores a registration record that
cannot be used to test passwords without the server's OPRF seed. A login gives both sides
a session key and gives the client an ``export_key`` for its own use.
"""

from backvault.opaque.errors import OpaqueError
from backvault.opaque.ksf import Argon2idKsf, IdentityKsf, Ksf, ksf_from_parameters
from backvault.opaque.protocol import (
    ClientLoginState,
    ClientRegistrationState,
    ServerKeys,
    ServerLoginState,
    client_login_finish,
    client_login_start,
    client_registration_finish,
    client_registration_start,
    generate_fake_client_public_key,
    generate_server_keys,
    server_login_finish,
    server_login_start,
    server_registration_finish,
    server_registration_response,
    software_expand,
)

__all__ = [
    "Argon2idKsf",
    "ClientLoginState",
    "ClientRegistrationState",
    "IdentityKsf",
    "Ksf",
    "OpaqueError",
    "ServerKeys",
    "ServerLoginState",
    "client_login_finish",
    "client_login_start",
    "client_registration_finish",
    "client_registration_start",
    "generate_fake_client_public_key",
    "generate_server_keys",
    "ksf_from_parameters",
    "server_login_finish",
    "server_login_start",
    "server_registration_finish",
    "server_registration_response",
    "software_expand",
]

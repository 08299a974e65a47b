"""The 3DH key exchange of OPAQUE on ristretto255 (RFC 9807, section 6.4)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from backvault.opaque import ristretto255
from backvault.opaque.envelope import CleartextCredentials
from backvault.opaque.errors import OpaqueError
from backvault.opaque.kdf import derive_secret, extract, hash_sha512, mac
from backvault.opaque.messages import KE1, KE2, CredentialResponse

PREAMBLE_PREFIX = b"OPAQUEv1-"
MAX_CONTEXT_BYTES = 2**16 - 1


@dataclass(frozen=True, repr=False)
class DerivedKeys:
    """The outputs of DeriveKeys, plus the handshake secret the test vectors list."""

    handshake_secret: bytes
    server_mac_key: bytes  # Km2
    client_mac_key: bytes  # Km3
    session_key: bytes


@dataclass(frozen=True, repr=False)
class ServerAuthResult:
    """AuthResponse fields and the server's state for AuthServerFinalize."""

    server_mac: bytes
    expected_client_mac: bytes
    session_key: bytes


def diffie_hellman(private_key: bytes, public_key: bytes) -> bytes:
    """DiffieHellman(k, B) for ristretto255 (RFC 9807, section 6.4.1.1).

    ``public_key`` is validated before use (RFC 9807, section 10.7). libsodium also
    rejects a shared secret equal to the identity element.
    """
    ristretto255.deserialize_element(public_key)
    return ristretto255.scalar_mult(private_key, public_key)


def preamble(
    context: bytes,
    client_identity: bytes,
    ke1: KE1,
    server_identity: bytes,
    credential_response: CredentialResponse,
    server_nonce: bytes,
    server_public_keyshare: bytes,
) -> bytes:
    """Preamble of RFC 9807, section 6.4.2.1: the transcript both MACs cover."""
    if len(context) > MAX_CONTEXT_BYTES:
        raise ValueError(f"OPAQUE context is {len(context)} bytes; the maximum is 65535")
    return b"".join(
        (
            PREAMBLE_PREFIX,
            len(context).to_bytes(2, "big"),
            context,
            len(client_identity).to_bytes(2, "big"),
            client_identity,
            ke1.serialize(),
            len(server_identity).to_bytes(2, "big"),
            server_identity,
            credential_response.serialize(),
            server_nonce,
            server_public_keyshare,
        )
    )


def derive_keys(ikm: bytes, preamble_bytes: bytes) -> DerivedKeys:
    """DeriveKeys of RFC 9807, section 6.4.2.2."""
    prk = extract(b"", ikm)
    preamble_hash = hash_sha512(preamble_bytes)
    handshake_secret = derive_secret(prk, b"HandshakeSecret", preamble_hash)
    return DerivedKeys(
        handshake_secret=handshake_secret,
        server_mac_key=derive_secret(handshake_secret, b"ServerMAC", b""),
        client_mac_key=derive_secret(handshake_secret, b"ClientMAC", b""),
        session_key=derive_secret(prk, b"SessionKey", preamble_hash),
    )


def compute_client_mac(client_mac_key: bytes, preamble_bytes: bytes, server_mac: bytes) -> bytes:
    return mac(client_mac_key, hash_sha512(preamble_bytes + server_mac))


def auth_server_respond(
    cleartext_credentials: CleartextCredentials,
    server_private_key: bytes,
    client_public_key: bytes,
    ke1: KE1,
    credential_response: CredentialResponse,
    *,
    context: bytes,
    server_nonce: bytes,
    server_keyshare: tuple[bytes, bytes],
) -> ServerAuthResult:
    """AuthServerRespond of RFC 9807, section 6.4.4, with nonce and ephemeral key pair given."""
    server_private_keyshare, server_public_keyshare = server_keyshare
    transcript = preamble(
        context,
        cleartext_credentials.client_identity,
        ke1,
        cleartext_credentials.server_identity,
        credential_response,
        server_nonce,
        server_public_keyshare,
    )
    dh1 = diffie_hellman(server_private_keyshare, ke1.client_public_keyshare)
    dh2 = diffie_hellman(server_private_key, ke1.client_public_keyshare)
    dh3 = diffie_hellman(server_private_keyshare, client_public_key)
    keys = derive_keys(dh1 + dh2 + dh3, transcript)
    server_mac = mac(keys.server_mac_key, hash_sha512(transcript))
    return ServerAuthResult(
        server_mac=server_mac,
        expected_client_mac=compute_client_mac(keys.client_mac_key, transcript, server_mac),
        session_key=keys.session_key,
    )


def auth_client_finalize(
    cleartext_credentials: CleartextCredentials,
    client_private_key: bytes,
    client_secret: bytes,
    ke1: KE1,
    ke2: KE2,
    *,
    context: bytes,
) -> tuple[bytes, bytes]:
    """AuthClientFinalize of RFC 9807, section 6.4.3: return (client MAC, session key).

    Raises OpaqueError (ServerAuthenticationError in the RFC) if the server MAC fails.
    """
    dh1 = diffie_hellman(client_secret, ke2.server_public_keyshare)
    dh2 = diffie_hellman(client_secret, cleartext_credentials.server_public_key)
    dh3 = diffie_hellman(client_private_key, ke2.server_public_keyshare)
    transcript = preamble(
        context,
        cleartext_credentials.client_identity,
        ke1,
        cleartext_credentials.server_identity,
        ke2.credential_response,
        ke2.server_nonce,
        ke2.server_public_keyshare,
    )
    keys = derive_keys(dh1 + dh2 + dh3, transcript)
    expected_server_mac = mac(keys.server_mac_key, hash_sha512(transcript))
    if not hmac.compare_digest(ke2.server_mac, expected_server_mac):
        raise OpaqueError()
    client_mac = compute_client_mac(keys.client_mac_key, transcript, expected_server_mac)
    return client_mac, keys.session_key

"""Client credentials and the envelope (RFC 9807, section 4).

The envelope contains no ciphertext. The client key pair is derived again from the randomized
password and the envelope nonce, and the envelope's MAC binds it to the server public key
and both identities.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from backvault.opaque import oprf
from backvault.opaque.errors import OpaqueError
from backvault.opaque.kdf import NH, expand, extract, mac
from backvault.opaque.ksf import Ksf
from backvault.opaque.messages import NN, NSEED

DERIVE_DIFFIE_HELLMAN_KEY_PAIR_INFO = b"OPAQUE-DeriveDiffieHellmanKeyPair"
MAX_IDENTITY_BYTES = 2**16 - 1


@dataclass(frozen=True)
class CleartextCredentials:
    """CleartextCredentials of RFC 9807, section 4, with absent identities already defaulted."""

    server_public_key: bytes
    server_identity: bytes
    client_identity: bytes

    def serialize(self) -> bytes:
        return (
            self.server_public_key
            + len(self.server_identity).to_bytes(2, "big")
            + self.server_identity
            + len(self.client_identity).to_bytes(2, "big")
            + self.client_identity
        )


@dataclass(frozen=True, repr=False)
class EnvelopeKeys:
    """The keys Store and Recover derive from the randomized password and the envelope nonce."""

    auth_key: bytes
    export_key: bytes
    private_key_seed: bytes


@dataclass(frozen=True, repr=False)
class StoredEnvelope:
    """The outputs of Store (RFC 9807, section 4.1.2)."""

    envelope: bytes
    client_public_key: bytes
    masking_key: bytes
    export_key: bytes


@dataclass(frozen=True, repr=False)
class RecoveredEnvelope:
    """The outputs of Recover (RFC 9807, section 4.1.3)."""

    client_private_key: bytes
    cleartext_credentials: CleartextCredentials
    export_key: bytes


def create_cleartext_credentials(
    server_public_key: bytes,
    client_public_key: bytes,
    server_identity: bytes | None,
    client_identity: bytes | None,
) -> CleartextCredentials:
    """CreateCleartextCredentials of RFC 9807, section 4: an absent identity is the public key."""
    if server_identity is None:
        server_identity = server_public_key
    if client_identity is None:
        client_identity = client_public_key
    for identity in (server_identity, client_identity):
        if not 1 <= len(identity) <= MAX_IDENTITY_BYTES:
            raise ValueError(f"an identity must be 1 to 65535 bytes, not {len(identity)}")
    return CleartextCredentials(server_public_key, server_identity, client_identity)


def derive_diffie_hellman_key_pair(seed: bytes) -> tuple[bytes, bytes]:
    """DeriveDiffieHellmanKeyPair for ristretto255 (RFC 9807, section 6.4.1.1)."""
    return oprf.derive_key_pair(seed, DERIVE_DIFFIE_HELLMAN_KEY_PAIR_INFO)


def derive_randomized_password(oprf_output: bytes, ksf: Ksf) -> bytes:
    """Stretch the OPRF output and extract the randomized password (RFC 9807, section 5.2.3)."""
    stretched_oprf_output = ksf.stretch(oprf_output)
    return extract(b"", oprf_output + stretched_oprf_output)


def derive_masking_key(randomized_password: bytes) -> bytes:
    return expand(randomized_password, b"MaskingKey", NH)


def derive_envelope_keys(randomized_password: bytes, envelope_nonce: bytes) -> EnvelopeKeys:
    """Derive auth_key, export_key and the private key seed, as Store and Recover both do."""
    return EnvelopeKeys(
        auth_key=expand(randomized_password, envelope_nonce + b"AuthKey", NH),
        export_key=expand(randomized_password, envelope_nonce + b"ExportKey", NH),
        private_key_seed=expand(randomized_password, envelope_nonce + b"PrivateKey", NSEED),
    )


def store(
    randomized_password: bytes,
    server_public_key: bytes,
    server_identity: bytes | None,
    client_identity: bytes | None,
    envelope_nonce: bytes,
) -> StoredEnvelope:
    """Store of RFC 9807, section 4.1.2, with the envelope nonce given by the caller."""
    masking_key = derive_masking_key(randomized_password)
    keys = derive_envelope_keys(randomized_password, envelope_nonce)
    _, client_public_key = derive_diffie_hellman_key_pair(keys.private_key_seed)
    cleartext_credentials = create_cleartext_credentials(
        server_public_key, client_public_key, server_identity, client_identity
    )
    auth_tag = mac(keys.auth_key, envelope_nonce + cleartext_credentials.serialize())
    return StoredEnvelope(
        envelope=envelope_nonce + auth_tag,
        client_public_key=client_public_key,
        masking_key=masking_key,
        export_key=keys.export_key,
    )


def recover(
    randomized_password: bytes,
    server_public_key: bytes,
    envelope: bytes,
    server_identity: bytes | None,
    client_identity: bytes | None,
) -> RecoveredEnvelope:
    """Recover of RFC 9807, section 4.1.3; raises OpaqueError if the envelope MAC fails."""
    envelope_nonce, auth_tag = envelope[:NN], envelope[NN:]
    keys = derive_envelope_keys(randomized_password, envelope_nonce)
    client_private_key, client_public_key = derive_diffie_hellman_key_pair(keys.private_key_seed)
    cleartext_credentials = create_cleartext_credentials(
        server_public_key, client_public_key, server_identity, client_identity
    )
    expected_tag = mac(keys.auth_key, envelope_nonce + cleartext_credentials.serialize())
    if not hmac.compare_digest(auth_tag, expected_tag):
        raise OpaqueError()
    return RecoveredEnvelope(client_private_key, cleartext_credentials, keys.export_key)

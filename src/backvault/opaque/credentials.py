"""OPRF key derivation and credential retrieval (RFC 9807, sections 5.2.2 and 6.3.2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backvault.opaque import oprf, ristretto255
from backvault.opaque.envelope import (
    RecoveredEnvelope,
    derive_masking_key,
    derive_randomized_password,
    recover,
)
from backvault.opaque.kdf import expand
from backvault.opaque.ksf import Ksf
from backvault.opaque.messages import (
    MASKED_RESPONSE_BYTES,
    NPK,
    CredentialResponse,
    RegistrationRecord,
)

OPRF_KEY_INFO = b"OPAQUE-DeriveKeyPair"
OPRF_SEED_INFO_SUFFIX = b"OprfKey"
NOK = ristretto255.SCALAR_BYTES
CREDENTIAL_RESPONSE_PAD_LABEL = b"CredentialResponsePad"


@dataclass(frozen=True, repr=False)
class RecoveredCredentials:
    """The outputs of RecoverCredentials, plus the intermediate values the test vectors list."""

    randomized_password: bytes
    masking_key: bytes
    envelope: RecoveredEnvelope


def derive_oprf_key(
    oprf_seed_expand: Callable[[bytes], bytes], credential_identifier: bytes
) -> bytes:
    """Derive the per-credential OPRF key (RFC 9807, sections 5.2.2 and 6.3.2.2).

    ``oprf_seed_expand(info)`` must return Expand(oprf_seed, info, Nok); the key is then
    DeriveKeyPair(seed, "OPAQUE-DeriveKeyPair") without its public half.
    """
    seed = oprf_seed_expand(credential_identifier + OPRF_SEED_INFO_SUFFIX)
    if len(seed) != NOK:
        raise ValueError(f"oprf_seed_expand returned {len(seed)} bytes, expected {NOK}")
    return oprf.derive_private_key(seed, OPRF_KEY_INFO)


def create_credential_response(
    blinded_message: bytes,
    server_public_key: bytes,
    record: RegistrationRecord,
    oprf_key: bytes,
    masking_nonce: bytes,
) -> CredentialResponse:
    """CreateCredentialResponse of RFC 9807, section 6.3.2.2, with the OPRF key and nonce given."""
    evaluated_message = oprf.blind_evaluate(oprf_key, blinded_message)
    credential_response_pad = _credential_response_pad(record.masking_key, masking_nonce)
    masked_response = _xor(credential_response_pad, server_public_key + record.envelope)
    return CredentialResponse(evaluated_message, masking_nonce, masked_response)


def recover_credentials(
    password: bytes,
    blind: bytes,
    response: CredentialResponse,
    ksf: Ksf,
    server_identity: bytes | None,
    client_identity: bytes | None,
) -> RecoveredCredentials:
    """RecoverCredentials of RFC 9807, section 6.3.2.3.

    Raises OpaqueError for an invalid evaluated element, an unmasked server public key that
    is not a valid element, or an envelope whose MAC fails (the usual wrong-password case).
    """
    oprf_output = oprf.finalize(password, blind, response.evaluated_message)
    randomized_password = derive_randomized_password(oprf_output, ksf)
    masking_key = derive_masking_key(randomized_password)
    credential_response_pad = _credential_response_pad(masking_key, response.masking_nonce)
    unmasked = _xor(credential_response_pad, response.masked_response)
    server_public_key, envelope = unmasked[:NPK], unmasked[NPK:]
    ristretto255.deserialize_element(server_public_key)
    recovered = recover(
        randomized_password, server_public_key, envelope, server_identity, client_identity
    )
    return RecoveredCredentials(randomized_password, masking_key, recovered)


def _credential_response_pad(masking_key: bytes, masking_nonce: bytes) -> bytes:
    return expand(masking_key, masking_nonce + CREDENTIAL_RESPONSE_PAD_LABEL, MASKED_RESPONSE_BYTES)


def _xor(left: bytes, right: bytes) -> bytes:
    if len(left) != len(right):
        raise ValueError("xor needs two byte strings of the same length")
    combined = int.from_bytes(left, "big") ^ int.from_bytes(right, "big")
    return combined.to_bytes(len(left), "big")

"""The OPRF of RFC 9497 in modeOPRF (0x00) with the ristretto255-SHA512 suite.

Only the base mode is here: OPAQUE (RFC 9807, section 2.1) uses neither the verifiable
nor the partially oblivious mode. Scalars and elements are their 32-byte encodings.
"""

from __future__ import annotations

from backvault.opaque import ristretto255
from backvault.opaque.errors import OpaqueError
from backvault.opaque.kdf import hash_sha512

MODE_OPRF = 0x00
SUITE_IDENTIFIER = b"ristretto255-SHA512"
MAX_DERIVE_KEY_PAIR_COUNTER = 255
MAX_INPUT_BYTES = 2**16 - 1  # inputs carry a two-byte length prefix (RFC 9497, section 5.1)


def create_context_string(mode: int, identifier: bytes) -> bytes:
    """CreateContextString of RFC 9497, section 3.1."""
    return b"OPRFV1-" + mode.to_bytes(1, "big") + b"-" + identifier


CONTEXT_STRING = create_context_string(MODE_OPRF, SUITE_IDENTIFIER)
HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT_STRING
HASH_TO_SCALAR_DST = b"HashToScalar-" + CONTEXT_STRING
DERIVE_KEY_PAIR_DST = b"DeriveKeyPair" + CONTEXT_STRING


def derive_private_key(seed: bytes, info: bytes) -> bytes:
    """Return the private key of DeriveKeyPair (RFC 9497, section 3.2.1) without the public key.

    The server derives a per-credential OPRF key on every request and never needs its
    public half, so this skips the base-point multiplication.
    """
    if len(seed) != ristretto255.SCALAR_BYTES:
        raise ValueError(f"DeriveKeyPair seed is {len(seed)} bytes, expected 32")
    derive_input = seed + len(info).to_bytes(2, "big") + info
    for counter in range(MAX_DERIVE_KEY_PAIR_COUNTER + 1):
        private_key = ristretto255.hash_to_scalar(
            derive_input + counter.to_bytes(1, "big"), DERIVE_KEY_PAIR_DST
        )
        if private_key != ristretto255.ZERO_SCALAR:
            return private_key
    # DeriveKeyPairError: 256 zero scalars in a row has probability below 2**-64000.
    raise OpaqueError()


def derive_key_pair(seed: bytes, info: bytes) -> tuple[bytes, bytes]:
    """DeriveKeyPair of RFC 9497, section 3.2.1: return (private key, public key)."""
    private_key = derive_private_key(seed, info)
    return private_key, ristretto255.scalar_mult_base(private_key)


def blind(password: bytes, blind_scalar: bytes) -> bytes:
    """Blind of RFC 9497, section 3.3.1, with the blind given: return the blinded element.

    Callers draw ``blind_scalar`` with :func:`ristretto255.random_scalar`; the test vectors
    pass a fixed one. Raises OpaqueError (InvalidInputError in the RFC) if the input maps
    to the identity element, which has negligible probability.
    """
    _check_input_length(password)
    input_element = ristretto255.hash_to_group(password, HASH_TO_GROUP_DST)
    if input_element == ristretto255.IDENTITY:
        raise OpaqueError()
    return ristretto255.scalar_mult(blind_scalar, input_element)


def blind_evaluate(private_key: bytes, blinded_element: bytes) -> bytes:
    """BlindEvaluate of RFC 9497, section 3.3.1: return ``private_key * blinded_element``.

    ``blinded_element`` comes from the client, so it is validated first.
    """
    ristretto255.deserialize_element(blinded_element)
    return ristretto255.scalar_mult(private_key, blinded_element)


def finalize(password: bytes, blind_scalar: bytes, evaluated_element: bytes) -> bytes:
    """Finalize of RFC 9497, section 3.3.1: unblind the evaluation and hash it with the input.

    ``evaluated_element`` comes from the server, so it is validated first.
    """
    _check_input_length(password)
    ristretto255.deserialize_element(evaluated_element)
    unblinded_element = ristretto255.scalar_mult(
        ristretto255.scalar_inverse(blind_scalar), evaluated_element
    )
    return _hash_output(password, unblinded_element)


def evaluate(private_key: bytes, password: bytes) -> bytes:
    """Evaluate of RFC 9497, section 3.3.1: the PRF output computed with the key and the input."""
    _check_input_length(password)
    input_element = ristretto255.hash_to_group(password, HASH_TO_GROUP_DST)
    if input_element == ristretto255.IDENTITY:
        raise OpaqueError()
    return _hash_output(password, ristretto255.scalar_mult(private_key, input_element))


def _check_input_length(password: bytes) -> None:
    if len(password) > MAX_INPUT_BYTES:
        raise ValueError(f"OPRF input is {len(password)} bytes; the maximum is 65535")


def _hash_output(password: bytes, element: bytes) -> bytes:
    hash_input = (
        len(password).to_bytes(2, "big")
        + password
        + len(element).to_bytes(2, "big")
        + element
        + b"Finalize"
    )
    return hash_sha512(hash_input)

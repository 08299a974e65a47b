"""The ristretto255 prime-order group as RFC 9497 (section 4.1) uses it, on libsodium.

Elements and scalars are passed around in their canonical 32-byte encodings. libsodium
(through pysodium) does the group arithmetic: ``crypto_scalarmult_ristretto255`` decodes
its input point with the Decode function of RFC 9496 (section 4.3.1), which rejects
non-canonical encodings, and fails when the product is the identity element.

libsodium 1.0.18 (Debian 12) accepts an encoding with the top bit of its last byte set and
decodes it as if the bit were clear, so :func:`deserialize_element` rejects that bit
itself; RFC 9496 requires a canonical encoding. Every failure on input from a peer raises
:class:`OpaqueError`.
"""

from __future__ import annotations

import hmac
import secrets

import pysodium  # type: ignore[import-untyped]

from backvault.opaque.errors import OpaqueError
from backvault.opaque.hash_to_curve import expand_message_xmd_sha512

ELEMENT_BYTES = 32  # Ne of RFC 9497, Noe and Npk of RFC 9807
SCALAR_BYTES = 32  # Ns of RFC 9497, Nok and Nsk of RFC 9807
UNIFORM_BYTES = 64  # input of the one-way map and of the wide scalar reduction
IDENTITY = bytes(ELEMENT_BYTES)  # the identity element encodes as all zeros (RFC 9496, 4.3.2)
ZERO_SCALAR = bytes(SCALAR_BYTES)


def deserialize_element(data: bytes) -> bytes:
    """Check that ``data`` is a canonical encoding of an element other than the identity.

    This is DeserializeElement of RFC 9497, section 4.1: Decode of RFC 9496 plus the
    identity check. Returns ``data`` unchanged.
    """
    if len(data) != ELEMENT_BYTES:
        raise OpaqueError()
    if data[-1] & 0x80:
        raise OpaqueError()
    if hmac.compare_digest(data, IDENTITY):
        raise OpaqueError()
    if not pysodium.crypto_core_ristretto255_is_valid_point(data):
        raise OpaqueError()
    return data


def deserialize_nonzero_scalar(data: bytes) -> bytes:
    """Check that ``data`` is a canonical little-endian scalar other than zero.

    A scalar is canonical when it is below the group order (RFC 9497, section 4.1). The
    check reduces ``data`` modulo the order with libsodium and compares the result with
    ``data`` in constant time, so that no Python integer is built from a secret scalar.
    """
    if len(data) != SCALAR_BYTES:
        raise OpaqueError()
    reduced = _reduce_wide(data + ZERO_SCALAR)
    if not hmac.compare_digest(reduced, data):
        raise OpaqueError()
    if hmac.compare_digest(data, ZERO_SCALAR):
        raise OpaqueError()
    return data


def random_scalar() -> bytes:
    """Return a uniformly random non-zero scalar (RandomScalar, RFC 9497 section 4.7.2).

    Reduces 64 random bytes modulo the group order, which leaves a bias below 2**-250.
    """
    while True:
        scalar = _reduce_wide(secrets.token_bytes(UNIFORM_BYTES))
        if not hmac.compare_digest(scalar, ZERO_SCALAR):
            return scalar


def random_element() -> bytes:
    """Return a random element with no known discrete logarithm.

    It maps 64 random bytes with the one-way map of RFC 9496, section 4.3.4, so no
    private key is ever computed for it.
    """
    return _element_from_uniform_bytes(secrets.token_bytes(UNIFORM_BYTES))


def scalar_inverse(scalar: bytes) -> bytes:
    """Return the inverse of a non-zero scalar modulo the group order."""
    try:
        inverse: bytes = pysodium.crypto_core_ristretto255_scalar_invert(scalar)
    except ValueError:
        raise OpaqueError() from None
    return inverse


def scalar_mult(scalar: bytes, element: bytes) -> bytes:
    """Return ``scalar * element``; an invalid element or an identity result raises OpaqueError."""
    try:
        product: bytes = pysodium.crypto_scalarmult_ristretto255(scalar, element)
    except ValueError:
        raise OpaqueError() from None
    return product


def scalar_mult_base(scalar: bytes) -> bytes:
    """Return ``scalar * G`` (ScalarMultGen), raising OpaqueError for a zero scalar."""
    try:
        product: bytes = pysodium.crypto_scalarmult_ristretto255_base(scalar)
    except ValueError:
        raise OpaqueError() from None
    return product


def hash_to_group(message: bytes, dst: bytes) -> bytes:
    """Map ``message`` to an element with hash_to_ristretto255 (RFC 9380, appendix B)."""
    uniform_bytes = expand_message_xmd_sha512(message, dst, UNIFORM_BYTES)
    return _element_from_uniform_bytes(uniform_bytes)


def hash_to_scalar(message: bytes, dst: bytes) -> bytes:
    """Map ``message`` to a scalar (HashToScalar, RFC 9497 section 4.1).

    The 64 bytes of expand_message_xmd are read as a little-endian integer and reduced
    modulo the group order.
    """
    uniform_bytes = expand_message_xmd_sha512(message, dst, UNIFORM_BYTES)
    return _reduce_wide(uniform_bytes)


def _element_from_uniform_bytes(uniform_bytes: bytes) -> bytes:
    element: bytes = pysodium.crypto_core_ristretto255_from_hash(uniform_bytes)
    return element


def _reduce_wide(data: bytes) -> bytes:
    reduced: bytes = pysodium.crypto_core_ristretto255_scalar_reduce(data)
    return reduced

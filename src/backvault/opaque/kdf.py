"""Hash, MAC and KDF of the ristretto255-SHA512 configuration (RFC 9807, sections 2.2 and 2.3).

Hash is SHA-512, MAC is HMAC-SHA512 and the KDF is HKDF-SHA512 (RFC 5869). HKDF is
written out here on the standard library's one-shot ``hmac.digest``, which calls OpenSSL,
because the server runs it about ten times per login.
"""

from __future__ import annotations

import hashlib
import hmac

NH = 64  # Hash output size
NM = 64  # MAC output size
NX = 64  # Extract output size
MAX_EXPAND_BYTES = 255 * NH  # RFC 5869, section 2.3


def hash_sha512(message: bytes) -> bytes:
    """Hash(msg) of RFC 9807."""
    return hashlib.sha512(message).digest()


def mac(key: bytes, message: bytes) -> bytes:
    """MAC(key, msg) of RFC 9807: HMAC-SHA512."""
    return hmac.digest(key, message, "sha512")


def extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869, section 2.2).

    An empty salt gives the same key as the all-zero salt of HashLen bytes, because HMAC
    pads a short key with zeros.
    """
    return hmac.digest(salt, ikm, "sha512")


def expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869, section 2.3) of ``length`` bytes."""
    if not 0 <= length <= MAX_EXPAND_BYTES:
        raise ValueError(f"HKDF-Expand cannot produce {length} bytes; the maximum is 16320")
    blocks: list[bytes] = []
    previous = b""
    counter = 1
    while len(blocks) * NH < length:
        previous = hmac.digest(prk, previous + info + counter.to_bytes(1, "big"), "sha512")
        blocks.append(previous)
        counter += 1
    return b"".join(blocks)[:length]


def expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """Expand-Label of RFC 9807, section 6.4.2.1, on the CustomLabel encoding.

    CustomLabel is ``uint16 length || opaque label<8..255> || opaque context<0..255>``,
    where the label is "OPAQUE-" followed by ``label`` and each vector carries a one-byte
    length prefix.
    """
    full_label = b"OPAQUE-" + label
    custom_label = (
        length.to_bytes(2, "big")
        + len(full_label).to_bytes(1, "big")
        + full_label
        + len(context).to_bytes(1, "big")
        + context
    )
    return expand(secret, custom_label, length)


def derive_secret(secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    """Derive-Secret of RFC 9807, section 6.4.2.1: Expand-Label to Nx bytes."""
    return expand_label(secret, label, transcript_hash, NX)

"""AES-256-GCM sealing with nonces that cannot repeat by construction.

Two schemes cover every encrypted byte of a repository:

- Blobs in a pack. Each pack has a fresh random 32-byte salt and its own key,
  ``HKDF(data key, salt, "backvault v1 pack key")``. A blob uses its byte offset in the
  pack as nonce (96-bit big-endian). Blobs never overlap, so no two share an offset, and
  the pack header uses the all-ones nonce, which no offset below 2**96 - 1 can reach. A
  (key, nonce) pair is therefore never used twice unless two packs draw the same 256-bit
  salt.
- Whole files (index, snapshot, lock). Each file has a fresh random 32-byte salt and its
  own key ``HKDF(metadata key, salt, "backvault v1 file key")``, used for exactly one
  encryption with the all-zero nonce.

Every failure to open, whatever its cause, raises :class:`backvault.errors.IntegrityError`.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backvault.crypto.keys import hkdf_sha256
from backvault.errors import IntegrityError

SALT_SIZE = 32  # bytes
NONCE_SIZE = 12  # bytes, the GCM standard nonce (NIST SP 800-38D, section 5.2.1.1)
TAG_SIZE = 16  # bytes
HEADER_NONCE = b"\xff" * NONCE_SIZE
FILE_NONCE = b"\x00" * NONCE_SIZE

LABEL_PACK_KEY = b"backvault v1 pack key"
LABEL_FILE_KEY = b"backvault v1 file key"
LABEL_WRAP_KEY = b"backvault v1 key slot wrap"


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_SIZE)


def counter_nonce(counter: int) -> bytes:
    """Return the nonce for the blob at byte offset ``counter`` in a pack."""
    if not 0 <= counter < 2**96 - 1:
        raise ValueError(f"blob counter {counter} is outside the nonce space of a pack")
    return counter.to_bytes(NONCE_SIZE, "big")


class PackCipher:
    """The AES-256-GCM key of one pack, derived from the data key and the pack's salt."""

    __slots__ = ("_aead",)

    def __init__(self, data_key: bytes, salt: bytes) -> None:
        self._aead = AESGCM(hkdf_sha256(data_key, salt=salt, info=LABEL_PACK_KEY))

    def seal(self, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, associated_data)

    def open(
        self, nonce: bytes, ciphertext: bytes, associated_data: bytes, *, subject: str
    ) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise IntegrityError(subject) from None


def seal_file(metadata_key: bytes, salt: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt the body of a whole file under its own one-time key."""
    key = hkdf_sha256(metadata_key, salt=salt, info=LABEL_FILE_KEY)
    return AESGCM(key).encrypt(FILE_NONCE, plaintext, associated_data)


def open_file(
    metadata_key: bytes, salt: bytes, ciphertext: bytes, associated_data: bytes, *, subject: str
) -> bytes:
    key = hkdf_sha256(metadata_key, salt=salt, info=LABEL_FILE_KEY)
    try:
        return AESGCM(key).decrypt(FILE_NONCE, ciphertext, associated_data)
    except InvalidTag:
        raise IntegrityError(subject) from None


def wrap_key(kek: bytes, key: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
    """Encrypt ``key`` under a key-encryption key; return ``(nonce, wrapped)``.

    The nonce is random: a KEK wraps a handful of keys in its life, far below the 2**32
    messages that NIST SP 800-38D allows for random 96-bit nonces under one key.
    """
    nonce = secrets.token_bytes(NONCE_SIZE)
    aead = AESGCM(hkdf_sha256(kek, salt=b"", info=LABEL_WRAP_KEY))
    return nonce, aead.encrypt(nonce, key, associated_data)


def unwrap_key(
    kek: bytes, nonce: bytes, wrapped: bytes, associated_data: bytes, *, subject: str
) -> bytes:
    aead = AESGCM(hkdf_sha256(kek, salt=b"", info=LABEL_WRAP_KEY))
    try:
        return aead.decrypt(nonce, wrapped, associated_data)
    except (InvalidTag, ValueError):
        raise IntegrityError(subject) from None

"""The master key and the subkeys derived from it.

The master key (MK) is 32 random bytes made when a repository is created. Nothing is ever
encrypted with MK itself: every use goes through a subkey derived with HKDF-SHA256
(RFC 5869), with the repository id as salt and a versioned label as info. A new format
version that needs different keys gets new labels, so keys of two versions never collide.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASTER_KEY_SIZE = 32  # bytes
REPOSITORY_ID_SIZE = 16  # bytes

# HKDF info labels, version 1. Changing one changes every key derived from it.
LABEL_DATA = b"backvault v1 data key"
LABEL_CHUNK_ID = b"backvault v1 chunk id key"
LABEL_CHUNKER = b"backvault v1 chunker seed"
LABEL_METADATA = b"backvault v1 metadata key"
LABEL_CONFIG_MAC = b"backvault v1 config mac key"
LABEL_RECOVERY_ESCROW = b"backvault v1 recovery escrow key"


def hkdf_sha256(key: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """Derive ``length`` bytes from ``key`` with HKDF-SHA256 (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


@dataclass(frozen=True, repr=False)
class Subkeys:
    """The keys a repository uses, all derived from the master key.

    - ``data``: input key for the per-pack AES-256-GCM keys of blobs.
    - ``chunk_id``: key of the keyed BLAKE3 that names chunks, so that the storage
      provider cannot confirm which known files the repository contains by hashing them.
    - ``chunker_seed``: seed with 62 random bits (bit 0 is always set) that alters the
      FastCDC gear table, so chunk boundaries depend on the key.
    - ``metadata``: input key for the per-file keys of index, snapshot and lock files.
    - ``config_mac``: HMAC-SHA256 key that authenticates the plaintext config file.
    - ``recovery_escrow``: key that encrypts a copy of the recovery key in the repository,
      so that ``key show`` can display it to someone who unlocked another slot.
    """

    data: bytes
    chunk_id: bytes
    chunker_seed: int
    metadata: bytes
    config_mac: bytes
    recovery_escrow: bytes

    def __repr__(self) -> str:
        return "Subkeys(<hidden>)"


class MasterKey:
    """The 32-byte master key of one repository."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_SIZE:
            raise ValueError(f"a master key has {MASTER_KEY_SIZE} bytes, not {len(key)}")
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(MASTER_KEY_SIZE))

    @property
    def raw(self) -> bytes:
        """The key bytes; only key slots may read them, to wrap the key."""
        return self._key

    def derive_subkeys(self, repository_id: bytes) -> Subkeys:
        seed_bytes = hkdf_sha256(self._key, salt=repository_id, info=LABEL_CHUNKER, length=8)

        # pyfastcdc XORs the seed, shifted left by one, into a 64-bit table, and treats
        # 0 as "no seed": keep 63 bits and force the value to be non-zero.
        chunker_seed = (int.from_bytes(seed_bytes, "big") & (2**63 - 1)) | 1

        return Subkeys(
            data=hkdf_sha256(self._key, salt=repository_id, info=LABEL_DATA),
            chunk_id=hkdf_sha256(self._key, salt=repository_id, info=LABEL_CHUNK_ID),
            chunker_seed=chunker_seed,
            metadata=hkdf_sha256(self._key, salt=repository_id, info=LABEL_METADATA),
            config_mac=hkdf_sha256(self._key, salt=repository_id, info=LABEL_CONFIG_MAC),
            recovery_escrow=hkdf_sha256(
                self._key, salt=repository_id, info=LABEL_RECOVERY_ESCROW
            ),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    # Unhashable, so no hash of the key bytes is ever computed or compared in variable time.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "MasterKey(<hidden>)"

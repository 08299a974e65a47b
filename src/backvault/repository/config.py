"""The repository config: the one plaintext file, authenticated once a key is unlocked.

Stored layout::

    offset  size  field
    0       8     header: magic "BVCF", version 1, 3 reserved bytes
    8       n     msgpack map: repository_id (16 bytes), created (int, ns since the epoch),
                  chunker_min, chunker_avg, chunker_max (int, bytes), pack_size (int, bytes),
                  compression_level (int, zstd level)
    8+n     32    HMAC-SHA256 of bytes 0 to 8+n under the config MAC subkey

The config must be readable before any key is unlocked, because the repository id is the
salt of every subkey. Its MAC is verified right after the master key is unlocked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import msgpack

from backvault.crypto.keys import REPOSITORY_ID_SIZE
from backvault.errors import IntegrityError
from backvault.repository.format import HEADER_SIZE, MAGIC_CONFIG, check_header, make_header

MAC_SIZE = 32  # bytes
SUBJECT = "repository config"

# Chunk size bounds as restic uses them (512 KiB minimum, 8 MiB maximum), with a target
# that pyfastcdc turns into chunks of about 770 KiB on average on random data: large
# enough that the index of a terabyte stays small, small enough that a changed database
# page costs under a megabyte of new data.
DEFAULT_CHUNKER_MIN = 512 * 1024  # bytes
DEFAULT_CHUNKER_AVG = 1024 * 1024  # bytes
DEFAULT_CHUNKER_MAX = 8 * 1024 * 1024  # bytes
DEFAULT_PACK_SIZE = 16 * 1024 * 1024  # bytes
DEFAULT_COMPRESSION_LEVEL = 3


@dataclass(frozen=True)
class Config:
    repository_id: bytes
    created_ns: int
    chunker_min: int = DEFAULT_CHUNKER_MIN
    chunker_avg: int = DEFAULT_CHUNKER_AVG
    chunker_max: int = DEFAULT_CHUNKER_MAX
    pack_size: int = DEFAULT_PACK_SIZE
    compression_level: int = DEFAULT_COMPRESSION_LEVEL

    @classmethod
    def new(cls) -> Config:
        return cls(repository_id=secrets.token_bytes(REPOSITORY_ID_SIZE), created_ns=time.time_ns())


def encode_config(config: Config, mac_key: bytes) -> bytes:
    body = {
        "repository_id": config.repository_id,
        "created": config.created_ns,
        "chunker_min": config.chunker_min,
        "chunker_avg": config.chunker_avg,
        "chunker_max": config.chunker_max,
        "pack_size": config.pack_size,
        "compression_level": config.compression_level,
    }
    signed = make_header(MAGIC_CONFIG) + msgpack.packb(body, use_bin_type=True)
    return signed + hmac.new(mac_key, signed, hashlib.sha256).digest()


def decode_config(data: bytes) -> Config:
    """Parse the config without verifying its MAC; call :func:`verify_config_mac` after."""
    check_header(data, MAGIC_CONFIG, subject=SUBJECT)
    if len(data) < HEADER_SIZE + MAC_SIZE:
        raise IntegrityError(SUBJECT)

    try:
        body = msgpack.unpackb(data[HEADER_SIZE:-MAC_SIZE], raw=False)
        config = Config(
            repository_id=bytes(body["repository_id"]),
            created_ns=int(body["created"]),
            chunker_min=int(body["chunker_min"]),
            chunker_avg=int(body["chunker_avg"]),
            chunker_max=int(body["chunker_max"]),
            pack_size=int(body["pack_size"]),
            compression_level=int(body["compression_level"]),
        )
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        raise IntegrityError(SUBJECT) from None

    if len(config.repository_id) != REPOSITORY_ID_SIZE:
        raise IntegrityError(SUBJECT)
    return config


def verify_config_mac(data: bytes, mac_key: bytes) -> None:
    expected = hmac.new(mac_key, data[:-MAC_SIZE], hashlib.sha256).digest()
    if not hmac.compare_digest(expected, data[-MAC_SIZE:]):
        raise IntegrityError(SUBJECT)

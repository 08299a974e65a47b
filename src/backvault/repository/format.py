"""Magic numbers, versions and the common header of every stored structure.

Every stored file starts with an 8-byte header::

    offset  size  field
    0       4     magic, ASCII, names the structure (see MAGIC_*)
    4       1     format version, currently 1
    5       3     reserved, zero

A reader rejects an unknown magic or a version newer than its own with
:class:`UnsupportedFormatError`, before it tries any decryption.

Encrypted whole files (index, snapshot, lock) continue with a 32-byte salt and the
AES-256-GCM ciphertext of the zstd-compressed body. The 40 bytes of header and salt are
the associated data, so a file cannot be passed off as another kind of file.
"""

from __future__ import annotations

import struct

import blake3
import zstandard

from backvault.crypto import aead
from backvault.errors import IntegrityError, UnsupportedFormatError

FORMAT_VERSION = 1
HEADER = struct.Struct("<4sB3x")
HEADER_SIZE = HEADER.size  # 8 bytes

MAGIC_CONFIG = b"BVCF"
MAGIC_KEY_SLOT = b"BVKS"
MAGIC_PACK = b"BVPK"
MAGIC_INDEX = b"BVIX"
MAGIC_SNAPSHOT = b"BVSN"
MAGIC_LOCK = b"BVLK"
MAGIC_TREE = b"BVTR"

ENCRYPTED_FILE_OVERHEAD = HEADER_SIZE + aead.SALT_SIZE + aead.TAG_SIZE

# Bound on the decompressed body of an encrypted file, so a damaged or hostile file
# cannot make the reader allocate without limit.
MAX_FILE_BODY = 1 << 31  # bytes


def make_header(magic: bytes) -> bytes:
    return HEADER.pack(magic, FORMAT_VERSION)


def check_header(data: bytes, magic: bytes, *, subject: str) -> None:
    """Raise unless ``data`` starts with the header of ``magic`` at a version we read."""
    if len(data) < HEADER_SIZE:
        raise IntegrityError(subject)

    found_magic, version = HEADER.unpack_from(data)
    if found_magic != magic:
        raise UnsupportedFormatError(
            f"{subject}: not a backvault {magic.decode()} structure (magic {found_magic!r})",
            hint="Check that the path points to a backvault repository.",
        )
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{subject}: format version {version} is newer than this backvault "
            f"(reads up to {FORMAT_VERSION})",
            hint="Upgrade backvault to open this repository.",
        )
    if version < 1 or data[5:HEADER_SIZE] != b"\x00\x00\x00":
        # Version 1 defines the reserved bytes as zero; anything else is damage.
        raise IntegrityError(subject)


def object_id(data: bytes | bytearray | memoryview) -> str:
    """Return the storage name of a file: the hex BLAKE3 hash of its bytes.

    The hash is not keyed, so the storage, and ``check`` without the key, can verify that
    a file matches its name.
    """
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


def seal_encrypted_file(magic: bytes, metadata_key: bytes, body: bytes) -> bytes:
    header = make_header(magic)
    salt = aead.new_salt()
    compressed = zstandard.ZstdCompressor(level=3).compress(body)
    return header + salt + aead.seal_file(metadata_key, salt, compressed, header + salt)


def open_encrypted_file(magic: bytes, metadata_key: bytes, data: bytes, *, subject: str) -> bytes:
    check_header(data, magic, subject=subject)
    if len(data) < ENCRYPTED_FILE_OVERHEAD:
        raise IntegrityError(subject)

    prefix = data[: HEADER_SIZE + aead.SALT_SIZE]
    salt = prefix[HEADER_SIZE:]
    compressed = aead.open_file(metadata_key, salt, data[len(prefix) :], prefix, subject=subject)
    try:
        return zstandard.ZstdDecompressor().decompress(compressed, max_output_size=MAX_FILE_BODY)
    except zstandard.ZstdError:
        raise IntegrityError(subject) from None

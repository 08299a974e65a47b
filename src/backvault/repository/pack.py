"""Packs: files that hold many encrypted blobs and an encrypted header at the end.

Stored layout::

    offset      size  field
    0           8     header: magic "BVPK", version 1, 3 reserved bytes
    8           32    salt; the pack key is HKDF(data key, salt, "backvault v1 pack key")
    40          ...   blobs, each AES-256-GCM(pack key, nonce = offset of the blob in the
                      pack as a 96-bit big-endian integer, compressed or raw plaintext,
                      associated data = BLOB_AAD(type, compression, raw length) + blob id)
    end-4-h     h     pack header: AES-256-GCM(pack key, nonce = 12 bytes 0xff,
                      u32 count + count entries, associated data = bytes 0 to 40 + "header")
    end-4       4     h, the length of the encrypted pack header, u32 little-endian

Each header entry is ENTRY: type (u8), compression (u8), blob id (32 bytes),
offset (u64), stored length (u32, ciphertext with tag), raw length (u32), little-endian.
The header at the end lets a reader recover every blob from the packs alone,
and the offset nonce cannot repeat inside a pack because blobs do not overlap.

A pack is named by the hex BLAKE3 hash of its bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from backvault.crypto import aead
from backvault.crypto.aead import PackCipher
from backvault.errors import IntegrityError
from backvault.repository.format import HEADER_SIZE, MAGIC_PACK, check_header, make_header

PREFIX_SIZE = HEADER_SIZE + aead.SALT_SIZE  # 40 bytes
ENTRY = struct.Struct("<BB32sQII")  # 50 bytes
COUNT = struct.Struct("<I")
TRAILER = struct.Struct("<I")
BLOB_AAD = struct.Struct("<4sBBI")
HEADER_LABEL = b"header"
ID_SIZE = 32  # bytes

# Upper bound on the encrypted header we accept, so a damaged trailer cannot make a reader
# fetch gigabytes: 1 Mi entries of 50 bytes.
MAX_HEADER_SIZE = (1 << 20) * ENTRY.size + COUNT.size + aead.TAG_SIZE


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


class Compression(IntEnum):
    NONE = 0
    ZSTD = 1


@dataclass(frozen=True, slots=True)
class PackEntry:
    blob_type: BlobType
    compression: Compression
    blob_id: bytes
    offset: int
    length: int
    raw_length: int

    def pack(self) -> bytes:
        return ENTRY.pack(
            self.blob_type,
            self.compression,
            self.blob_id,
            self.offset,
            self.length,
            self.raw_length,
        )


def unpack_entries(data: bytes | memoryview, *, subject: str) -> list[PackEntry]:
    if len(data) % ENTRY.size:
        raise IntegrityError(subject)
    try:
        return [
            PackEntry(BlobType(t), Compression(c), i, o, n, r)
            for t, c, i, o, n, r in ENTRY.iter_unpack(data)
        ]
    except ValueError:
        raise IntegrityError(subject) from None


def blob_associated_data(
    entry_type: int, compression: int, raw_length: int, blob_id: bytes
) -> bytes:
    return BLOB_AAD.pack(b"BVBL", entry_type, compression, raw_length) + blob_id


class PackWriter:
    """Collects sealed blobs into one pack, in memory, up to the pack size."""

    def __init__(self, data_key: bytes) -> None:
        self.salt = aead.new_salt()
        self._cipher = PackCipher(data_key, self.salt)
        self._prefix = make_header(MAGIC_PACK) + self.salt
        self._buffer = bytearray(self._prefix)
        self.entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        return len(self._buffer)

    def add(
        self,
        blob_type: BlobType,
        blob_id: bytes,
        payload: bytes | memoryview,
        compression: Compression,
        raw_length: int,
    ) -> PackEntry:
        offset = len(self._buffer)
        associated_data = blob_associated_data(blob_type, compression, raw_length, blob_id)
        sealed = self._cipher.seal(aead.counter_nonce(offset), bytes(payload), associated_data)
        self._buffer += sealed

        entry = PackEntry(blob_type, compression, blob_id, offset, len(sealed), raw_length)
        self.entries.append(entry)
        return entry

    def finish(self) -> bytearray:
        """Seal the header, append it and the trailer, and return the whole pack.

        The pack's own buffer is returned, not a copy: a 16 MiB copy per pack would double
        the memory the pack takes at its peak.
        """
        plain_header = COUNT.pack(len(self.entries)) + b"".join(e.pack() for e in self.entries)
        sealed_header = self._cipher.seal(
            aead.HEADER_NONCE, plain_header, self._prefix + HEADER_LABEL
        )
        self._buffer += sealed_header
        self._buffer += TRAILER.pack(len(sealed_header))
        return self._buffer


def open_blob(cipher: PackCipher, entry: PackEntry, sealed: bytes, *, subject: str) -> bytes:
    """Decrypt one blob read from a pack and return its stored payload."""
    if len(sealed) != entry.length:
        raise IntegrityError(subject)
    associated_data = blob_associated_data(
        entry.blob_type, entry.compression, entry.raw_length, entry.blob_id
    )
    return cipher.open(aead.counter_nonce(entry.offset), sealed, associated_data, subject=subject)


def read_header_length(trailer: bytes, pack_size: int, *, subject: str) -> int:
    if len(trailer) != TRAILER.size:
        raise IntegrityError(subject)
    length: int = TRAILER.unpack(trailer)[0]
    if length > MAX_HEADER_SIZE or length + TRAILER.size + PREFIX_SIZE > pack_size:
        raise IntegrityError(subject)
    return length


def parse_prefix(prefix: bytes, *, subject: str) -> bytes:
    """Check the pack's magic and version and return its salt."""
    check_header(prefix, MAGIC_PACK, subject=subject)
    if len(prefix) < PREFIX_SIZE:
        raise IntegrityError(subject)
    return prefix[HEADER_SIZE:PREFIX_SIZE]


def open_header(
    data_key: bytes, prefix: bytes, sealed_header: bytes, header_offset: int, *, subject: str
) -> list[PackEntry]:
    """Decrypt a pack header and check that its entries tile the pack without overlap."""
    salt = parse_prefix(prefix, subject=subject)
    cipher = PackCipher(data_key, salt)
    plain = cipher.open(
        aead.HEADER_NONCE, sealed_header, prefix[:PREFIX_SIZE] + HEADER_LABEL, subject=subject
    )
    if len(plain) < COUNT.size:
        raise IntegrityError(subject)

    (count,) = COUNT.unpack_from(plain)
    entries = unpack_entries(memoryview(plain)[COUNT.size :], subject=subject)
    if len(entries) != count:
        raise IntegrityError(subject)

    expected_offset = PREFIX_SIZE
    for entry in entries:
        if entry.offset != expected_offset:
            raise IntegrityError(subject)
        expected_offset += entry.length
    if expected_offset != header_offset:
        raise IntegrityError(subject)
    return entries


def parse_pack(data_key: bytes, pack: bytes, *, subject: str) -> list[PackEntry]:
    """Return the entries of a whole pack held in memory."""
    salt_end = PREFIX_SIZE
    if len(pack) < salt_end + TRAILER.size:
        check_header(pack, MAGIC_PACK, subject=subject)
        raise IntegrityError(subject)
    header_length = read_header_length(pack[-TRAILER.size :], len(pack), subject=subject)
    header_offset = len(pack) - TRAILER.size - header_length
    return open_header(
        data_key,
        pack[:salt_end],
        pack[header_offset : -TRAILER.size],
        header_offset,
        subject=subject,
    )

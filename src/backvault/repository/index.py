"""The index: the pack, offset and salt of each blob.

An index file is an encrypted file (magic "BVIX") whose body is a msgpack map::

    {"packs": [[pack id (32 bytes), pack salt (32 bytes), entries], ...]}

where ``entries`` is the concatenation of the pack's header entries (see
:mod:`backvault.repository.pack`). Every index file lists whole packs; the repository's
index is the union of all index files. Because every pack also carries its own header,
a lost or damaged index can be rebuilt from the packs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgpack

from backvault.errors import IntegrityError
from backvault.repository.pack import BlobType, Compression, PackEntry, unpack_entries


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack_id: str
    salt: bytes
    entry: PackEntry
    tree_pack: bool = False  # every blob of the pack is a tree


@dataclass(frozen=True, slots=True)
class IndexedPack:
    pack_id: str
    salt: bytes
    entries: list[PackEntry]


class Index:
    """The in-memory index: blob id to pack, for every blob in every indexed pack."""

    def __init__(self) -> None:
        self._packs: dict[str, IndexedPack] = {}
        self._blobs: dict[bytes, tuple[IndexedPack, PackEntry]] = {}
        self._tree_packs: set[str] = set()  # packs that contain only tree blobs

    def add_pack(self, pack: IndexedPack) -> None:
        self._packs[pack.pack_id] = pack
        if all(entry.blob_type == BlobType.TREE for entry in pack.entries):
            self._tree_packs.add(pack.pack_id)
        for entry in pack.entries:
            # A blob stored twice (two clients, or a crash between pack and index) keeps
            # its first location; both copies are valid.
            self._blobs.setdefault(entry.blob_id, (pack, entry))

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._blobs

    def contains_all(self, blob_ids: list[bytes]) -> bool:
        return all(map(self._blobs.__contains__, blob_ids))

    def __len__(self) -> int:
        return len(self._blobs)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        found = self._blobs.get(blob_id)
        if found is None:
            return None
        pack, entry = found
        return BlobLocation(pack.pack_id, pack.salt, entry, pack.pack_id in self._tree_packs)

    def has_pack(self, pack_id: str) -> bool:
        return pack_id in self._packs

    def remove_pack(self, pack_id: str) -> None:
        """Forget a pack and its blobs, keeping blobs that another pack also holds."""
        pack = self._packs.pop(pack_id)
        self._tree_packs.discard(pack_id)
        for entry in pack.entries:
            found = self._blobs.get(entry.blob_id)
            if found is not None and found[0] is pack:
                del self._blobs[entry.blob_id]
        for other in self._packs.values():
            for entry in other.entries:
                self._blobs.setdefault(entry.blob_id, (other, entry))

    def get_pack(self, pack_id: str) -> IndexedPack | None:
        return self._packs.get(pack_id)

    def packs(self) -> Iterator[IndexedPack]:
        return iter(self._packs.values())

    def blob_ids(self, blob_type: BlobType | None = None) -> Iterator[bytes]:
        for blob_id, (_, entry) in self._blobs.items():
            if blob_type is None or entry.blob_type == blob_type:
                yield blob_id


def encode_index(packs: Iterable[IndexedPack]) -> bytes:
    body = {
        "packs": [
            [bytes.fromhex(p.pack_id), p.salt, b"".join(e.pack() for e in p.entries)]
            for p in packs
        ]
    }
    return msgpack.packb(body, use_bin_type=True)


def decode_index(body: bytes, *, subject: str) -> list[IndexedPack]:
    try:
        records = msgpack.unpackb(body, raw=False)["packs"]
        packs = [
            IndexedPack(bytes(pack_id).hex(), bytes(salt), unpack_entries(entries, subject=subject))
            for pack_id, salt, entries in records
        ]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        raise IntegrityError(subject) from None
    return packs


__all__ = ["BlobLocation", "BlobType", "Compression", "Index", "IndexedPack"]

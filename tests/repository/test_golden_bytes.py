"""Golden bytes of every stored structure, built with fixed keys, randomness and time.

Each structure is written by the real code path (``Repository.create``, ``BlobSaver``,
``save_snapshot``, ``Lock.acquire``) over an in-memory backend, with
``secrets.token_bytes``, ``aead.new_salt``, ``time.time_ns`` and the lock owner's host,
pid and user name replaced by fixed values. No call site in ``src/backvault`` uses
``os.urandom``, so it is left alone. The tests

- compare the written bytes with the hex constants below,
- check each field against the layouts in the module docstrings, with a reader written
  here from those docstrings on plain cryptography, hmac, msgpack, zstandard and blake3
  calls. This catches a format change made to writer and reader alike, which a round
  trip through backvault alone would miss.
- decode the constants with backvault's own readers, so that a reader change is caught.

The constants were computed once by this code and then checked field by field.

NOTE: the encrypted files and the compressed data blob contain zstandard's level 3 output
for these small inputs (zstandard 0.25). A zstandard release that encodes them differently
makes the writer tests fail, while the reader tests still pass.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import msgpack
import pytest
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import backvault.repository.lock as lock_module
from backvault import api
from backvault.crypto import aead
from backvault.crypto.keys import MasterKey
from backvault.crypto.recovery import RecoveryKey
from backvault.crypto.slots import (
    KIND_RECOVERY,
    decode_slot,
    open_recovery_slot,
    read_escrowed_recovery_key,
)
from backvault.errors import RepositoryLockedError
from backvault.repository.blobsaver import BlobSaver
from backvault.repository.config import decode_config, verify_config_mac
from backvault.repository.format import (
    MAGIC_INDEX,
    MAGIC_LOCK,
    MAGIC_SNAPSHOT,
    object_id,
    open_encrypted_file,
)
from backvault.repository.index import IndexedPack, decode_index
from backvault.repository.pack import BlobType, Compression, PackEntry, PackWriter, parse_pack
from backvault.repository.repository import Repository
from backvault.repository.snapshot import Snapshot, decode_snapshot
from backvault.repository.tree import Node, decode_tree, encode_tree
from backvault.storage import ObjectNotFoundError

# Fixed inputs ---------------------------------------------------------------------------

MASTER_KEY = bytes(range(0x00, 0x20))
REPOSITORY_ID = bytes(range(0xA0, 0xB0))
RECOVERY_SECRET = bytes(range(0x40, 0x5E))
SLOT_ID = bytes(range(0xC0, 0xD0))
WRAP_NONCE = b"\x0a" * 12
ESCROW_NONCE = b"\x0e" * 12
SLOT_SALT = b"\x11" * 32
PACK_SALT = b"\x22" * 32
INDEX_SALT = b"\x33" * 32
SNAPSHOT_SALT = b"\x44" * 32
LOCK_SALT = b"\x55" * 32
TIME_NS = 1_700_000_000_123_456_789  # 2023-11-14 22:13:20 UTC

LOCK_HOSTNAME = "golden-host"
LOCK_PID = 4242
LOCK_USERNAME = "alice"

DATA_PLAINTEXT = b"backvault golden data blob\n" * 8

# HKDF info labels and other constants, copied from the module docstrings on purpose:
# if the source changes one of them, the stored format changes and these tests fail.
LABEL_DATA = b"backvault v1 data key"
LABEL_CHUNK_ID = b"backvault v1 chunk id key"
LABEL_METADATA = b"backvault v1 metadata key"
LABEL_CONFIG_MAC = b"backvault v1 config mac key"
LABEL_RECOVERY_ESCROW = b"backvault v1 recovery escrow key"
LABEL_PACK_KEY = b"backvault v1 pack key"
LABEL_FILE_KEY = b"backvault v1 file key"
LABEL_WRAP_KEY = b"backvault v1 key slot wrap"
LABEL_RECOVERY_KEK = b"backvault v1 recovery key kek"
PACK_ENTRY = struct.Struct("<BB32sQII")
BLOB_ASSOCIATED_DATA = struct.Struct("<4sBBI")


def _hex(*lines: str) -> bytes:
    return bytes.fromhex("".join(lines))


# Golden bytes ---------------------------------------------------------------------------

GOLDEN_CONFIG = _hex(
    "425643460100000087ad7265706f7369746f72795f6964c410a0a1a2a3a4a5a6",
    "a7a8a9aaabacadaeafa763726561746564cf17979cfe3d85cd15ab6368756e6b",
    "65725f6d696ece00080000ab6368756e6b65725f617667ce00100000ab636875",
    "6e6b65725f6d6178ce00800000a97061636b5f73697a65ce01000000b1636f6d",
    "7072657373696f6e5f6c6576656c03e3c58be93ce5d3ccd475d3773c7569efc9",
    "2abed19fe2eb5f68187ae8d0ecc1b8",
)
GOLDEN_KEY_SLOT = _hex(
    "42564b530100000087a46b696e64a87265636f76657279a26964c410c0c1c2c3",
    "c4c5c6c7c8c9cacbcccdcecfa763726561746564cf17979cfe3d85cd15a56c61",
    "62656cac7265636f76657279206b6579aa706172616d657465727383a473616c",
    "74c4201111111111111111111111111111111111111111111111111111111111",
    "111111ac657363726f775f6e6f6e6365c40c0e0e0e0e0e0e0e0e0e0e0e0ea665",
    "7363726f77c42efa964109eeb1cae717c8c5062e61347b62bb84856c9d17a2c2",
    "a36f03619f770469f398fe4876d0263e1b1f1dcd45a56e6f6e6365c40c0a0a0a",
    "0a0a0a0a0a0a0a0a0aa777726170706564c430616710d37d38e779ce86aee14a",
    "e84fdab1f77f56388871e146e9850ffad541e0fe25e6e0a945f1cf45219d12a0",
    "91bddd",
)
GOLDEN_TREE = _hex(
    "425654520100000081a56e6f646573928ea46e616d65c406612d6c696e6ba474",
    "797065a773796d6c696e6ba46d6f6465cd01ffa3756964cd03e8a3676964cd03",
    "e8a56d74696d65cf17979cfe3d85cd15a56374696d65cf17979cfe3d85cd15a5",
    "696e6f64652ba6646576696365cd0801a56c696e6b7301a473697a6500a47573",
    "6572a5616c696365a567726f7570a57374616666a6746172676574c40968656c",
    "6c6f2e7478748ea46e616d65c40968656c6c6f2e747874a474797065a466696c",
    "65a46d6f6465cd01a4a3756964cd03e8a3676964cd03e8a56d74696d65cf1797",
    "9cfe3d85cd15a56374696d65cf17979cfe3d85cd15a5696e6f64652aa6646576",
    "696365cd0801a56c696e6b7301a473697a65ccd8a475736572a5616c696365a5",
    "67726f7570a57374616666a7636f6e74656e7491c420318e8c22ea19223f6ab9",
    "7b71535090987d4e2eb9340c4b8526c14890ebe0595a",
)
GOLDEN_PACK = _hex(
    "4256504b01000000222222222222222222222222222222222222222222222222",
    "222222222222222278721530e1f44dd90cd02b5546324ed96c8a0cd87ad71404",
    "82318ea83bd5150ea3cb7f857a35db23c420d8eda9c989a1ff422a4dc34eb27b",
    "0301172d2ac0442b843d0b879ca924847d7541cd5373972007e257ccf6e739c2",
    "73aa3d6d566a0ece01449b41f94142ffb4c87eba502966fd98e5685afe1860c0",
    "40f27b66524accac263642ddde671a527112b32049d8714f1cae4d4c8d25959e",
    "8a0108feaac5d9ddacdfe003def17d433e7bde7666253d2daf592da7239790a5",
    "1f8d14fd19791d7e09feeb7ffaee21d00cc11ef9987ff74542526a0a6606c8a9",
    "081b0447646dd068bc17e7136d4d36a05adacfeaeb174255214934dff259fa99",
    "f3b66e9506f143f3868d4b164ca15cbee5c81f7f1b19860e7404e3481ec1f2a7",
    "d1742af4fe1655bab3a469fbd45b84c19269f97745ac7dd2bceadf54c3a3e3a9",
    "c83bc12eefaaaa41098c356f5aaf2af6713deb0090db895e901f841c4b6a7fa7",
    "6e1b57a69fefaa56450151ef1c9889d86b6cd78f672f1db8229d9ed5220fb040",
    "b7774bb73c0da1ed4f40a68d15e018ad014c465d14362652d003f9063f942e68",
    "19ef55fc728ebe19ee908d35c01a99471a78000000",
)
GOLDEN_INDEX = _hex(
    "4256495801000000333333333333333333333333333333333333333333333333",
    "3333333333333333fe5db70b1a6a90259c19b1b06cd428656750d0dc87abfd96",
    "a43be55cdc8ae65832118dc8a2ed1ec5ecb78f356ceb56387e1efd5d929d4d8a",
    "918bbbfcce6cc8f9a7cce86e40333822fecb4a2cda399b62b1e85596a9dd2120",
    "e88a7379dd4fcf29ed3c12eccd491f1d93253c460b6817e222347c85190b9a18",
    "ffb9604df9700238f822364a39f1398e348937c36ea6b4243d06ca267cf8c484",
    "48f71d604b15908655af587adba2d80546334e83",
)
GOLDEN_SNAPSHOT = _hex(
    "4256534e01000000444444444444444444444444444444444444444444444444",
    "44444444444444445397ea6d39bf38d289a352606faed3063c3167a1613781b5",
    "c20e76850067f57c5c5c4942033eba7b46ac8c3b90fb34978fa1f6ab29711df6",
    "3ee59db8dd2dfd60fe3de2cf081a5cd43bd207a6dfaa25151269c15c034c5f52",
    "61cdb5c5b9d95bd1f9d2aa1feea98d9450568377587c6b15eba8471fd90247f7",
    "40cc044b789f1e31b25452f87a9c101767916befbe0bf518c9cb03883f7482ac",
    "da2fac6712a5078c468ddc557fed47dbbc3e8b70e8cd7650d0f268a905169c34",
    "0604471db75e2344b6e795d18baf3b2f0e599ea000f39b9b4135cdb61efea2e5",
    "acc90f511488e8410e167f5cb7f0f308b8d2f0570448eb2bc9b829",
)
GOLDEN_LOCK = _hex(
    "42564c4b01000000555555555555555555555555555555555555555555555555",
    "55555555555555554b2483d621068227347151548c40a0801671dcb784429e4c",
    "0a419798fad1c65f2b434ce202d9ac689e47f4d117a5dbf73d1c359f9c87ae2f",
    "d93b561f0a4f29b608fff5a39cf35a2e562859fa108aa4223a6bc63ba87ab4cb",
    "b9176b2bc37c",
)


# Building the structures ----------------------------------------------------------------


class MemoryBackend:
    """A backend that keeps objects in a dict, so that no temporary file name is drawn."""

    def __init__(self, objects: dict[tuple[str, str], bytes] | None = None) -> None:
        self.objects: dict[tuple[str, str], bytes] = dict(objects or {})

    @property
    def location(self) -> str:
        return "memory"

    def exists_repository(self) -> bool:
        return ("config", "config") in self.objects

    def create_repository(self) -> None:
        pass

    def exists(self, kind: str, name: str) -> bool:
        return (kind, name) in self.objects

    def read(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            data = self.objects[(kind, name)]
        except KeyError:
            raise ObjectNotFoundError(f"{kind}/{name} is missing") from None
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def write(self, kind: str, name: str, data: bytes | memoryview) -> None:
        self.objects[(kind, name)] = bytes(data)

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        for (object_kind, name), data in sorted(self.objects.items()):
            if object_kind == kind:
                yield name, len(data)

    def delete(self, kind: str, name: str) -> None:
        try:
            del self.objects[(kind, name)]
        except KeyError:
            raise ObjectNotFoundError(f"{kind}/{name} is missing") from None

    def only(self, kind: str) -> tuple[str, bytes]:
        """Return the name and bytes of the single object of ``kind``."""
        found = [(name, data) for (object_kind, name), data in self.objects.items()
                 if object_kind == kind]
        assert len(found) == 1, f"expected one {kind} object, found {len(found)}"
        return found[0]


class ScriptedRandom:
    """A stand-in for ``secrets.token_bytes`` that returns fixed values, queued by size."""

    def __init__(self, values: dict[int, list[bytes]]) -> None:
        self._queues = {size: list(queue) for size, queue in values.items()}

    def __call__(self, size: int) -> bytes:
        queue = self._queues.get(size)
        if not queue:
            raise AssertionError(f"unexpected draw of {size} random bytes")
        value = queue.pop(0)
        assert len(value) == size
        return value

    def assert_used_up(self) -> None:
        left = {size: len(queue) for size, queue in self._queues.items() if queue}
        assert not left, f"fixed random values never drawn, by size: {left}"


class ScriptedSalts:
    """A stand-in for ``aead.new_salt`` that returns fixed salts in order."""

    def __init__(self, salts: list[bytes]) -> None:
        self._salts = list(salts)

    def __call__(self) -> bytes:
        if not self._salts:
            raise AssertionError("unexpected draw of a salt")
        return self._salts.pop(0)

    def assert_used_up(self) -> None:
        assert not self._salts, f"{len(self._salts)} fixed salts never drawn"


@dataclass
class Built:
    """The stored objects written by :func:`build_structures`."""

    config: bytes
    key_slot_name: str
    key_slot: bytes
    tree: bytes
    pack_name: str
    pack: bytes
    index_name: str
    index: bytes
    snapshot_name: str
    snapshot: bytes
    lock_name: str
    lock: bytes


def root_tree_nodes(data_blob_id: bytes) -> list[Node]:
    """Return the root tree of the golden snapshot, deliberately not sorted by name."""
    hello = Node(
        name=b"hello.txt", type="file", mode=0o644, uid=1000, gid=1000, user="alice",
        group="staff", mtime=TIME_NS, ctime=TIME_NS, inode=42, device=2049, links=1,
        size=len(DATA_PLAINTEXT), content=[data_blob_id],
    )
    link = Node(
        name=b"a-link", type="symlink", mode=0o777, uid=1000, gid=1000, user="alice",
        group="staff", mtime=TIME_NS, ctime=TIME_NS, inode=43, device=2049, links=1,
        target=b"hello.txt",
    )
    return [hello, link]


def golden_snapshot(tree_id: bytes) -> Snapshot:
    return Snapshot(
        time_ns=TIME_NS,
        hostname=LOCK_HOSTNAME,
        username=LOCK_USERNAME,
        paths=[b"/home/alice"],
        tree=tree_id,
        parent=None,
        skipped=[(b"/home/alice/private", "Permission denied")],
        changed=[],
        summary={"files": 1, "bytes_total": len(DATA_PLAINTEXT)},
        program_version="0.1.0",
    )


def add_blob(
    repository: Repository, saver: BlobSaver, writer: PackWriter, blob_type: BlobType,
    plaintext: bytes,
) -> bytes:
    """Add one blob to ``writer`` as the blob saver would, and return its id."""
    blob_id = repository.blob_id(plaintext)
    payload, compression = saver._compress(plaintext)
    writer.add(blob_type, blob_id, payload, compression, len(plaintext))
    return blob_id


def build_structures(monkeypatch: pytest.MonkeyPatch) -> Built:
    """Write one of each stored structure through the real code, with fixed inputs."""
    random = ScriptedRandom({
        16: [REPOSITORY_ID, SLOT_ID],
        32: [MASTER_KEY],
        30: [RECOVERY_SECRET],
        12: [ESCROW_NONCE, WRAP_NONCE],
    })
    salts = ScriptedSalts([SLOT_SALT, PACK_SALT, INDEX_SALT, SNAPSHOT_SALT, LOCK_SALT])
    monkeypatch.setattr("secrets.token_bytes", random)
    monkeypatch.setattr(aead, "new_salt", salts)
    monkeypatch.setattr(time, "time_ns", lambda: TIME_NS)

    backend = MemoryBackend()
    repository, recovery_key = Repository.create(backend)
    assert recovery_key.secret == RECOVERY_SECRET
    assert repository.master_key == MasterKey(MASTER_KEY)

    # A backup puts trees and data in separate packs; the golden pack has one blob of
    # each kind, so it is written with the saver's compression and the real pack writer.
    saver = BlobSaver(repository)
    writer = PackWriter(repository.subkeys.data)
    data_id = add_blob(repository, saver, writer, BlobType.DATA, DATA_PLAINTEXT)
    tree = encode_tree(root_tree_nodes(data_id))
    tree_id = add_blob(repository, saver, writer, BlobType.TREE, tree)
    pack_bytes = bytes(writer.finish())
    backend.write("data", object_id(pack_bytes), pack_bytes)
    repository.write_index_file([IndexedPack(object_id(pack_bytes), writer.salt, writer.entries)])
    saver.close()
    repository.save_snapshot(golden_snapshot(tree_id))

    with monkeypatch.context() as owner:
        owner.setattr(socket, "gethostname", lambda: LOCK_HOSTNAME)
        owner.setattr(os, "getpid", lambda: LOCK_PID)
        owner.setattr(lock_module, "_username", lambda: LOCK_USERNAME)
        lock = repository.lock(exclusive=True)
        lock_name, lock_bytes = backend.only("locks")
        lock.release()

    random.assert_used_up()
    salts.assert_used_up()

    _, config = backend.only("config")
    key_slot_name, key_slot = backend.only("keys")
    pack_name, pack = backend.only("data")
    index_name, index = backend.only("index")
    snapshot_name, snapshot = backend.only("snapshots")
    return Built(
        config=config, key_slot_name=key_slot_name, key_slot=key_slot, tree=tree,
        pack_name=pack_name, pack=pack, index_name=index_name, index=index,
        snapshot_name=snapshot_name, snapshot=snapshot, lock_name=lock_name, lock=lock_bytes,
    )


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Built:
    return build_structures(monkeypatch)


def golden_backend() -> MemoryBackend:
    """Return a backend that contains the golden objects under their storage names."""
    return MemoryBackend({
        ("config", "config"): GOLDEN_CONFIG,
        ("keys", SLOT_ID.hex()): GOLDEN_KEY_SLOT,
        ("data", object_id(GOLDEN_PACK)): GOLDEN_PACK,
        ("index", object_id(GOLDEN_INDEX)): GOLDEN_INDEX,
        ("snapshots", object_id(GOLDEN_SNAPSHOT)): GOLDEN_SNAPSHOT,
    })


def open_golden_repository() -> Repository:
    repository = Repository.open(golden_backend())
    repository.unlock_with_recovery_key(RecoveryKey.from_secret(RECOVERY_SECRET))
    return repository


# A reader written from the docstrings ---------------------------------------------------


def hkdf(key: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def subkey(label: bytes) -> bytes:
    return hkdf(MASTER_KEY, salt=REPOSITORY_ID, info=label)


def assert_header(data: bytes, magic: bytes) -> None:
    assert data[0:4] == magic
    assert data[4] == 1, "format version"
    assert data[5:8] == b"\x00\x00\x00", "reserved bytes"


def read_encrypted_file(data: bytes, magic: bytes, salt: bytes) -> Any:
    """Decrypt a whole file by its documented layout and return its msgpack body."""
    assert_header(data, magic)
    assert data[8:40] == salt
    file_key = hkdf(subkey(LABEL_METADATA), salt=salt, info=LABEL_FILE_KEY)
    compressed = AESGCM(file_key).decrypt(b"\x00" * 12, data[40:], data[:40])
    body = zstandard.ZstdDecompressor().decompressobj().decompress(compressed)
    return msgpack.unpackb(body, raw=False)


def unwrap(kek: bytes, nonce: bytes, wrapped: bytes, associated_data: bytes) -> bytes:
    wrap_key = hkdf(kek, salt=b"", info=LABEL_WRAP_KEY)
    return AESGCM(wrap_key).decrypt(nonce, wrapped, associated_data)


def keyed_blob_id(plaintext: bytes) -> bytes:
    return blake3.blake3(plaintext, key=subkey(LABEL_CHUNK_ID)).digest()


# Writer tests: the bytes ----------------------------------------------------------------


def test_config_bytes_match_golden(built: Built) -> None:
    assert built.config.hex() == GOLDEN_CONFIG.hex()


def test_key_slot_bytes_match_golden(built: Built) -> None:
    assert built.key_slot.hex() == GOLDEN_KEY_SLOT.hex()
    assert built.key_slot_name == SLOT_ID.hex()


def test_tree_blob_bytes_match_golden(built: Built) -> None:
    assert built.tree.hex() == GOLDEN_TREE.hex()


def test_pack_bytes_match_golden(built: Built) -> None:
    assert built.pack.hex() == GOLDEN_PACK.hex()
    assert built.pack_name == blake3.blake3(GOLDEN_PACK).hexdigest()


def test_index_bytes_match_golden(built: Built) -> None:
    assert built.index.hex() == GOLDEN_INDEX.hex()
    assert built.index_name == blake3.blake3(GOLDEN_INDEX).hexdigest()


def test_snapshot_bytes_match_golden(built: Built) -> None:
    assert built.snapshot.hex() == GOLDEN_SNAPSHOT.hex()
    assert built.snapshot_name == blake3.blake3(GOLDEN_SNAPSHOT).hexdigest()


def test_lock_bytes_match_golden(built: Built) -> None:
    assert built.lock.hex() == GOLDEN_LOCK.hex()
    assert built.lock_name == blake3.blake3(GOLDEN_LOCK).hexdigest()


# Layout tests: each field of the golden bytes -------------------------------------------


def test_config_layout() -> None:
    assert_header(GOLDEN_CONFIG, b"BVCF")

    body = msgpack.unpackb(GOLDEN_CONFIG[8:-32], raw=False)
    assert list(body) == [
        "repository_id", "created", "chunker_min", "chunker_avg", "chunker_max",
        "pack_size", "compression_level",
    ]
    assert body["repository_id"] == REPOSITORY_ID
    assert body["created"] == TIME_NS
    assert body["chunker_min"] == 512 * 1024
    assert body["chunker_avg"] == 1024 * 1024
    assert body["chunker_max"] == 8 * 1024 * 1024
    assert body["pack_size"] == 16 * 1024 * 1024
    assert body["compression_level"] == 3

    mac = hmac.new(subkey(LABEL_CONFIG_MAC), GOLDEN_CONFIG[:-32], hashlib.sha256).digest()
    assert GOLDEN_CONFIG[-32:] == mac


def test_key_slot_layout() -> None:
    assert_header(GOLDEN_KEY_SLOT, b"BVKS")

    body = msgpack.unpackb(GOLDEN_KEY_SLOT[8:], raw=False)
    assert list(body) == ["kind", "id", "created", "label", "parameters", "nonce", "wrapped"]
    assert body["kind"] == "recovery"
    assert body["id"] == SLOT_ID
    assert body["created"] == TIME_NS
    assert body["label"] == "recovery key"
    assert body["nonce"] == WRAP_NONCE
    assert len(body["wrapped"]) == 48, "32-byte master key and 16-byte tag"

    parameters = body["parameters"]
    assert list(parameters) == ["salt", "escrow_nonce", "escrow"]
    assert parameters["salt"] == SLOT_SALT
    assert parameters["escrow_nonce"] == ESCROW_NONCE
    assert len(parameters["escrow"]) == 46, "30-byte recovery secret and 16-byte tag"

    # The wrap's associated data covers every other field of the slot.
    kek = hkdf(RECOVERY_SECRET, salt=SLOT_SALT, info=LABEL_RECOVERY_KEK)
    slot_fields = ["recovery", SLOT_ID, TIME_NS, "recovery key", parameters]
    associated_data = (
        GOLDEN_KEY_SLOT[:8] + REPOSITORY_ID + msgpack.packb(slot_fields, use_bin_type=True)
    )
    assert len(associated_data) == 196
    assert unwrap(kek, WRAP_NONCE, body["wrapped"], associated_data) == MASTER_KEY

    escrow_key = subkey(LABEL_RECOVERY_ESCROW)
    escrowed = unwrap(escrow_key, ESCROW_NONCE, parameters["escrow"], SLOT_ID)
    assert escrowed == RECOVERY_SECRET


def test_tree_blob_layout() -> None:
    assert_header(GOLDEN_TREE, b"BVTR")

    body = msgpack.unpackb(GOLDEN_TREE[8:], raw=False)
    assert list(body) == ["nodes"]
    link, hello = body["nodes"]
    assert link == {
        "name": b"a-link", "type": "symlink", "mode": 0o777, "uid": 1000, "gid": 1000,
        "mtime": TIME_NS, "ctime": TIME_NS, "inode": 43, "device": 2049, "links": 1,
        "size": 0, "user": "alice", "group": "staff", "target": b"hello.txt",
    }
    assert hello == {
        "name": b"hello.txt", "type": "file", "mode": 0o644, "uid": 1000, "gid": 1000,
        "mtime": TIME_NS, "ctime": TIME_NS, "inode": 42, "device": 2049, "links": 1,
        "size": len(DATA_PLAINTEXT), "user": "alice", "group": "staff",
        "content": [keyed_blob_id(DATA_PLAINTEXT)],
    }
    assert list(hello)[:11] == [
        "name", "type", "mode", "uid", "gid", "mtime", "ctime", "inode", "device",
        "links", "size",
    ]


def test_pack_layout() -> None:
    assert_header(GOLDEN_PACK, b"BVPK")
    assert GOLDEN_PACK[8:40] == PACK_SALT
    pack_key = AESGCM(hkdf(subkey(LABEL_DATA), salt=PACK_SALT, info=LABEL_PACK_KEY))

    (header_length,) = struct.unpack("<I", GOLDEN_PACK[-4:])
    header_offset = len(GOLDEN_PACK) - 4 - header_length
    plain_header = pack_key.decrypt(
        b"\xff" * 12, GOLDEN_PACK[header_offset:-4], GOLDEN_PACK[:40] + b"header"
    )
    (count,) = struct.unpack_from("<I", plain_header)
    assert count == 2
    assert len(plain_header) == 4 + count * PACK_ENTRY.size
    assert header_length == len(plain_header) + 16, "count, entries and the GCM tag"
    entries = list(PACK_ENTRY.iter_unpack(plain_header[4:]))

    data_entry, tree_entry = entries
    assert data_entry[0] == 0, "type data"
    assert data_entry[1] == 1, "compression zstd"
    assert data_entry[2] == keyed_blob_id(DATA_PLAINTEXT)
    assert data_entry[3] == 40, "the first blob follows the 40-byte prefix"
    assert data_entry[5] == len(DATA_PLAINTEXT)
    assert tree_entry[0] == 1, "type tree"
    assert tree_entry[1] == 1, "compression zstd"
    assert tree_entry[2] == keyed_blob_id(GOLDEN_TREE)
    assert tree_entry[3] == data_entry[3] + data_entry[4], "blobs are contiguous"
    assert tree_entry[3] + tree_entry[4] == header_offset, "the header follows the blobs"
    assert tree_entry[5] == len(GOLDEN_TREE)

    plaintexts = []
    for blob_type, compression, blob_id, offset, length, raw_length in entries:
        associated_data = BLOB_ASSOCIATED_DATA.pack(
            b"BVBL", blob_type, compression, raw_length
        ) + blob_id
        nonce = offset.to_bytes(12, "big")
        payload = pack_key.decrypt(nonce, GOLDEN_PACK[offset : offset + length], associated_data)
        if compression == 1:
            payload = zstandard.ZstdDecompressor().decompress(payload)
        assert len(payload) == raw_length
        assert keyed_blob_id(payload) == blob_id
        plaintexts.append(payload)
    assert plaintexts == [DATA_PLAINTEXT, GOLDEN_TREE]


def test_index_layout() -> None:
    body = read_encrypted_file(GOLDEN_INDEX, b"BVIX", INDEX_SALT)

    assert list(body) == ["packs"]
    ((pack_id, salt, entries),) = body["packs"]
    assert pack_id == blake3.blake3(GOLDEN_PACK).digest()
    assert salt == PACK_SALT

    # The entries are the pack header's entries, byte for byte.
    pack_key = AESGCM(hkdf(subkey(LABEL_DATA), salt=PACK_SALT, info=LABEL_PACK_KEY))
    (header_length,) = struct.unpack("<I", GOLDEN_PACK[-4:])
    header_offset = len(GOLDEN_PACK) - 4 - header_length
    plain_header = pack_key.decrypt(
        b"\xff" * 12, GOLDEN_PACK[header_offset:-4], GOLDEN_PACK[:40] + b"header"
    )
    assert entries == plain_header[4:]


def test_snapshot_layout() -> None:
    body = read_encrypted_file(GOLDEN_SNAPSHOT, b"BVSN", SNAPSHOT_SALT)

    assert body == {
        "time": TIME_NS,
        "hostname": LOCK_HOSTNAME,
        "username": LOCK_USERNAME,
        "paths": [b"/home/alice"],
        "tree": keyed_blob_id(GOLDEN_TREE),
        "parent": None,
        "skipped": [[b"/home/alice/private", "Permission denied"]],
        "changed": [],
        "summary": {"files": 1, "bytes_total": len(DATA_PLAINTEXT)},
        "program_version": "0.1.0",
    }
    assert list(body) == [
        "time", "hostname", "username", "paths", "tree", "parent", "skipped", "changed",
        "summary", "program_version",
    ]


def test_lock_layout() -> None:
    body = read_encrypted_file(GOLDEN_LOCK, b"BVLK", LOCK_SALT)

    assert body == {
        "hostname": LOCK_HOSTNAME, "pid": LOCK_PID, "username": LOCK_USERNAME,
        "time": TIME_NS, "exclusive": True,
    }
    assert list(body) == ["hostname", "pid", "username", "time", "exclusive"]


def test_encrypted_files_bind_header_and_salt() -> None:
    """A whole file decrypts only with its own 40-byte prefix as associated data."""
    file_key = hkdf(subkey(LABEL_METADATA), salt=INDEX_SALT, info=LABEL_FILE_KEY)
    snapshot_prefix = b"BVSN" + GOLDEN_INDEX[4:40]

    with pytest.raises(InvalidTag):
        AESGCM(file_key).decrypt(b"\x00" * 12, GOLDEN_INDEX[40:], snapshot_prefix)


# Reader tests: backvault decodes the golden bytes ---------------------------------------


def test_decode_config() -> None:
    config = decode_config(GOLDEN_CONFIG)

    assert config.repository_id == REPOSITORY_ID
    assert config.created_ns == TIME_NS
    assert config.chunker_min == 512 * 1024
    assert config.chunker_avg == 1024 * 1024
    assert config.chunker_max == 8 * 1024 * 1024
    assert config.pack_size == 16 * 1024 * 1024
    assert config.compression_level == 3
    verify_config_mac(GOLDEN_CONFIG, subkey(LABEL_CONFIG_MAC))


def test_decode_key_slot() -> None:
    slot = decode_slot(GOLDEN_KEY_SLOT, subject="golden key slot")

    assert slot.kind == KIND_RECOVERY
    assert slot.slot_id == SLOT_ID
    assert slot.name == SLOT_ID.hex()
    assert slot.created_ns == TIME_NS
    assert slot.label == "recovery key"
    assert slot.nonce == WRAP_NONCE
    assert slot.parameters["salt"] == SLOT_SALT

    recovery_key = RecoveryKey.from_secret(RECOVERY_SECRET)
    master_key = open_recovery_slot(slot, recovery_key, REPOSITORY_ID)
    assert master_key == MasterKey(MASTER_KEY)
    assert read_escrowed_recovery_key(slot, master_key, REPOSITORY_ID) == recovery_key


def test_decode_tree_blob() -> None:
    nodes = decode_tree(GOLDEN_TREE, subject="golden tree")

    link, hello = nodes
    assert link.name == b"a-link"
    assert link.type == "symlink"
    assert link.target == b"hello.txt"
    assert link.mode == 0o777
    assert hello.name == b"hello.txt"
    assert hello.type == "file"
    assert hello.mode == 0o644
    assert (hello.uid, hello.gid, hello.user, hello.group) == (1000, 1000, "alice", "staff")
    assert (hello.mtime, hello.ctime) == (TIME_NS, TIME_NS)
    assert (hello.inode, hello.device, hello.links) == (42, 2049, 1)
    assert hello.size == len(DATA_PLAINTEXT)
    assert hello.content == [keyed_blob_id(DATA_PLAINTEXT)]
    assert hello.subtree is None
    assert hello.xattrs == {}
    assert hello.changed is False


def test_decode_pack() -> None:
    entries = parse_pack(subkey(LABEL_DATA), GOLDEN_PACK, subject="golden pack")

    data_entry, tree_entry = entries
    assert data_entry.blob_type is BlobType.DATA
    assert data_entry.compression is Compression.ZSTD
    assert data_entry.blob_id == keyed_blob_id(DATA_PLAINTEXT)
    assert data_entry.offset == 40
    assert data_entry.raw_length == len(DATA_PLAINTEXT)
    assert tree_entry.blob_type is BlobType.TREE
    assert tree_entry.compression is Compression.ZSTD
    assert tree_entry.blob_id == keyed_blob_id(GOLDEN_TREE)
    assert tree_entry.offset == data_entry.offset + data_entry.length
    assert tree_entry.raw_length == len(GOLDEN_TREE)


def test_decode_index() -> None:
    body = open_encrypted_file(
        MAGIC_INDEX, subkey(LABEL_METADATA), GOLDEN_INDEX, subject="golden index"
    )
    (pack,) = decode_index(body, subject="golden index")

    assert pack.pack_id == object_id(GOLDEN_PACK)
    assert pack.salt == PACK_SALT
    assert pack.entries == parse_pack(subkey(LABEL_DATA), GOLDEN_PACK, subject="golden pack")
    assert all(isinstance(entry, PackEntry) for entry in pack.entries)


def test_decode_snapshot() -> None:
    name = object_id(GOLDEN_SNAPSHOT)
    body = open_encrypted_file(
        MAGIC_SNAPSHOT, subkey(LABEL_METADATA), GOLDEN_SNAPSHOT, subject="golden snapshot"
    )
    snapshot = decode_snapshot(body, name, subject="golden snapshot")

    assert snapshot.snapshot_id == name
    assert snapshot.time_ns == TIME_NS
    assert snapshot.hostname == LOCK_HOSTNAME
    assert snapshot.username == LOCK_USERNAME
    assert snapshot.paths == [b"/home/alice"]
    assert snapshot.tree == keyed_blob_id(GOLDEN_TREE)
    assert snapshot.parent is None
    assert snapshot.skipped == [(b"/home/alice/private", "Permission denied")]
    assert snapshot.changed == []
    assert snapshot.summary == {"files": 1, "bytes_total": len(DATA_PLAINTEXT)}
    assert snapshot.program_version == "0.1.0"


def test_decode_lock() -> None:
    body = open_encrypted_file(
        MAGIC_LOCK, subkey(LABEL_METADATA), GOLDEN_LOCK, subject="golden lock"
    )

    assert msgpack.unpackb(body, raw=False) == {
        "hostname": LOCK_HOSTNAME, "pid": LOCK_PID, "username": LOCK_USERNAME,
        "time": TIME_NS, "exclusive": True,
    }


def test_golden_lock_blocks_other_host() -> None:
    backend = golden_backend()
    backend.write("locks", object_id(GOLDEN_LOCK), GOLDEN_LOCK)
    repository = Repository.open(backend)
    repository.unlock_with_recovery_key(RecoveryKey.from_secret(RECOVERY_SECRET))

    with pytest.raises(RepositoryLockedError, match=f"pid {LOCK_PID} on {LOCK_HOSTNAME}"):
        repository.lock(exclusive=False)


def test_golden_repository_opens() -> None:
    repository = open_golden_repository()

    assert repository.repository_id == REPOSITORY_ID
    assert repository.master_key == MasterKey(MASTER_KEY)
    assert repository.recovery_key() == RecoveryKey.from_secret(RECOVERY_SECRET)
    (snapshot,) = repository.list_snapshots()
    assert snapshot.snapshot_id == object_id(GOLDEN_SNAPSHOT)

    repository.load_index()
    assert repository.load_tree(snapshot.tree) == decode_tree(GOLDEN_TREE, subject="tree")
    data_id = keyed_blob_id(DATA_PLAINTEXT)
    assert repository.load_blob(data_id, BlobType.DATA) == DATA_PLAINTEXT


def test_golden_repository_restores(tmp_path: Path) -> None:
    repository = open_golden_repository()

    result = api.restore(repository, "latest", tmp_path / "restored")

    assert result.damaged == []
    assert (tmp_path / "restored" / "hello.txt").read_bytes() == DATA_PLAINTEXT
    assert os.readlink(tmp_path / "restored" / "a-link") == "hello.txt"
    assert os.stat(tmp_path / "restored" / "hello.txt").st_mtime_ns == TIME_NS

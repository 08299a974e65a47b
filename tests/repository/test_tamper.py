"""Tamper tests: damaged, truncated, swapped and foreign files in a real repository.

A failed decryption or verification raises IntegrityError, whatever check failed. A
structure with an unknown magic or a newer format version raises UnsupportedFormatError
before any decryption. Key slots differ: a slot that decodes but no longer opens cannot
be distinguished from a wrong recovery key, so unlocking reports WrongKeyError.

Every test works on its own copy of a small repository with two snapshots, made once per
module through the public API.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from backvault import api
from backvault.crypto.recovery import RecoveryKey
from backvault.crypto.slots import decode_slot, encode_slot, make_recovery_slot
from backvault.errors import (
    BackvaultError,
    IntegrityError,
    RepositoryLockedError,
    RepositoryNotFoundError,
    UnsupportedFormatError,
    WrongKeyError,
)
from backvault.repository.format import MAGIC_SNAPSHOT
from backvault.repository.index import IndexedPack
from backvault.repository.pack import BlobType, PackEntry, parse_pack
from backvault.repository.repository import Repository

FILES_FIRST = {
    "alpha.txt": b"".join(b"line %05d of a compressible text file\n" % n for n in range(250)),
    "beta.bin": random.Random(1).randbytes(24_000),
    "sub/gamma.txt": b"a small file\n",
    "sub/delta.bin": random.Random(2).randbytes(6_000),
}
FILES_SECOND = {**FILES_FIRST, "alpha.txt": FILES_FIRST["alpha.txt"] + b"one more line\n"}

# Error classes that a damaged file may raise while it is read.
TAMPER_ERRORS = (IntegrityError, UnsupportedFormatError, WrongKeyError)


@dataclass(frozen=True)
class Template:
    root: Path
    source: Path
    recovery_key: RecoveryKey
    first_snapshot: str
    second_snapshot: str


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("tamper")
    source = base / "source"
    write_files(source, FILES_FIRST)
    repository, recovery_key = api.init_repository(str(base / "repository"))
    first = api.backup(repository, [str(source)]).snapshot.snapshot_id
    write_files(source, FILES_SECOND)
    second = api.backup(repository, [str(source)]).snapshot.snapshot_id
    return Template(base / "repository", source, recovery_key, first, second)


@pytest.fixture
def root(template: Template, tmp_path: Path) -> Path:
    """Return a fresh copy of the template repository."""
    return Path(shutil.copytree(template.root, tmp_path / "repository"))


# Files and readers ----------------------------------------------------------------------


def object_path(root: Path, kind: str, name: str) -> Path:
    if kind == "config":
        return root / "config"
    if kind == "data":
        return root / "data" / name[:2] / name
    return root / kind / name


def object_names(root: Path, kind: str) -> list[str]:
    folders = sorted((root / "data").iterdir()) if kind == "data" else [root / kind]
    return sorted(path.name for folder in folders for path in folder.iterdir())


def largest_pack(root: Path) -> str:
    names = object_names(root, "data")
    return max(names, key=lambda name: object_path(root, "data", name).stat().st_size)


def flip_byte(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def set_byte(path: Path, offset: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] = value
    path.write_bytes(bytes(data))


def truncate(path: Path, length: int) -> None:
    path.write_bytes(path.read_bytes()[:length])


def open_unlocked(root: Path, recovery_key: RecoveryKey) -> Repository:
    return api.open_repository(str(root), recovery_key=recovery_key)


def read_config(root: Path, recovery_key: RecoveryKey, name: str) -> None:
    open_unlocked(root, recovery_key)


def read_key_slot(root: Path, recovery_key: RecoveryKey, name: str) -> None:
    # The escrowed recovery key is part of the slot, so read it too.
    open_unlocked(root, recovery_key).recovery_key()


def read_index(root: Path, recovery_key: RecoveryKey, name: str) -> None:
    open_unlocked(root, recovery_key).read_index_file(name)


def read_snapshot(root: Path, recovery_key: RecoveryKey, name: str) -> None:
    open_unlocked(root, recovery_key).load_snapshot(name)


def read_pack(root: Path, recovery_key: RecoveryKey, name: str) -> None:
    """Decrypt the pack header and every blob, without comparing the name with the hash."""
    repository = open_unlocked(root, recovery_key)
    data = repository.backend.read("data", name)
    for entry in parse_pack(repository.subkeys.data, data, subject=f"pack {name}"):
        repository.load_blob_from(name, data, entry)


Reader = Callable[[Path, RecoveryKey, str], None]

READERS: dict[str, Reader] = {
    "config": read_config,
    "keys": read_key_slot,
    "index": read_index,
    "snapshots": read_snapshot,
    "data": read_pack,
}


def pick_object(root: Path, kind: str) -> tuple[str, Path]:
    if kind == "config":
        return "config", root / "config"
    name = largest_pack(root) if kind == "data" else object_names(root, kind)[0]
    return name, object_path(root, kind, name)


def expect_error(
    root: Path, template: Template, kind: str, name: str, error: type[BackvaultError]
) -> BackvaultError:
    with pytest.raises(error) as caught:
        READERS[kind](root, template.recovery_key, name)
    return caught.value


# Untouched files read cleanly -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(READERS))
def test_untouched_files_read(root: Path, template: Template, kind: str) -> None:
    names = ["config"] if kind == "config" else object_names(root, kind)

    for name in names:
        READERS[kind](root, template.recovery_key, name)


# One flipped byte -----------------------------------------------------------------------

# Offsets in an encrypted file (index, snapshot): header, salt, ciphertext, GCM tag.
ENCRYPTED_FILE_FLIPS: list[tuple[str, Callable[[int], int], type[BackvaultError]]] = [
    ("magic", lambda size: 0, UnsupportedFormatError),
    ("version", lambda size: 4, IntegrityError),  # 1 becomes 0, which no version uses
    ("reserved", lambda size: 6, IntegrityError),
    ("salt-first", lambda size: 8, IntegrityError),
    ("salt-last", lambda size: 39, IntegrityError),
    ("ciphertext-first", lambda size: 40, IntegrityError),
    ("ciphertext-middle", lambda size: (40 + size - 16) // 2, IntegrityError),
    ("tag-first", lambda size: size - 16, IntegrityError),
    ("tag-last", lambda size: size - 1, IntegrityError),
]


@pytest.mark.parametrize("kind", ["index", "snapshots"])
@pytest.mark.parametrize(
    ("offset_of", "error"),
    [(offset_of, error) for _, offset_of, error in ENCRYPTED_FILE_FLIPS],
    ids=[region for region, _, _ in ENCRYPTED_FILE_FLIPS],
)
def test_encrypted_file_flip(
    root: Path, template: Template, kind: str, offset_of: Callable[[int], int],
    error: type[BackvaultError],
) -> None:
    name, path = pick_object(root, kind)
    flip_byte(path, offset_of(path.stat().st_size))

    expect_error(root, template, kind, name, error)


def config_offset(data: bytes, region: str) -> int:
    repository_id = decode_config_id(data)
    offsets = {
        "magic": 0,
        "version": 4,
        "reserved": 6,
        "map-header": 8,
        "created": created_value_offset(data),
        "compression-level": len(data) - 33,
        "mac-first": len(data) - 32,
        "mac-last": len(data) - 1,
        "repository-id": data.index(repository_id),
    }
    return offsets[region]


def decode_config_id(data: bytes) -> bytes:
    marker = b"repository_id\xc4\x10"
    start = data.index(marker) + len(marker)
    return data[start : start + 16]


@pytest.mark.parametrize(
    ("region", "error"),
    [
        ("magic", UnsupportedFormatError),
        ("version", IntegrityError),
        ("reserved", IntegrityError),  # version 1 requires zero reserved bytes
        ("map-header", IntegrityError),
        ("created", IntegrityError),
        ("compression-level", IntegrityError),
        ("mac-first", IntegrityError),
        ("mac-last", IntegrityError),
        # The repository id is in the associated data of every key slot, so no slot opens.
        ("repository-id", WrongKeyError),
    ],
)
def test_config_flip(
    root: Path, template: Template, region: str, error: type[BackvaultError]
) -> None:
    path = root / "config"
    flip_byte(path, config_offset(path.read_bytes(), region))

    expect_error(root, template, "config", "config", error)


def key_slot_offset(data: bytes, region: str) -> int:
    slot = decode_slot(data, subject="slot")
    offsets = {
        "magic": 0,
        "version": 4,
        "map-header": 8,
        "kind": data.index(b"recovery"),
        "slot-id": data.index(slot.slot_id),
        "salt": data.index(slot.parameters["salt"]),
        "escrow-nonce": data.index(slot.parameters["escrow_nonce"]),
        "escrow": data.index(slot.parameters["escrow"]) + 5,
        "nonce": data.index(slot.nonce),
        "wrapped-ciphertext": data.index(slot.wrapped),
        "wrapped-tag": len(data) - 1,
    }
    return offsets[region]


@pytest.mark.parametrize(
    ("region", "error"),
    [
        ("magic", UnsupportedFormatError),
        ("version", IntegrityError),
        ("map-header", IntegrityError),
        ("kind", WrongKeyError),  # no longer a recovery slot, so it is not tried
        ("slot-id", WrongKeyError),
        ("salt", WrongKeyError),
        ("nonce", WrongKeyError),
        ("wrapped-ciphertext", WrongKeyError),
        ("wrapped-tag", WrongKeyError),
        ("escrow-nonce", WrongKeyError),  # every parameter is associated data of the wrap
        ("escrow", WrongKeyError),
    ],
)
def test_key_slot_flip(
    root: Path, template: Template, region: str, error: type[BackvaultError]
) -> None:
    name, path = pick_object(root, "keys")
    flip_byte(path, key_slot_offset(path.read_bytes(), region))

    expect_error(root, template, "keys", name, error)


def created_value_offset(data: bytes) -> int:
    """Return the offset of the 8-byte value after the msgpack key "created"."""
    return data.index(b"created") + len(b"created") + 1  # skip the uint64 type byte


def slot_metadata_offset(data: bytes, region: str) -> int:
    offsets = {
        "reserved": 6,
        "label": data.index(b"recovery key"),
        "created": created_value_offset(data) + 7,
    }
    return offsets[region]


@pytest.mark.parametrize(
    ("region", "error"),
    [
        ("reserved", IntegrityError),  # version 1 requires zero reserved bytes
        ("label", WrongKeyError),  # the whole slot is associated data of the wrap
        ("created", WrongKeyError),
    ],
)
def test_key_slot_metadata_flip(
    root: Path, template: Template, region: str, error: type[BackvaultError]
) -> None:
    name, path = pick_object(root, "keys")
    flip_byte(path, slot_metadata_offset(path.read_bytes(), region))

    expect_error(root, template, "keys", name, error)


def pack_offset(data: bytes, region: str) -> int:
    header_length = int.from_bytes(data[-4:], "little")
    header_offset = len(data) - 4 - header_length
    # Blob lengths are in the encrypted header, so the last blob's tag is found as the
    # byte before the header.
    offsets = {
        "magic": 0,
        "version": 4,
        "reserved": 6,
        "salt-first": 8,
        "salt-last": 39,
        "first-blob": 40,
        "middle-blob": (40 + header_offset) // 2,
        "last-blob-tag": header_offset - 1,
        "header-ciphertext": header_offset,
        "header-tag": len(data) - 5,
        "trailer-first": len(data) - 4,
        "trailer-last": len(data) - 1,
    }
    return offsets[region]


@pytest.mark.parametrize(
    ("region", "error"),
    [
        ("magic", UnsupportedFormatError),
        ("version", IntegrityError),
        ("reserved", IntegrityError),
        ("salt-first", IntegrityError),
        ("salt-last", IntegrityError),
        ("first-blob", IntegrityError),
        ("middle-blob", IntegrityError),
        ("last-blob-tag", IntegrityError),
        ("header-ciphertext", IntegrityError),
        ("header-tag", IntegrityError),
        ("trailer-first", IntegrityError),
        ("trailer-last", IntegrityError),
    ],
)
def test_pack_flip(
    root: Path, template: Template, region: str, error: type[BackvaultError]
) -> None:
    name, path = pick_object(root, "data")
    flip_byte(path, pack_offset(path.read_bytes(), region))

    expect_error(root, template, "data", name, error)


@pytest.mark.parametrize("region", ["reserved", "salt-first", "header-tag", "trailer-first"])
def test_pack_header_flip_without_index(
    root: Path, template: Template, region: str
) -> None:
    """The path that recovers packs left by a crash reads only the pack's own header."""
    name, path = pick_object(root, "data")
    flip_byte(path, pack_offset(path.read_bytes(), region))
    repository = open_unlocked(root, template.recovery_key)

    with pytest.raises(IntegrityError):
        repository.read_pack_header(name, path.stat().st_size)


def blob_location(repository: Repository, file_name: str) -> tuple[str, PackEntry]:
    """Return the pack and entry of the first chunk of ``file_name`` in the latest snapshot."""
    repository.load_index()
    for path, node in api.list_files(repository, "latest"):
        if path.endswith(b"/" + file_name.encode()):
            location = repository.index.lookup(node.content[0])
            assert location is not None
            return location.pack_id, location.entry
    raise AssertionError(f"{file_name} is not in the latest snapshot")


@pytest.mark.parametrize("position", ["first", "middle", "tag"])
def test_blob_flip_fails_load(root: Path, template: Template, position: str) -> None:
    repository = open_unlocked(root, template.recovery_key)
    pack_id, entry = blob_location(repository, "beta.bin")
    offset = {
        "first": entry.offset,
        "middle": entry.offset + entry.length // 2,
        "tag": entry.offset + entry.length - 1,
    }[position]
    flip_byte(object_path(root, "data", pack_id), offset)

    with pytest.raises(IntegrityError):
        repository.load_blob(entry.blob_id, BlobType.DATA)


# Every byte of the small files ----------------------------------------------------------


def flip_every_byte(root: Path, template: Template, kind: str) -> None:
    """Flip each byte of one file in turn and require every read to raise an expected error."""
    name, path = pick_object(root, kind)
    original = path.read_bytes()
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            READERS[kind](root, template.recovery_key, name)
        except TAMPER_ERRORS:
            pass
        else:
            raise AssertionError(f"{kind} {name}: flipping byte {offset} went unnoticed")
    path.write_bytes(original)


@pytest.mark.parametrize("kind", ["config", "keys", "index", "snapshots"])
def test_every_byte_flip_detected(root: Path, template: Template, kind: str) -> None:
    flip_every_byte(root, template, kind)


def test_pack_flips_fail_decryption(root: Path, template: Template) -> None:
    """The pack's own cryptography, not only its name, covers every byte."""
    name, path = pick_object(root, "data")
    original = path.read_bytes()
    repository = open_unlocked(root, template.recovery_key)
    data_key = repository.subkeys.data

    for offset in range(0, len(original), 97):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        pack = bytes(damaged)
        with pytest.raises((IntegrityError, UnsupportedFormatError)):
            for entry in parse_pack(data_key, pack, subject=f"pack {name}"):
                repository.load_blob_from(name, pack, entry)


def test_check_read_data_finds_flips(root: Path, template: Template) -> None:
    name, path = pick_object(root, "data")
    original = path.read_bytes()
    repository = open_unlocked(root, template.recovery_key)
    assert api.check(repository, read_data=True).ok

    missed = []
    for offset in range(0, len(original), 97):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        result = api.check(repository, read_data=True)
        if result.ok or not any(name in error for error in result.errors):
            missed.append(offset)
    path.write_bytes(original)

    assert missed == []
    assert len(original) // 97 > 100, "the pack is large enough to test many offsets"
    assert api.check(repository, read_data=True).ok


# Truncated files ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["config", "keys", "index", "snapshots", "data"])
@pytest.mark.parametrize("length", ["0", "4", "8", "39", "40", "half", "minus-1", "minus-16"])
def test_truncated_file(root: Path, template: Template, kind: str, length: str) -> None:
    name, path = pick_object(root, kind)
    size = path.stat().st_size
    new_length = {"half": size // 2, "minus-1": size - 1, "minus-16": size - 16}.get(length)
    truncate(path, int(length) if new_length is None else new_length)

    expect_error(root, template, kind, name, IntegrityError)


def test_check_reports_truncated_pack(root: Path, template: Template) -> None:
    name, path = pick_object(root, "data")
    truncate(path, path.stat().st_size // 2)
    repository = open_unlocked(root, template.recovery_key)

    result = api.check(repository)

    assert f"pack {name} is truncated" in result.errors


def test_check_reports_missing_pack(root: Path, template: Template) -> None:
    name, path = pick_object(root, "data")
    path.unlink()
    repository = open_unlocked(root, template.recovery_key)

    result = api.check(repository)

    assert f"pack {name} is in the index but missing" in result.errors
    assert any("is in missing pack" in error for error in result.errors)


# Swapped index entries ------------------------------------------------------------------


def rewrite_index(repository: Repository, change: Callable[[IndexedPack], IndexedPack]) -> None:
    """Replace every index file by one whose packs went through ``change``."""
    names = object_names(Path(repository.backend.location), "index")
    packs = [change(pack) for name in names for pack in repository.read_index_file(name)]
    for name in names:
        repository.backend.delete("index", name)
    repository.write_index_file(packs)


def swap_two_data_entries(pack: IndexedPack, fields: tuple[str, ...]) -> IndexedPack:
    data_positions = [i for i, entry in enumerate(pack.entries)
                      if entry.blob_type == BlobType.DATA]
    if len(data_positions) < 2:
        return pack
    first, second = data_positions[:2]
    entries = list(pack.entries)
    a, b = entries[first], entries[second]
    entries[first] = dataclasses.replace(a, **{field: getattr(b, field) for field in fields})
    entries[second] = dataclasses.replace(b, **{field: getattr(a, field) for field in fields})
    return IndexedPack(pack.pack_id, pack.salt, entries)


@pytest.mark.parametrize(
    "fields", [("offset", "length"), ("blob_id",)], ids=["positions", "blob-ids"]
)
def test_swapped_index_entries_fail(
    root: Path, template: Template, fields: tuple[str, ...]
) -> None:
    repository = open_unlocked(root, template.recovery_key)
    swapped_ids: list[bytes] = []

    def change(pack: IndexedPack) -> IndexedPack:
        result = swap_two_data_entries(pack, fields)
        changed = [new for new, old in zip(result.entries, pack.entries, strict=True)
                   if new != old]
        swapped_ids.extend(entry.blob_id for entry in changed)
        return result

    rewrite_index(repository, change)
    assert len(swapped_ids) >= 2

    reopened = open_unlocked(root, template.recovery_key)
    reopened.load_index()
    for blob_id in swapped_ids:
        with pytest.raises(IntegrityError):
            reopened.load_blob(blob_id, BlobType.DATA)

    result = api.check(reopened, read_data=True)
    assert any("header does not match the index" in error for error in result.errors)


# Foreign and replaced files -------------------------------------------------------------


def test_snapshot_replaced_by_index_file(root: Path, template: Template) -> None:
    index_name = object_names(root, "index")[0]
    snapshot_path = object_path(root, "snapshots", template.first_snapshot)
    shutil.copyfile(object_path(root, "index", index_name), snapshot_path)

    error = expect_error(root, template, "snapshots", template.first_snapshot,
                         UnsupportedFormatError)
    assert "BVSN" in error.message


def test_snapshot_replaced_by_relabelled_index(root: Path, template: Template) -> None:
    """An index file passed off as a snapshot fails: the header is associated data."""
    index_name = object_names(root, "index")[0]
    data = bytearray(object_path(root, "index", index_name).read_bytes())
    data[0:4] = MAGIC_SNAPSHOT
    object_path(root, "snapshots", template.first_snapshot).write_bytes(bytes(data))

    expect_error(root, template, "snapshots", template.first_snapshot, IntegrityError)


def test_snapshot_replaced_by_other_snapshot(root: Path, template: Template) -> None:
    shutil.copyfile(
        object_path(root, "snapshots", template.second_snapshot),
        object_path(root, "snapshots", template.first_snapshot),
    )

    expect_error(root, template, "snapshots", template.first_snapshot, IntegrityError)
    assert not api.check(open_unlocked(root, template.recovery_key)).ok


def test_index_replaced_by_other_index(root: Path, template: Template) -> None:
    first, second = object_names(root, "index")[:2]
    shutil.copyfile(object_path(root, "index", second), object_path(root, "index", first))

    expect_error(root, template, "index", first, IntegrityError)


def test_config_replaced_by_key_slot(root: Path, template: Template) -> None:
    _, slot_path = pick_object(root, "keys")
    shutil.copyfile(slot_path, root / "config")

    with pytest.raises(UnsupportedFormatError, match="BVCF"):
        api.open_repository(str(root))


# Keys, versions and missing repositories ------------------------------------------------


def test_wrong_recovery_key(root: Path) -> None:
    with pytest.raises(WrongKeyError):
        open_unlocked(root, RecoveryKey.generate())


def test_recovery_key_of_other_repository(root: Path, tmp_path: Path) -> None:
    _, other_key = api.init_repository(str(tmp_path / "other"))

    with pytest.raises(WrongKeyError):
        open_unlocked(root, other_key)


def test_newer_config_version_before_mac(root: Path, template: Template) -> None:
    set_byte(root / "config", 4, 2)

    with pytest.raises(UnsupportedFormatError, match="format version 2 is newer"):
        api.open_repository(str(root))
    # With the right key, the version error still comes first, not a MAC failure.
    with pytest.raises(UnsupportedFormatError, match="format version 2 is newer"):
        open_unlocked(root, template.recovery_key)


@pytest.mark.parametrize("kind", ["keys", "index", "snapshots", "data"])
def test_newer_file_version_rejected(
    root: Path, template: Template, kind: str
) -> None:
    name, path = pick_object(root, kind)
    set_byte(path, 4, 2)

    error = expect_error(root, template, kind, name, UnsupportedFormatError)
    assert "format version 2 is newer" in error.message


@pytest.mark.parametrize("kind", ["config", "keys", "index", "snapshots", "data"])
def test_wrong_magic_rejected(root: Path, template: Template, kind: str) -> None:
    name, path = pick_object(root, kind)
    data = bytearray(path.read_bytes())
    data[0:4] = b"ZZZZ"
    path.write_bytes(bytes(data))

    expect_error(root, template, kind, name, UnsupportedFormatError)


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.open_repository(str(tmp_path / "absent"))


def test_empty_folder_is_not_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.open_repository(str(tmp_path))


def test_repository_without_config(root: Path) -> None:
    (root / "config").unlink()

    with pytest.raises(RepositoryNotFoundError):
        api.open_repository(str(root))


# Locks and key slots --------------------------------------------------------------------


def test_damaged_lock_blocks(root: Path, template: Template) -> None:
    repository = open_unlocked(root, template.recovery_key)
    lock = repository.lock(exclusive=False)
    assert lock.name is not None
    lock_path = object_path(root, "locks", lock.name)
    data = lock_path.read_bytes()
    lock.release()
    damaged = bytearray(data)
    damaged[-1] ^= 0x01
    lock_path.write_bytes(bytes(damaged))

    with pytest.raises(RepositoryLockedError):
        api.check(repository)


def test_damaged_other_slot_allows_unlock(root: Path, template: Template) -> None:
    repository = open_unlocked(root, template.recovery_key)
    other = make_recovery_slot(RecoveryKey.generate(), repository.master_key,
                               repository.repository_id)
    repository.add_key_slot(other)
    truncate(object_path(root, "keys", other.name), len(encode_slot(other)) // 2)

    open_unlocked(root, template.recovery_key)


# Restore after damage, through the command line -----------------------------------------


def backvault_command() -> list[str]:
    script = Path(sys.executable).with_name("backvault")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "backvault.cli.main"]


def test_restore_continues_past_damaged_file(
    root: Path, template: Template, tmp_path: Path
) -> None:
    repository = open_unlocked(root, template.recovery_key)
    pack_id, entry = blob_location(repository, "beta.bin")
    flip_byte(object_path(root, "data", pack_id), entry.offset + entry.length // 2)
    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(template.recovery_key.format() + "\n")
    target = tmp_path / "restored"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BACKVAULT_")}
    environment["BACKVAULT_RECOVERY_KEY_FILE"] = str(key_file)

    completed = subprocess.run(
        [*backvault_command(), "restore", "latest", "--repo", str(root), "--target",
         str(target)],
        capture_output=True, env=environment, timeout=60, check=False,
    )

    assert completed.returncode == 13, completed.stderr
    stderr_lines = completed.stderr.decode().splitlines()
    assert stderr_lines == [
        "error: 1 file(s) could not be restored intact",
        "hint: The damaged files are listed above; run 'backvault check --read-data'.",
    ]
    damaged_lines = [line for line in completed.stdout.decode().splitlines()
                     if line.startswith("damaged")]
    assert len(damaged_lines) == 1
    assert damaged_lines[0].endswith(str(template.source / "beta.bin"))

    restored = target / template.source.relative_to("/")
    for name, content in FILES_SECOND.items():
        if name != "beta.bin":
            assert (restored / name).read_bytes() == content, name
    assert (restored / "beta.bin").stat().st_size == len(FILES_SECOND["beta.bin"])

"""Tests of the local directory backend: atomic writes, listing, names and byte ranges."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backvault.storage import ObjectNotFoundError, StorageError
from backvault.storage.local import TEMPORARY_PREFIX, LocalBackend

PACK_ID = "ab" + "0" * 62
RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(tmp_path / "repository")
    backend.create_repository()
    return backend


def all_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def temporary_files(root: Path) -> list[Path]:
    return [path for path in all_files(root) if path.name.startswith(TEMPORARY_PREFIX)]


def fail_inside(root: Path, function: str, error: OSError) -> Callable[..., object]:
    """Wrap the ``os`` function ``function`` so that it fails on descriptors under ``root``.

    A wrapped ``os.write`` first writes half of the data, as a disk does when it fills up
    in the middle of a file. Descriptors of other files work as before, so the test
    runner's own output is not affected.
    """
    real: Callable[..., object] = getattr(os, function)
    real_root = os.path.realpath(root)

    def wrapper(fd: int, *arguments: object) -> object:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(real_root + os.sep):
            return real(fd, *arguments)
        if function == "write":
            data = memoryview(arguments[0])  # type: ignore[arg-type]
            real(fd, data[: len(data) // 2])
        raise error

    return wrapper


# Atomic writes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "error"),
    [
        ("write", OSError(errno.ENOSPC, "No space left on device")),
        ("fsync", OSError(errno.EIO, "Input/output error")),
    ],
)
def test_failed_write_leaves_nothing(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch, function: str, error: OSError
) -> None:
    root = Path(backend.location)
    before = all_files(root)
    monkeypatch.setattr(os, function, fail_inside(root, function, error))

    with pytest.raises(StorageError) as raised:
        backend.write("data", PACK_ID, b"x" * 100_000)
    monkeypatch.undo()

    assert error.strerror is not None
    assert error.strerror in raised.value.message
    assert PACK_ID in raised.value.message
    assert all_files(root) == before
    assert not backend.exists("data", PACK_ID)
    assert list(backend.list("data")) == []


def test_failed_write_keeps_existing_object(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.write("index", "index1", b"complete")
    root = Path(backend.location)
    error = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", fail_inside(root, "write", error))

    with pytest.raises(StorageError):
        backend.write("index", "index1", b"complete")
    monkeypatch.undo()

    assert backend.read("index", "index1") == b"complete"
    assert temporary_files(root) == []


def test_write_leaves_no_temporary_file(backend: LocalBackend) -> None:
    backend.write("data", PACK_ID, b"pack")
    root = Path(backend.location)
    assert temporary_files(root) == []
    assert (root / "data" / "ab" / PACK_ID).read_bytes() == b"pack"


# Listing ------------------------------------------------------------------------------


def test_list_skips_temporary_files(backend: LocalBackend) -> None:
    root = Path(backend.location)
    backend.write("keys", "slot1", b"1")
    backend.write("data", PACK_ID, b"22")
    (root / "keys" / f"{TEMPORARY_PREFIX}0123456789abcdef").write_bytes(b"partial")
    (root / "data" / "ab" / f"{TEMPORARY_PREFIX}fedcba9876543210").write_bytes(b"partial")

    assert list(backend.list("keys")) == [("slot1", 1)]
    assert list(backend.list("data")) == [(PACK_ID, 2)]

    # A fresh temporary file may belong to a write in progress, so it stays by default.
    assert backend.remove_temporary_files() == 0
    assert len(temporary_files(root)) == 2

    two_days_ago = time.time() - 2 * 24 * 3600
    for path in temporary_files(root):
        os.utime(path, (two_days_ago, two_days_ago))
    assert backend.remove_temporary_files() == 2
    assert temporary_files(root) == []
    assert list(backend.list("keys")) == [("slot1", 1)]


def test_list_skips_directories(backend: LocalBackend) -> None:
    (Path(backend.location) / "snapshots" / "not-an-object").mkdir()
    backend.write("snapshots", "snapshot1", b"s")
    assert list(backend.list("snapshots")) == [("snapshot1", 1)]


# Names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [("keys", ""), ("keys", "a/b"), ("keys", ".hidden"), ("data", "../x"), ("other", "name")],
)
def test_invalid_names_rejected(backend: LocalBackend, kind: str, name: str) -> None:
    operations: list[Callable[[], object]] = [
        lambda: backend.write(kind, name, b"x"),
        lambda: backend.read(kind, name),
        lambda: backend.exists(kind, name),
        lambda: backend.delete(kind, name),
    ]
    for operation in operations:
        with pytest.raises(ValueError):
            operation()
    assert temporary_files(Path(backend.location)) == []


def test_missing_object_errors(backend: LocalBackend) -> None:
    with pytest.raises(ObjectNotFoundError, match="keys/absent"):
        backend.read("keys", "absent")
    with pytest.raises(ObjectNotFoundError, match="keys/absent"):
        backend.delete("keys", "absent")
    assert not backend.exists("keys", "absent")


def test_create_repository_rejects_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "unrelated.txt").write_text("x")
    with pytest.raises(StorageError, match="not empty"):
        LocalBackend(tmp_path).create_repository()


# Byte ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (100, None),
        (0, 10),
        (0, 1024),
        (500, 24),
        (1023, 1),
        (1000, 100),  # runs past the end: the bytes up to the end
        (1024, None),  # starts at the end: no bytes
        (2000, 5),  # starts after the end: no bytes
        (10, 0),
    ],
)
def test_read_byte_range(backend: LocalBackend, offset: int, length: int | None) -> None:
    backend.write("data", PACK_ID, RANGE_DATA)
    end = len(RANGE_DATA) if length is None else offset + length
    assert backend.read("data", PACK_ID, offset, length) == RANGE_DATA[offset:end]


def test_read_from_after_end_to_end(backend: LocalBackend) -> None:
    backend.write("data", PACK_ID, RANGE_DATA)
    assert backend.read("data", PACK_ID, 2000) == b""


def test_read_large_object_whole(backend: LocalBackend) -> None:
    data = os.urandom(8 * 1024 * 1024 + 3)
    backend.write("data", PACK_ID, data)
    assert backend.read("data", PACK_ID) == data
    assert backend.read("data", PACK_ID, 5 * 1024 * 1024, 3 * 1024 * 1024) == data[
        5 * 1024 * 1024 : 8 * 1024 * 1024
    ]

"""A repository in a local directory.

Layout: ``config`` and the folders ``keys/``, ``index/``, ``snapshots/``, ``locks/`` and
``data/00`` to ``data/ff``, where a pack lives in the folder named by the first two hex
digits of its id. An object is written to a temporary name in its final folder, flushed
to disk, then renamed, and the folder is flushed too, so a crash leaves either nothing or
the whole object. Temporary names start with ``.tmp-`` and are never listed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from backvault.storage.base import KINDS, ObjectNotFoundError, StorageError

TEMPORARY_PREFIX = ".tmp-"
# A temporary file untouched this long belongs to a writer that died: no write of one
# object takes a day.
STALE_TEMPORARY_AGE = 24 * 3600  # seconds


class LocalBackend:
    """Objects stored as files under one directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).absolute()
        self._root_string = str(self._root)

    @property
    def location(self) -> str:
        return str(self._root)

    def exists_repository(self) -> bool:
        return (self._root / "config").is_file()

    def create_repository(self) -> None:
        if self._root.exists() and not self._root.is_dir():
            raise StorageError(
                f"{self._root} exists and is not a directory",
                hint="Give --repo a new or empty directory for the repository.",
            )
        if self._root.exists() and any(self._root.iterdir()):
            raise StorageError(
                f"{self._root} exists and is not empty",
                hint="Choose a new or empty directory for the repository.",
            )
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            for kind in KINDS[1:]:
                (self._root / kind).mkdir()
            for prefix in range(256):
                (self._root / "data" / f"{prefix:02x}").mkdir()
        except OSError as error:
            raise StorageError(f"cannot create the repository at {self._root}: {error}") from error

    def exists(self, kind: str, name: str) -> bool:
        return self._path(kind, name).is_file()

    def read(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path_string(kind, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{kind}/{name} is missing from {self._root}") from None
        except OSError as error:
            raise StorageError(f"cannot read {path}: {error}") from error
        try:
            if length is None:
                length = max(0, os.fstat(fd).st_size - offset)
            return self._read_range(fd, offset, length)
        except OSError as error:
            raise StorageError(f"cannot read {path}: {error}") from error
        finally:
            os.close(fd)

    @staticmethod
    def _read_range(fd: int, offset: int, length: int) -> bytes:
        data = os.pread(fd, length, offset)
        if len(data) == length or not data:
            return data

        # pread may return less than asked for large reads; collect the rest.
        parts = [data]
        received = len(data)
        while received < length:
            part = os.pread(fd, length - received, offset + received)
            if not part:
                break
            parts.append(part)
            received += len(part)
        return b"".join(parts)

    def write(self, kind: str, name: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(kind, name)
        temporary = path.with_name(TEMPORARY_PREFIX + secrets.token_hex(8))
        try:
            # Recreate a folder that a copy tool dropped because it was empty.
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_durably(temporary, data)
            os.replace(temporary, path)
            self._flush_directory(path.parent)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise StorageError(f"cannot write {path}: {error}") from error

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        if kind == "config":
            config = self._root / "config"
            if config.is_file():
                yield "config", config.stat().st_size
            return
        folder = self._root / kind
        if kind == "keys" and not folder.is_dir():
            # Unlike the other folders, keys/ is never empty in a working repository.
            raise StorageError(
                f"the folder {folder} is missing, so no key slot can be read",
                hint="Restore the keys folder from a copy of the repository.",
            )
        if kind == "data":
            entries = sorted(_existing_entries(folder), key=lambda entry: entry.name)
            folders = [Path(entry.path) for entry in entries if entry.is_dir()]
        else:
            folders = [folder]
        for directory in folders:
            for entry in _existing_entries(directory):
                if entry.name.startswith(TEMPORARY_PREFIX) or not entry.is_file():
                    continue
                yield entry.name, entry.stat().st_size

    def delete(self, kind: str, name: str) -> None:
        try:
            self._path(kind, name).unlink()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{kind}/{name} is missing from {self._root}") from None

    def remove_temporary_files(self, *, older_than: float = STALE_TEMPORARY_AGE) -> int:
        """Remove ``.tmp-`` files left by crashed writers; return how many were removed.

        Only files not modified for ``older_than`` seconds are removed, so that a write in
        progress in another process is never cut short.
        """
        removed = 0
        cutoff = time.time() - older_than
        for directory, _, files in os.walk(self._root):
            for file_name in files:
                if not file_name.startswith(TEMPORARY_PREFIX):
                    continue
                path = os.path.join(directory, file_name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
        return removed

    def _path(self, kind: str, name: str) -> Path:
        return Path(self._path_string(kind, name))

    def _path_string(self, kind: str, name: str) -> str:
        # Plain strings, not Path objects: a restore reads one object per blob.
        if kind not in KINDS:
            raise ValueError(f"unknown object kind {kind!r}")
        if kind == "config":
            return f"{self._root_string}/config"
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid object name {name!r}")
        if kind == "data":
            return f"{self._root_string}/data/{name[:2]}/{name}"
        return f"{self._root_string}/{kind}/{name}"

    @staticmethod
    def _write_durably(path: Path, data: bytes | bytearray | memoryview) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _flush_directory(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        except OSError as error:
            # Some filesystems cannot flush a directory; the rename is still atomic there.
            if error.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise
        finally:
            os.close(fd)


def _existing_entries(directory: Path) -> list[os.DirEntry[str]]:
    """List a folder; a missing folder is empty.

    Copy and sync tools often drop empty folders, so a repository copied that way lacks
    ``locks/`` and most ``data/xx`` folders, and ``index/`` and ``snapshots/`` before the
    first backup, and must still work.
    """
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError:
        return []

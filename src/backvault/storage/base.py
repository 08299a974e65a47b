"""The backend interface: a flat object store with a few kinds of object.

A repository is a set of immutable objects, each named by kind and name. Every backend
(a local directory, a backvault server, S3) offers the same small set of operations, so
the repository layer never knows where its bytes live. Writes are atomic: an object is
either absent or complete, never half-written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from backvault.errors import BackvaultError

# The kinds of object, and so the top-level folders of a local repository.
KINDS = ("config", "keys", "data", "index", "snapshots", "locks")


class StorageError(BackvaultError):
    """Reading or writing the storage failed."""


class ObjectNotFoundError(StorageError):
    """The object does not exist in the storage."""


class Backend(Protocol):
    """Operations that every storage backend provides."""

    @property
    def location(self) -> str: ...

    def exists_repository(self) -> bool: ...

    def create_repository(self) -> None: ...

    def exists(self, kind: str, name: str) -> bool: ...

    def read(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def write(self, kind: str, name: str, data: bytes | bytearray | memoryview) -> None: ...

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        """Yield ``(name, size in bytes)`` of every complete object of ``kind``."""
        ...

    def delete(self, kind: str, name: str) -> None: ...

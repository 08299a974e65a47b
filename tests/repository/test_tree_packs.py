"""Trees live in packs of their own, and a walk over a snapshot reads those packs whole."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from backvault import api
from backvault.repository.pack import BlobType
from backvault.repository.repository import Repository
from backvault.storage import Backend, LocalBackend


class CountingBackend:
    """A local backend that counts reads of pack files."""

    def __init__(self, inner: LocalBackend) -> None:
        self._inner = inner
        self.pack_reads = 0

    @property
    def location(self) -> str:
        return self._inner.location

    def exists_repository(self) -> bool:
        return self._inner.exists_repository()

    def create_repository(self) -> None:
        self._inner.create_repository()

    def exists(self, kind: str, name: str) -> bool:
        return self._inner.exists(kind, name)

    def read(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if kind == "data":
            self.pack_reads += 1
        return self._inner.read(kind, name, offset, length)

    def write(self, kind: str, name: str, data: bytes | bytearray | memoryview) -> None:
        self._inner.write(kind, name, data)

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        return self._inner.list(kind)

    def delete(self, kind: str, name: str) -> None:
        self._inner.delete(kind, name)


def make_tree(root: Path, directories: int) -> None:
    for number in range(directories):
        folder = root / f"folder-{number:03d}"
        folder.mkdir(parents=True)
        (folder / "file.txt").write_bytes(f"content {number}\n".encode() * 50)


def test_trees_and_data_in_separate_packs(repository: Repository, tmp_path: Path) -> None:
    make_tree(tmp_path / "source", 20)

    api.backup(repository, [os.fsencode(tmp_path / "source")])

    packs = list(repository.index.packs())
    kinds = [{entry.blob_type for entry in pack.entries} for pack in packs]
    assert {BlobType.TREE} in kinds
    assert {BlobType.DATA} in kinds
    assert all(len(kind) == 1 for kind in kinds)


def test_walk_reads_tree_pack_once(
    repository: Repository, tmp_path: Path
) -> None:
    make_tree(tmp_path / "source", 60)
    api.backup(repository, [os.fsencode(tmp_path / "source")])
    recovery_key = repository.recovery_key()
    counting = CountingBackend(LocalBackend(repository.backend.location))
    backend: Backend = counting
    reopened = Repository.open(backend)
    reopened.unlock_with_recovery_key(recovery_key)

    listed = list(api.list_files(reopened, "latest"))

    # 60 folders and the directories above the source: far more trees than reads.
    assert len([path for path, node in listed if node.type == "dir"]) > 60
    assert counting.pack_reads == 1

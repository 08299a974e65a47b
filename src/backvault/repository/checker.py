"""Check: verify that every snapshot can be restored from what is stored.

Without ``read_data`` the check opens the config, every key slot, index file, snapshot
and tree, and confirms that every blob they need is indexed in a pack that exists and is
at least as long as the end of its last indexed blob. With ``read_data`` it also reads
every pack whole, confirms that its name is the BLAKE3 hash of its bytes, decrypts its
header and every blob, and compares each blob's keyed hash with its id.

Packs that no index lists (left by an interrupted backup) are reported as notes, not
errors: they hold nothing a snapshot needs, and the next backup indexes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from backvault.errors import BackvaultError
from backvault.repository.format import object_id
from backvault.repository.pack import BlobType, parse_pack
from backvault.repository.repository import Repository
from backvault.repository.tree import Node
from backvault.storage import StorageError


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    snapshots: int = 0
    trees: int = 0
    packs_read: int = 0
    blobs_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


class Checker:
    def __init__(
        self, repository: Repository, *, progress: Callable[[str], None] | None = None
    ) -> None:
        self._repository = repository
        self._progress = progress or (lambda message: None)
        self.result = CheckResult()
        self._pack_sizes: dict[str, int] = {}

    def run(self, *, read_data: bool = False) -> CheckResult:
        self._progress("checking key slots")
        self._check_key_slots()
        self._progress("loading index")
        self._check_index()
        self._progress("checking packs")
        self._check_packs_exist()
        self._progress("checking snapshots and trees")
        self._check_snapshots()
        if read_data:
            self._progress("reading all data")
            self._read_all_packs()
        return self.result

    def _check_key_slots(self) -> None:
        try:
            self._repository.key_slots()
        except BackvaultError as error:
            self.result.errors.append(error.message)

    def _check_index(self) -> None:
        for name, _ in list(self._repository.backend.list("index")):
            try:
                for pack in self._repository.read_index_file(name):
                    self._repository.index.add_pack(pack)
            except BackvaultError as error:
                self.result.errors.append(error.message)

    def _check_packs_exist(self) -> None:
        self._pack_sizes = dict(self._repository.backend.list("data"))
        for pack in self._repository.index.packs():
            size = self._pack_sizes.get(pack.pack_id)
            if size is None:
                self.result.errors.append(f"pack {pack.pack_id} is in the index but missing")
                continue
            if pack.entries:
                last = pack.entries[-1]
                if size < last.offset + last.length:
                    self.result.errors.append(f"pack {pack.pack_id} is truncated")
        for pack_id in self._pack_sizes:
            if not self._repository.index.has_pack(pack_id):
                self.result.notes.append(
                    f"pack {pack_id} is not in the index (left by an interrupted backup; "
                    "the next backup indexes it)"
                )

    def _check_snapshots(self) -> None:
        seen: set[bytes] = set()
        for name, _ in list(self._repository.backend.list("snapshots")):
            try:
                snapshot = self._repository.load_snapshot(name)
            except BackvaultError as error:
                self.result.errors.append(error.message)
                continue
            self.result.snapshots += 1
            self._check_tree(snapshot.tree, f"snapshot {name[:8]}", seen)

    def _check_tree(self, tree_id: bytes, where: str, seen: set[bytes]) -> None:
        stack = [(tree_id, where)]
        while stack:
            current, path = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            try:
                nodes = self._repository.load_tree(current)
            except BackvaultError as error:
                self.result.errors.append(f"{path}: {error.message}")
                continue
            self.result.trees += 1
            for node in nodes:
                child = path + "/" + node.name.decode(errors="replace")
                stack.extend(self._check_node(node, child))

    def _check_node(self, node: Node, path: str) -> list[tuple[bytes, str]]:
        if node.type == "dir":
            if node.subtree is None:
                self.result.errors.append(f"{path}: directory without a tree")
                return []
            return [(node.subtree, path)]
        for blob_id in node.content:
            location = self._repository.index.lookup(blob_id)
            if location is None or location.entry.blob_type != BlobType.DATA:
                self.result.errors.append(f"{path}: data blob {blob_id.hex()[:16]} is missing")
            elif location.pack_id not in self._pack_sizes:
                self.result.errors.append(
                    f"{path}: data blob {blob_id.hex()[:16]} is in missing pack "
                    f"{location.pack_id}"
                )
        return []

    def _read_all_packs(self) -> None:
        for pack_id in sorted(self._pack_sizes):
            try:
                self._read_pack(pack_id)
            except (BackvaultError, StorageError) as error:
                self.result.errors.append(error.message)

    def _read_pack(self, pack_id: str) -> None:
        subject = f"pack {pack_id}"
        data = self._repository.backend.read("data", pack_id)
        self.result.packs_read += 1
        if object_id(data) != pack_id:
            self.result.errors.append(f"{subject}: content does not match its name")
            return

        entries = parse_pack(self._repository.subkeys.data, data, subject=subject)
        indexed = self._repository.index.get_pack(pack_id)
        if indexed is not None and indexed.entries != entries:
            self.result.errors.append(f"{subject}: header does not match the index")

        for entry in entries:
            try:
                self._repository.load_blob_from(pack_id, data, entry)
            except BackvaultError as error:
                self.result.errors.append(error.message)
            self.result.blobs_read += 1

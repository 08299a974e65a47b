"""The repository: config, key slots, index, blobs, trees and snapshots over a backend.

Write order keeps every state readable after a crash: packs first, then the index files
that list them, then the snapshot that refers to their blobs. A crash can leave packs
that no index lists; :meth:`Repository.index_orphan_packs` finds them by reading their
encrypted headers, so the next backup reuses their blobs.
"""

from __future__ import annotations

import hmac
import threading
from collections import OrderedDict
from typing import Any

import blake3
import zstandard

from backvault.crypto.aead import PackCipher
from backvault.crypto.keys import MasterKey, Subkeys
from backvault.crypto.recovery import RecoveryKey
from backvault.crypto.slots import (
    KIND_RECOVERY,
    KeySlot,
    decode_slot,
    encode_slot,
    make_recovery_slot,
    open_recovery_slot,
    read_escrowed_recovery_key,
)
from backvault.errors import (
    BackvaultError,
    IntegrityError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    UnsupportedFormatError,
    UsageError,
    WrongKeyError,
)
from backvault.repository.config import (
    Config,
    decode_config,
    encode_config,
    verify_config_mac,
)
from backvault.repository.format import (
    MAGIC_INDEX,
    MAGIC_SNAPSHOT,
    check_header,
    object_id,
    open_encrypted_file,
    seal_encrypted_file,
)
from backvault.repository.index import Index, IndexedPack, decode_index, encode_index
from backvault.repository.lock import Lock, remove_locks
from backvault.repository.pack import (
    PREFIX_SIZE,
    TRAILER,
    BlobType,
    Compression,
    PackEntry,
    open_blob,
    open_header,
    read_header_length,
)
from backvault.repository.snapshot import Snapshot, decode_snapshot, encode_snapshot
from backvault.repository.tree import Node, decode_tree, decode_tree_maps
from backvault.storage import Backend, ObjectNotFoundError

PACK_CIPHER_CACHE_SIZE = 1024  # pack keys kept; about 1 KiB each
TREE_PACK_CACHE = 64 * 1024 * 1024  # bytes of whole tree packs kept in memory


class Repository:
    """An open repository. Most methods need :meth:`unlock` to have succeeded first."""

    def __init__(self, backend: Backend, config: Config, config_bytes: bytes) -> None:
        self.backend = backend
        self.config = config
        self._config_bytes = config_bytes
        self._master_key: MasterKey | None = None
        self._subkeys: Subkeys | None = None
        self.index = Index()
        self._indexed_files: set[str] = set()
        self.damaged_snapshots: list[tuple[str, str]] = []
        self._tree_packs: OrderedDict[str, bytes] = OrderedDict()
        self._tree_pack_bytes = 0
        self._tree_pack_lock = threading.Lock()
        # Deriving a pack key costs an HKDF; restore and backup read many blobs per pack.
        self._pack_ciphers: dict[bytes, PackCipher] = {}

    # Opening and creating -------------------------------------------------------------

    @classmethod
    def create(cls, backend: Backend) -> tuple[Repository, RecoveryKey]:
        """Create a repository with a new master key and a recovery key slot."""
        if backend.exists_repository():
            raise RepositoryExistsError(
                f"a repository already exists at {backend.location}",
                hint="Use it as it is, or choose another location for a new one.",
            )
        backend.create_repository()

        config = Config.new()
        master_key = MasterKey.generate()
        recovery_key = RecoveryKey.generate()
        subkeys = master_key.derive_subkeys(config.repository_id)

        slot = make_recovery_slot(recovery_key, master_key, config.repository_id)
        backend.write("keys", slot.name, encode_slot(slot))

        # The config goes last: a repository without it does not exist yet, so a crash
        # during init leaves nothing that looks usable.
        config_bytes = encode_config(config, subkeys.config_mac)
        backend.write("config", "config", config_bytes)

        repository = cls(backend, config, config_bytes)
        repository._set_master_key(master_key)
        return repository, recovery_key

    @classmethod
    def open(cls, backend: Backend) -> Repository:
        if not backend.exists_repository():
            raise RepositoryNotFoundError(
                f"no repository found at {backend.location}",
                hint="Check the path in --repo or BACKVAULT_REPOSITORY, "
                "or create one with 'backvault init'.",
            )
        config_bytes = backend.read("config", "config")
        return cls(backend, decode_config(config_bytes), config_bytes)

    @property
    def repository_id(self) -> bytes:
        return self.config.repository_id

    # Keys -----------------------------------------------------------------------------

    def key_slots(self) -> list[KeySlot]:
        """Return the key slots, oldest first; raise if any slot is damaged."""
        slots, damage = self._read_key_slots()
        if damage:
            raise damage[0]
        return slots

    def _read_key_slots(self) -> tuple[list[KeySlot], list[BackvaultError]]:
        """Return the slots that decode, and the errors of those that do not."""
        slots: list[KeySlot] = []
        damage: list[BackvaultError] = []
        for name, _ in self.backend.list("keys"):
            try:
                data = self.backend.read("keys", name)
                slots.append(decode_slot(data, subject=f"key slot {name}"))
            except (IntegrityError, UnsupportedFormatError) as error:
                damage.append(error)
        return sorted(slots, key=lambda slot: slot.created_ns), damage

    def unlock_with_recovery_key(self, recovery_key: RecoveryKey) -> None:
        """Open the first recovery slot that the key opens.

        A damaged slot does not stop the others from being tried. If no slot opens and
        some slot was damaged, the damage is reported rather than a wrong key, because
        the damaged slot may be the one this key belongs to.
        """
        slots, damage = self._read_key_slots()
        for slot in slots:
            if slot.kind != KIND_RECOVERY:
                continue
            try:
                master_key = open_recovery_slot(slot, recovery_key, self.repository_id)
            except IntegrityError:
                continue
            self._set_master_key(master_key)
            return
        if damage:
            raise damage[0]
        raise WrongKeyError(
            "the recovery key does not open this repository",
            hint="Check that the key belongs to this repository; compare it with the "
            "recovery sheet printed at 'backvault init'.",
        )

    def unlock_with_master_key(self, master_key: MasterKey) -> None:
        self._set_master_key(master_key)

    def _set_master_key(self, master_key: MasterKey) -> None:
        subkeys = master_key.derive_subkeys(self.repository_id)
        verify_config_mac(self._config_bytes, subkeys.config_mac)
        self._master_key = master_key
        self._subkeys = subkeys

    @property
    def subkeys(self) -> Subkeys:
        if self._subkeys is None:
            raise UsageError(
                "the repository is not unlocked",
                hint="Unlock it first, for example with unlock_with_recovery_key().",
            )
        return self._subkeys

    @property
    def master_key(self) -> MasterKey:
        if self._master_key is None:
            raise UsageError(
                "the repository is not unlocked",
                hint="Unlock it first, for example with unlock_with_recovery_key().",
            )
        return self._master_key

    def recovery_key(self) -> RecoveryKey:
        """Return the recovery key, decrypted from its escrowed copy."""
        for slot in self._read_key_slots()[0]:
            if slot.kind == KIND_RECOVERY:
                return read_escrowed_recovery_key(slot, self.master_key, self.repository_id)
        raise UsageError(
            "this repository has no recovery key slot",
            hint="It was removed; another key slot still opens the repository.",
        )

    def add_key_slot(self, slot: KeySlot) -> None:
        self.backend.write("keys", slot.name, encode_slot(slot))

    def remove_key_slot(self, slot_name: str) -> None:
        slots = self.key_slots()
        if not any(slot.name == slot_name for slot in slots):
            raise UsageError(
                f"no key slot named {slot_name}", hint="List the slots with 'backvault key list'."
            )
        if len(slots) == 1:
            raise UsageError(
                f"key slot {slot_name} is the last one; removing it would lock you out",
                hint="Add another protection first.",
            )
        self.backend.delete("keys", slot_name)

    def remove_locks(self, *, all_hosts: bool) -> int:
        return remove_locks(self.backend, self.subkeys.metadata, all_hosts=all_hosts)

    def lock(self, *, exclusive: bool) -> Lock:
        lock = Lock(self.backend, self.subkeys.metadata, exclusive=exclusive)
        lock.acquire()
        return lock

    # Index ----------------------------------------------------------------------------

    def load_index(self) -> None:
        for name, _ in list(self.backend.list("index")):
            if name in self._indexed_files:
                continue
            for pack in self.read_index_file(name):
                self.index.add_pack(pack)
            self._indexed_files.add(name)

    def read_index_file(self, name: str) -> list[IndexedPack]:
        subject = f"index {name}"
        data = self.backend.read("index", name)
        check_header(data, MAGIC_INDEX, subject=subject)
        self._verify_object_name(data, name, subject)
        body = open_encrypted_file(MAGIC_INDEX, self.subkeys.metadata, data, subject=subject)
        return decode_index(body, subject=subject)

    def write_index_file(self, packs: list[IndexedPack]) -> str:
        data = seal_encrypted_file(MAGIC_INDEX, self.subkeys.metadata, encode_index(packs))
        name = object_id(data)
        self.backend.write("index", name, data)
        self._indexed_files.add(name)
        return name

    def read_pack_header(self, pack_id: str, pack_size: int) -> IndexedPack:
        subject = f"pack {pack_id}"
        if pack_size < PREFIX_SIZE + TRAILER.size:
            raise IntegrityError(subject)
        prefix = self.backend.read("data", pack_id, 0, PREFIX_SIZE)
        trailer = self.backend.read("data", pack_id, pack_size - TRAILER.size, TRAILER.size)
        header_length = read_header_length(trailer, pack_size, subject=subject)
        header_offset = pack_size - TRAILER.size - header_length
        sealed_header = self.backend.read("data", pack_id, header_offset, header_length)
        entries = open_header(
            self.subkeys.data, prefix, sealed_header, header_offset, subject=subject
        )
        return IndexedPack(pack_id, prefix[-32:], entries)

    def reconcile_index(self) -> tuple[list[str], list[str]]:
        """Bring the in-memory index in line with the packs that exist.

        Packs that no index file lists (left by a crash) are indexed from their headers
        and recorded in a new index file. Indexed packs that no longer exist are dropped
        from memory, so that a backup stores their blobs again. Returns the ids of the
        recovered packs and of the missing ones. A pack whose header cannot be read is
        left alone for ``check`` to report.
        """
        existing = dict(self.backend.list("data"))
        missing = [pack.pack_id for pack in self.index.packs() if pack.pack_id not in existing]
        for pack_id in missing:
            self.index.remove_pack(pack_id)
        return self._index_orphan_packs(existing), missing

    def _index_orphan_packs(self, existing: dict[str, int]) -> list[str]:
        recovered: list[IndexedPack] = []
        for pack_id, size in existing.items():
            if self.index.has_pack(pack_id):
                continue
            try:
                pack = self.read_pack_header(pack_id, size)
            except BackvaultError:
                continue
            self.index.add_pack(pack)
            recovered.append(pack)
        if recovered:
            self.write_index_file(recovered)
        return [pack.pack_id for pack in recovered]

    # Blobs and trees ------------------------------------------------------------------

    def blob_id(self, plaintext: bytes | memoryview) -> bytes:
        return blake3.blake3(plaintext, key=self.subkeys.chunk_id).digest()

    def load_blob(self, blob_id: bytes, blob_type: BlobType) -> bytes:
        """Read, decrypt, decompress and verify one blob."""
        subject = f"blob {blob_id.hex()[:16]}"
        location = self.index.lookup(blob_id)
        if location is None or location.entry.blob_type != blob_type:
            raise ObjectNotFoundError(f"{subject} is not in the index")

        entry = location.entry
        if blob_type == BlobType.TREE and location.tree_pack:
            sealed = self._read_from_tree_pack(location.pack_id, entry)
        else:
            sealed = self.backend.read("data", location.pack_id, entry.offset, entry.length)
        return self._open_sealed_blob(location.pack_id, location.salt, entry, sealed)

    def _read_from_tree_pack(self, pack_id: str, entry: PackEntry) -> bytes:
        """Read a tree blob from a pack of trees, fetching and keeping the pack whole.

        A walk over a snapshot reads thousands of trees. Fetching their pack once turns
        thousands of small reads, each a request on a remote backend, into a few.
        """
        with self._tree_pack_lock:
            pack = self._tree_packs.get(pack_id)
        if pack is None:
            pack = self.backend.read("data", pack_id)
            with self._tree_pack_lock:
                while self._tree_packs and self._tree_pack_bytes + len(pack) > TREE_PACK_CACHE:
                    _, evicted = self._tree_packs.popitem(last=False)
                    self._tree_pack_bytes -= len(evicted)
                self._tree_packs[pack_id] = pack
                self._tree_pack_bytes += len(pack)
        return pack[entry.offset : entry.offset + entry.length]

    def load_blob_run(
        self, pack_id: str, salt: bytes, entries: list[PackEntry]
    ) -> list[bytes | BackvaultError]:
        """Read neighbouring data blobs of one pack with a single read.

        Returns each blob's plaintext, or the error that opening that blob raised, so one
        damaged blob does not cost its neighbours. A failed read raises.
        """
        start = entries[0].offset
        end = entries[-1].offset + entries[-1].length
        data = self.backend.read("data", pack_id, start, end - start)
        results: list[bytes | BackvaultError] = []
        for entry in entries:
            sealed = data[entry.offset - start : entry.offset - start + entry.length]
            if entry.blob_type != BlobType.DATA:
                results.append(IntegrityError(f"blob {entry.blob_id.hex()[:16]}"))
                continue
            try:
                results.append(self._open_sealed_blob(pack_id, salt, entry, sealed))
            except BackvaultError as error:
                results.append(error)
        return results

    def load_blob_from(self, pack_id: str, pack: bytes, entry: PackEntry) -> bytes:
        """Decrypt and verify one blob of a pack already read whole."""
        sealed = pack[entry.offset : entry.offset + entry.length]
        return self._open_sealed_blob(pack_id, pack[8:PREFIX_SIZE], entry, sealed)

    def _open_sealed_blob(
        self, pack_id: str, salt: bytes, entry: PackEntry, sealed: bytes
    ) -> bytes:
        subject = f"blob {entry.blob_id.hex()[:16]} in pack {pack_id}"
        payload = open_blob(self._pack_cipher(salt), entry, sealed, subject=subject)
        plaintext = self._decompress(payload, entry.compression, entry.raw_length, subject)

        if blake3.blake3(plaintext, key=self.subkeys.chunk_id).digest() != entry.blob_id:
            raise IntegrityError(subject)
        return plaintext

    def _pack_cipher(self, salt: bytes) -> PackCipher:
        cipher = self._pack_ciphers.get(salt)
        if cipher is None:
            if len(self._pack_ciphers) >= PACK_CIPHER_CACHE_SIZE:
                self._pack_ciphers.clear()
            cipher = PackCipher(self.subkeys.data, salt)
            self._pack_ciphers[salt] = cipher
        return cipher

    @staticmethod
    def _decompress(payload: bytes, compression: int, raw_length: int, subject: str) -> bytes:
        if compression == Compression.NONE:
            return payload
        try:
            plaintext: bytes = zstandard.ZstdDecompressor().decompress(
                payload, max_output_size=raw_length
            )
        except zstandard.ZstdError:
            raise IntegrityError(subject) from None
        if len(plaintext) != raw_length:
            raise IntegrityError(subject)
        return plaintext

    def load_tree(self, tree_id: bytes) -> list[Node]:
        data = self.load_blob(tree_id, BlobType.TREE)
        return decode_tree(data, subject=f"tree {tree_id.hex()[:16]}")

    def load_tree_maps(self, tree_id: bytes) -> list[dict[str, Any]]:
        data = self.load_blob(tree_id, BlobType.TREE)
        return decode_tree_maps(data, subject=f"tree {tree_id.hex()[:16]}")

    # Snapshots ------------------------------------------------------------------------

    def save_snapshot(self, snapshot: Snapshot) -> str:
        data = seal_encrypted_file(
            MAGIC_SNAPSHOT, self.subkeys.metadata, encode_snapshot(snapshot)
        )
        snapshot.snapshot_id = object_id(data)
        self.backend.write("snapshots", snapshot.snapshot_id, data)
        return snapshot.snapshot_id

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        subject = f"snapshot {snapshot_id}"
        data = self.backend.read("snapshots", snapshot_id)
        check_header(data, MAGIC_SNAPSHOT, subject=subject)
        self._verify_object_name(data, snapshot_id, subject)
        body = open_encrypted_file(MAGIC_SNAPSHOT, self.subkeys.metadata, data, subject=subject)
        return decode_snapshot(body, snapshot_id, subject=subject)

    @staticmethod
    def _verify_object_name(data: bytes, name: str, subject: str) -> None:
        """Reject a file whose bytes do not hash to its name: a copy of another file
        under this name would otherwise pass its own authentication."""
        if not hmac.compare_digest(object_id(data), name):
            raise IntegrityError(subject)

    def list_snapshots(self) -> list[Snapshot]:
        """Return the snapshots that can be read, oldest first.

        A damaged snapshot file is left out and recorded in ``damaged_snapshots``, so that
        one bad file does not hide every other snapshot. ``check`` reports it as an error.
        """
        snapshots: list[Snapshot] = []
        self.damaged_snapshots = []
        for name, _ in self.backend.list("snapshots"):
            try:
                snapshots.append(self.load_snapshot(name))
            except (IntegrityError, UnsupportedFormatError) as error:
                self.damaged_snapshots.append((name, error.message))
        return sorted(snapshots, key=lambda snapshot: (snapshot.time_ns, snapshot.snapshot_id))

    def find_snapshot(self, reference: str) -> Snapshot:
        """Resolve ``latest``, a full snapshot id or a unique prefix of one."""
        if reference == "latest":
            snapshots = self.list_snapshots()
            if not snapshots and self.damaged_snapshots:
                name, _ = self.damaged_snapshots[0]
                raise IntegrityError(f"snapshot {name}")
            if not snapshots:
                raise UsageError(
                    "the repository has no snapshots yet",
                    hint="Make one with 'backvault backup PATH'.",
                )
            return snapshots[-1]

        reference = reference.lower()
        matches = [name for name, _ in self.backend.list("snapshots") if name.startswith(reference)]
        if not reference or len(matches) == 0:
            raise UsageError(
                f"no snapshot matches {reference!r}",
                hint="List the snapshots with 'backvault snapshots', or use 'latest'.",
            )
        if len(matches) > 1:
            raise UsageError(
                f"{reference!r} matches {len(matches)} snapshots",
                hint="Give more digits of the snapshot id.",
            )
        return self.load_snapshot(matches[0])


__all__ = ["BackvaultError", "Repository"]

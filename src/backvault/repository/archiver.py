"""Backup: walk source paths, store new chunks and trees, and write a snapshot.

The walk works relative to open directory descriptors (``openat`` and ``fstatat``), so
paths of any length can be read, and never follows symlinks. Regular files are opened
with ``O_NONBLOCK`` and checked with ``fstat`` after opening, so a FIFO that replaced a
file is never read and never blocks. Special files are recorded from their metadata
only.

A file whose size, mtime, ctime and inode match the parent snapshot keeps its chunk
list without being read. A file that changes while it is read is stored as read, with
the size of the bytes actually stored, and listed in the snapshot as changed.
"""

from __future__ import annotations

import errno
import grp
import io
import os
import pwd
import socket
import stat
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pyfastcdc import FastCDC

from backvault import __version__
from backvault.repository.blobsaver import BlobSaver
from backvault.repository.pack import BlobType
from backvault.repository.repository import Repository
from backvault.repository.snapshot import Snapshot
from backvault.repository.tree import Node, encode_tree_maps

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
STREAM_BUFFER_SIZE = 1024 * 1024  # bytes per read of a small file
# os.listdir on a descriptor returns str; encoding back by hand is what os.fsencode does,
# without its per-call overhead on directories of thousands of names.
FS_ENCODING = sys.getfilesystemencoding()


@dataclass
class BackupProgress:
    files: int = 0
    directories: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    files_unchanged: int = 0
    current: bytes = b""


@dataclass
class BackupResult:
    snapshot: Snapshot
    skipped: list[tuple[bytes, str]] = field(default_factory=list)
    changed: list[bytes] = field(default_factory=list)


# A node as stored in a tree blob, decoded by msgpack (see tree.py for the keys).
NodeMap = dict[str, Any]

# A pending tree entry: a node, or the stored map of an unchanged file, plus futures for
# its content or subtree id.
PendingNode = tuple[Node | NodeMap, list[Future[bytes]] | Future[bytes] | None]


@lru_cache(maxsize=1024)
def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=1024)
def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def normalize_sources(paths: list[bytes]) -> list[bytes]:
    """Return the absolute, sorted source paths, with symlinks above each source resolved.

    A source that is itself a symlink is kept as a symlink, as everything below a source
    is. But ``/var/run/app`` where ``/var/run`` links to ``/run`` is recorded as
    ``/run/app``, because a backup never follows symlinks inside the tree it walks.
    """
    normalized = set()
    for path in paths:
        absolute = os.path.normpath(os.path.abspath(path))
        if absolute == b"/":
            normalized.add(absolute)
            continue
        parent, name = os.path.split(absolute)
        normalized.add(os.path.join(os.path.realpath(parent), name))
    return sorted(normalized)


def node_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "chardev"
    if stat.S_ISBLK(mode):
        return "blockdev"
    return "socket"


def node_from_stat(name: bytes, st: os.stat_result) -> Node:
    return Node(
        name=name,
        type=node_type(st.st_mode),
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
        mtime=st.st_mtime_ns,
        ctime=st.st_ctime_ns,
        inode=st.st_ino,
        device=st.st_dev,
        links=st.st_nlink,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        rdev=st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
    )


def read_xattrs(target: int | bytes, *, follow_symlinks: bool = True) -> dict[bytes, bytes]:
    """Return the extended attributes of an open file or a path; none where unsupported."""
    try:
        names = os.listxattr(target, follow_symlinks=follow_symlinks)
    except OSError:
        return {}
    values: dict[bytes, bytes] = {}
    for name in names:
        try:
            values[os.fsencode(name)] = os.getxattr(target, name, follow_symlinks=follow_symlinks)
        except OSError:
            continue
    return values


def _not_a_directory(node: Node) -> OSError:
    if node.type == "symlink":
        return OSError(
            errno.ENOTDIR, "a parent directory is a symlink, which backups do not follow"
        )
    return OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))


class Archiver:
    def __init__(
        self,
        repository: Repository,
        saver: BlobSaver,
        *,
        parent: Snapshot | None = None,
        progress: Callable[[BackupProgress], None] | None = None,
    ) -> None:
        self._repository = repository
        self._saver = saver
        self._parent = parent
        self._progress_callback = progress
        self._last_progress = 0.0
        self.progress = BackupProgress()
        self.skipped: list[tuple[bytes, str]] = []
        self.changed: list[bytes] = []
        config = repository.config
        self._small_file_limit = config.chunker_min
        self._chunker = FastCDC(
            avg_size=config.chunker_avg - config.chunker_min,
            min_size=config.chunker_min,
            max_size=config.chunker_max,
            seed=repository.subkeys.chunker_seed,
        )

    # The snapshot ---------------------------------------------------------------------

    def run(self, paths: list[bytes]) -> Snapshot:
        started = time.time_ns()
        sources = normalize_sources(paths)
        parent_root = self._load_parent_nodes(self._parent.tree if self._parent else None)

        if b"/" in sources:
            root_nodes = self._walk_root(parent_root)
        else:
            root_nodes = self._walk_virtual(b"/", self._source_tree(sources), parent_root)
        root_id = self._save_tree(root_nodes).result()
        self._saver.close()

        statistics = self._saver.statistics
        snapshot = Snapshot(
            time_ns=started,
            hostname=socket.gethostname(),
            username=_user_name(os.getuid()) or str(os.getuid()),
            paths=sources,
            tree=root_id,
            parent=self._parent.snapshot_id if self._parent else None,
            skipped=self.skipped,
            changed=self.changed,
            summary={
                "files": self.progress.files,
                "files_unchanged": self.progress.files_unchanged,
                "directories": self.progress.directories,
                "bytes_read": self.progress.bytes_read,
                "bytes_total": self.progress.bytes_total,
                "blobs_new": statistics.blobs_new,
                "bytes_added": statistics.bytes_new_raw,
                "bytes_stored": statistics.bytes_stored,
                "duration_ns": time.time_ns() - started,
            },
            program_version=__version__,
        )
        self._repository.save_snapshot(snapshot)
        return snapshot

    def _walk_root(self, parent_nodes: dict[bytes, NodeMap]) -> list[PendingNode]:
        """Record the whole file system: the root directory is itself the source."""
        root_fd = os.open(b"/", DIRECTORY_FLAGS)
        try:
            return self._walk_directory(root_fd, b"", parent_nodes)
        finally:
            os.close(root_fd)

    @staticmethod
    def _source_tree(sources: list[bytes]) -> dict[bytes, object]:
        """Arrange the source paths as nested dicts; ``None`` marks a source itself."""
        root: dict[bytes, object] = {}
        for source in sources:
            parts = [part for part in source.split(b"/") if part]
            level = root
            for part in parts[:-1]:
                child = level.setdefault(part, {})
                if child is None:
                    break  # an ancestor is itself a source and covers this path
                assert isinstance(child, dict)
                level = child
            else:
                level[parts[-1]] = None
        return root

    def _walk_virtual(
        self, path: bytes, children: dict[bytes, object], parent_nodes: dict[bytes, NodeMap]
    ) -> list[PendingNode]:
        """Record the directories above the sources, with their own metadata."""
        pending: list[PendingNode] = []
        for name in sorted(children):
            child_path = os.path.join(path, name)
            grandchildren = children[name]
            try:
                st = os.lstat(child_path)
            except OSError as error:
                self._skip_sources(child_path, grandchildren, error)
                continue

            if grandchildren is None:
                entry = self._record_source(child_path, name, st, parent_nodes.get(name))
                if entry is not None:
                    pending.append(entry)
                continue

            assert isinstance(grandchildren, dict)
            node = node_from_stat(name, st)
            if node.type != "dir":
                self._skip_sources(child_path, grandchildren, _not_a_directory(node))
                continue
            parent_child = parent_nodes.get(name)
            child_nodes = self._walk_virtual(
                child_path, grandchildren, self._load_parent_nodes(self._subtree_of(parent_child))
            )
            pending.append((node, self._save_tree(child_nodes)))
        return pending

    def _skip_sources(self, path: bytes, children: object, error: OSError) -> None:
        """Skip the source ``path``, or every source below ``path`` if it is an ancestor."""
        if not isinstance(children, dict):
            self._skip(path, error)
            return
        for name in sorted(children):
            self._skip_sources(os.path.join(path, name), children[name], error)

    def _record_source(
        self, path: bytes, name: bytes, st: os.stat_result, previous: NodeMap | None
    ) -> PendingNode | None:
        parent_dir, _ = os.path.split(path)
        try:
            dir_fd = os.open(parent_dir, DIRECTORY_FLAGS)
        except OSError as error:
            self._skip(path, error)
            return None
        try:
            return self._record_entry(dir_fd, path, name, st, previous)
        finally:
            os.close(dir_fd)

    # Directories ----------------------------------------------------------------------

    def _walk_directory(
        self, dir_fd: int, path: bytes, parent_nodes: dict[bytes, NodeMap]
    ) -> list[PendingNode]:
        try:
            names = sorted(
                [name.encode(FS_ENCODING, "surrogateescape") for name in os.listdir(dir_fd)]
            )
        except OSError as error:
            self._skip(path, error)
            return []

        pending: list[PendingNode] = []
        for name in names:
            child_path = path + b"/" + name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError as error:
                self._skip(child_path, error)
                continue
            entry = self._record_entry(dir_fd, child_path, name, st, parent_nodes.get(name))
            if entry is not None:
                pending.append(entry)
        return pending

    def _record_entry(
        self, dir_fd: int, path: bytes, name: bytes, st: os.stat_result, previous: NodeMap | None
    ) -> PendingNode | None:
        self.progress.current = path
        if previous is not None and stat.S_ISREG(st.st_mode):
            unchanged = self._unchanged_file(previous, st)
            if unchanged is not None:
                return unchanged, None

        node = node_from_stat(name, st)

        if node.type == "dir":
            return self._record_directory(dir_fd, path, node, previous)
        if node.type == "file":
            return self._record_file(dir_fd, path, node)
        if node.type == "symlink":
            try:
                node.target = os.readlink(name, dir_fd=dir_fd)
            except OSError as error:
                self._skip(path, error)
                return None
        return node, None

    def _record_directory(
        self, dir_fd: int, path: bytes, node: Node, previous: NodeMap | None
    ) -> PendingNode | None:
        try:
            child_fd = os.open(node.name, DIRECTORY_FLAGS, dir_fd=dir_fd)
        except OSError as error:
            self._skip(path, error)
            return None
        try:
            node.xattrs = read_xattrs(child_fd)
            parent_nodes = self._load_parent_nodes(self._subtree_of(previous))
            children = self._walk_directory(child_fd, path, parent_nodes)
        finally:
            os.close(child_fd)
        self.progress.directories += 1
        return node, self._save_tree(children)

    # Files ----------------------------------------------------------------------------

    def _record_file(self, dir_fd: int, path: bytes, node: Node) -> PendingNode | None:
        self.progress.files += 1
        self.progress.bytes_total += node.size

        try:
            fd = os.open(node.name, READ_FLAGS, dir_fd=dir_fd)
        except OSError as error:
            self._skip(path, error)
            return None
        try:
            return self._read_file(fd, path, node)
        except OSError as error:
            self._skip(path, error)
            return None
        finally:
            os.close(fd)

    def _unchanged_file(self, previous: NodeMap, st: os.stat_result) -> NodeMap | None:
        """Return the stored map of a file that did not change since the parent snapshot.

        Size, mtime, ctime and inode must match; any change of mode, owner, link count or
        extended attributes also changes the ctime. The stored map is reused as it is, so
        an unchanged tree encodes to the same bytes and the same id without new objects.
        """
        try:
            same = (
                previous["type"] == "file"
                and not previous.get("changed", False)
                and previous["size"] == st.st_size
                and previous["mtime"] == st.st_mtime_ns
                and previous["ctime"] == st.st_ctime_ns
                and previous["inode"] == st.st_ino
                and self._repository.index.contains_all(previous["content"])
            )
        except (KeyError, TypeError):
            return None
        if not same:
            return None

        if previous["device"] != st.st_dev:
            # Some file systems renumber devices at each mount; keep hard-link grouping
            # right for this snapshot without reading the file again.
            previous = {**previous, "device": st.st_dev}
        self.progress.files += 1
        self.progress.files_unchanged += 1
        self.progress.bytes_total += st.st_size
        self._report_progress()
        return previous

    def _read_file(self, fd: int, path: bytes, node: Node) -> PendingNode | None:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            # Replaced by something else since the directory was read: record what is
            # there now only if it is harmless to do so.
            self._skip(path, OSError(errno.EINVAL, "changed type during backup"))
            return None

        node.xattrs = read_xattrs(fd)
        futures: list[Future[bytes]] = []
        size = 0
        if before.st_size <= self._small_file_limit:
            for block in self._read_small(fd):
                futures.append(self._saver.save(BlobType.DATA, block))
                size += len(block)
        else:
            with io.FileIO(fd, "rb", closefd=False) as stream:
                for chunk in self._chunker.cut_stream(stream):
                    futures.append(self._saver.save(BlobType.DATA, bytes(chunk.data)))
                    size += chunk.length
                    self.progress.bytes_read += chunk.length
                    self._report_progress()

        after = os.fstat(fd)
        if (
            size != before.st_size
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
        ):
            node.changed = True
            self.changed.append(path)
        node.size = size
        node.mtime = after.st_mtime_ns
        node.ctime = after.st_ctime_ns
        self._report_progress()
        return node, futures

    def _read_small(self, fd: int) -> list[bytes]:
        """Read a small file to its end, however much it grew since it was examined."""
        blocks: list[bytes] = []
        current = bytearray()
        while True:
            data = os.read(fd, STREAM_BUFFER_SIZE)
            if not data:
                break
            current += data
            self.progress.bytes_read += len(data)
            if len(current) >= self._small_file_limit:
                # The file grew past the chunker's minimum; cut it into fixed blocks
                # rather than hold all of it.
                blocks.append(bytes(current))
                current = bytearray()
        if current or not blocks:
            blocks.append(bytes(current))
        if blocks == [b""]:
            return []
        return blocks

    # Trees ----------------------------------------------------------------------------

    def _save_tree(self, pending: list[PendingNode]) -> Future[bytes]:
        maps = [self._resolve(node, futures) for node, futures in pending]
        return self._saver.save_if_new(BlobType.TREE, encode_tree_maps(maps))

    @staticmethod
    def _resolve(
        node: Node | NodeMap, futures: list[Future[bytes]] | Future[bytes] | None
    ) -> NodeMap:
        if isinstance(node, dict):
            return node
        if isinstance(futures, list):
            node.content = [future.result() for future in futures]
        elif futures is not None:
            node.subtree = futures.result()
        return node.to_map()

    @staticmethod
    def _subtree_of(previous: NodeMap | None) -> bytes | None:
        if previous is None or previous.get("type") != "dir":
            return None
        subtree = previous.get("subtree")
        return subtree if isinstance(subtree, bytes) else None

    def _load_parent_nodes(self, tree_id: bytes | None) -> dict[bytes, NodeMap]:
        if tree_id is None or tree_id not in self._repository.index:
            return {}
        try:
            maps = self._repository.load_tree_maps(tree_id)
            return {bytes(item["name"]): item for item in maps}
        except Exception:
            # The parent snapshot only speeds the backup up: if a parent tree cannot be
            # read, every file under it is read again, which is always correct.
            return {}

    # Reporting ------------------------------------------------------------------------

    def _skip(self, path: bytes, error: OSError) -> None:
        self.skipped.append((path, error.strerror or str(error)))

    def _report_progress(self) -> None:
        if self._progress_callback is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= 0.1:
            self._last_progress = now
            self._progress_callback(self.progress)

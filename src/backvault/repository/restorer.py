"""Restore: recreate a snapshot's tree under a target directory.

Each regular file is written to a temporary name in its final directory and renamed over
the final name when it is complete, so a restore over an existing tree never leaves a
file half old, half new, never writes through a symlink or an existing hard link, and
leaves every restored file exactly as long as in the snapshot. Runs of zero bytes that
fill a whole chunk are skipped with a seek instead of written, so sparse files come back
sparse. Like the backup, the restore works relative to open directory descriptors, so
paths longer than ``PATH_MAX`` work.

A blob that is missing or fails authentication damages only the files that use it: the
restore goes on with the other files and reports the damaged ones at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from backvault.errors import BackvaultError
from backvault.repository.index import BlobLocation
from backvault.repository.pack import BlobType
from backvault.repository.repository import Repository
from backvault.repository.snapshot import Snapshot
from backvault.repository.tree import Node

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TEMPORARY_PREFIX = b".backvault-restore-"
PREFETCH_BLOBS = 32  # blobs read and decrypted ahead of the writer
PREFETCH_BYTES = 32 * 1024 * 1024  # plaintext bytes in flight, at most one chunk more

# A blob of a file being restored: its id and the future of its plaintext.
LoadedBlob = tuple[bytes, "_LoadedBlob"]
# Bounds on one read that covers several neighbouring blobs of a pack.
MAX_GROUP_BLOBS = 64
MAX_GROUP_BYTES = 4 * 1024 * 1024  # bytes of ciphertext

FILE_TYPE_BITS = {
    "fifo": stat.S_IFIFO,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
    "socket": stat.S_IFSOCK,
}


@dataclass
class RestoreProgress:
    files: int = 0
    bytes_written: int = 0
    current: bytes = b""


@dataclass
class RestoreResult:
    files: int = 0
    directories: int = 0
    bytes_written: int = 0
    damaged: list[tuple[bytes, str]] = field(default_factory=list)
    warnings: list[tuple[bytes, str]] = field(default_factory=list)


def path_selected(path: bytes, includes: list[bytes]) -> bool:
    """Return true if ``path`` is an include, lies under one, or lies above one."""
    if not includes:
        return True
    for include in includes:
        if path == include or path.startswith(include.rstrip(b"/") + b"/"):
            return True
        if include.startswith(path.rstrip(b"/") + b"/"):
            return True
    return False


class Restorer:
    def __init__(
        self,
        repository: Repository,
        *,
        includes: list[bytes] | None = None,
        progress: Callable[[RestoreProgress], None] | None = None,
        workers: int = 2,
    ) -> None:
        self._repository = repository
        self._includes = [
            os.path.normpath(b"/" + include.lstrip(b"/")) for include in includes or []
        ]
        self._progress_callback = progress
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore")
        self._hard_links: dict[tuple[int, int], bytes] = {}
        self._target = b""
        self._is_root = os.geteuid() == 0
        self.progress = RestoreProgress()
        self.result = RestoreResult()

    def run(self, snapshot: Snapshot, target: bytes) -> RestoreResult:
        os.makedirs(target, exist_ok=True)
        self._target = os.path.abspath(target)
        root_fd = os.open(self._target, DIRECTORY_FLAGS)
        try:
            self._restore_tree(root_fd, b"", snapshot.tree)
        finally:
            os.close(root_fd)
            self._pool.shutdown(wait=True)
        return self.result

    # Trees ----------------------------------------------------------------------------

    def _restore_tree(self, dir_fd: int, path: bytes, tree_id: bytes) -> None:
        try:
            nodes = self._repository.load_tree(tree_id)
        except BackvaultError as error:
            self._damaged(path or b"/", error)
            return

        selected: list[tuple[bytes, Node]] = []
        for node in nodes:
            child_path = path + b"/" + node.name
            if not path_selected(child_path, self._includes):
                continue
            if b"/" in node.name or node.name in (b"", b".", b".."):
                self._damaged(child_path, BackvaultError("invalid file name in tree"))
                continue
            selected.append((child_path, node))

        # One stream of blobs for all files of the directory, so that reading and
        # decrypting the next files overlaps with writing this one.
        stream = _BlobStream(
            self._pool,
            self._repository,
            [blob_id for _, node in selected if node.type == "file" for blob_id in node.content],
        )
        for child_path, node in selected:
            self.progress.current = child_path
            blobs = stream.take(len(node.content) if node.type == "file" else 0)
            try:
                self._restore_node(dir_fd, child_path, node, blobs)
            except OSError as error:
                self.result.warnings.append((child_path, error.strerror or str(error)))
            finally:
                blobs.close()

    def _restore_node(
        self, dir_fd: int, path: bytes, node: Node, blobs: _FileBlobs
    ) -> None:
        if node.type == "dir":
            self._restore_directory(dir_fd, path, node)
        elif node.type == "file":
            self._restore_file(dir_fd, path, node, blobs)
        elif node.type == "symlink":
            self._replace_entry(dir_fd, node.name)
            os.symlink(node.target or b"", node.name, dir_fd=dir_fd)
            self._apply_metadata(dir_fd, path, node)
        else:
            self._restore_special(dir_fd, path, node)

    def _restore_directory(self, dir_fd: int, path: bytes, node: Node) -> None:
        try:
            st = os.stat(node.name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self._replace_entry(dir_fd, node.name)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkdir(node.name, 0o700, dir_fd=dir_fd)

        child_fd = os.open(node.name, DIRECTORY_FLAGS, dir_fd=dir_fd)
        try:
            if node.subtree is not None:
                self._restore_tree(child_fd, path, node.subtree)
            self.result.directories += 1
            # A directory's own metadata goes last: restoring its entries changes its
            # mtime, and a read-only mode would stop the entries from being created.
            self._apply_metadata_fd(child_fd, path, node)
        finally:
            os.close(child_fd)
        self._set_times(dir_fd, node)

    def _restore_special(self, dir_fd: int, path: bytes, node: Node) -> None:
        self._replace_entry(dir_fd, node.name)
        mode = FILE_TYPE_BITS[node.type] | node.mode
        try:
            if node.type == "fifo":
                os.mkfifo(node.name, node.mode, dir_fd=dir_fd)
            else:
                os.mknod(node.name, mode, node.rdev, dir_fd=dir_fd)
        except PermissionError as error:
            self.result.warnings.append((path, f"cannot create {node.type}: {error.strerror}"))
            return
        self._apply_metadata(dir_fd, path, node)

    # Files ----------------------------------------------------------------------------

    def _restore_file(
        self, dir_fd: int, path: bytes, node: Node, blobs: _FileBlobs
    ) -> None:
        if node.links > 1 and self._link_existing(dir_fd, path, node):
            return

        temporary = TEMPORARY_PREFIX + secrets.token_hex(8).encode()
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
        try:
            damage, end = self._write_content(fd, blobs)
            if end != node.size:
                # Trailing zero chunks were skipped, or the content was damaged.
                os.ftruncate(fd, node.size)
            self._apply_metadata_fd(fd, path, node)
            # The times go on the open file; the rename below does not change them.
            os.utime(fd, ns=(node.mtime, node.mtime))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=dir_fd)
            raise
        os.close(fd)

        self._replace_entry(dir_fd, node.name, keep_files=True)
        os.rename(temporary, node.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self.result.files += 1
        self.progress.files += 1
        if damage is not None:
            self._damaged(path, damage)
        if node.links > 1:
            self._hard_links[(node.device, node.inode)] = path

    def _write_content(
        self, fd: int, blobs: _FileBlobs
    ) -> tuple[BackvaultError | None, int]:
        """Write the file's chunks; return the first error and the end of the last write.

        A chunk that cannot be read leaves a hole of its length, so the other chunks keep
        their offsets and the file keeps its size. Chunks of zeros are skipped, not
        written, so that holes of sparse files stay holes.
        """
        first_error: BackvaultError | None = None
        offset = 0
        written_end = 0
        for blob_id, loaded in blobs:
            try:
                data = loaded.result()
            except BackvaultError as error:
                first_error = first_error or error
                offset += self._stored_length(blob_id)
                continue
            if data.count(0) != len(data):
                os.pwrite(fd, data, offset)
                written_end = offset + len(data)
            offset += len(data)
            self.result.bytes_written += len(data)
            self.progress.bytes_written += len(data)
            self._report_progress()
        return first_error, written_end

    def _stored_length(self, blob_id: bytes) -> int:
        location = self._repository.index.lookup(blob_id)
        return location.entry.raw_length if location else 0

    def _link_existing(self, dir_fd: int, path: bytes, node: Node) -> bool:
        first = self._hard_links.get((node.device, node.inode))
        if first is None:
            return False
        first_directory, first_name = first.rsplit(b"/", 1)
        first_dir_fd = self._open_restored_directory(first_directory)
        try:
            self._replace_entry(dir_fd, node.name)
            os.link(
                first_name,
                node.name,
                src_dir_fd=first_dir_fd,
                dst_dir_fd=dir_fd,
                follow_symlinks=False,
            )
        finally:
            os.close(first_dir_fd)
        self.result.files += 1
        return True

    def _open_restored_directory(self, path: bytes) -> int:
        """Open a directory under the target one component at a time.

        Opening relative to the parent's descriptor works past ``PATH_MAX`` and never
        follows a symlink.
        """
        fd = os.open(self._target, DIRECTORY_FLAGS)
        for name in path.split(b"/"):
            if not name:
                continue
            try:
                child_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = child_fd
        return fd

    # Metadata -------------------------------------------------------------------------

    def _apply_metadata(self, dir_fd: int, path: bytes, node: Node) -> None:
        """Set owner, mode and times of an entry that is not open (symlink, special file)."""
        self._chown(
            path,
            lambda: os.chown(node.name, node.uid, node.gid, dir_fd=dir_fd, follow_symlinks=False),
        )
        if node.type != "symlink":
            os.chmod(node.name, node.mode, dir_fd=dir_fd)
        self._set_times(dir_fd, node)

    def _apply_metadata_fd(self, fd: int, path: bytes, node: Node) -> None:
        self._chown(path, lambda: os.fchown(fd, node.uid, node.gid))
        for name, value in node.xattrs.items():
            try:
                os.setxattr(fd, name, value)
            except OSError as error:
                self.result.warnings.append(
                    (path, f"cannot set extended attribute {name!r}: {error.strerror}")
                )
        os.fchmod(fd, node.mode)

    def _chown(self, path: bytes, change_owner: Callable[[], None]) -> None:
        try:
            change_owner()
        except PermissionError:
            # Only root may give files away; an ordinary user restores them as their own.
            if self._is_root:
                self.result.warnings.append((path, "cannot restore the owner"))

    @staticmethod
    def _set_times(dir_fd: int, node: Node) -> None:
        os.utime(node.name, ns=(node.mtime, node.mtime), dir_fd=dir_fd, follow_symlinks=False)

    @staticmethod
    def _replace_entry(dir_fd: int, name: bytes, *, keep_files: bool = False) -> None:
        """Remove the entry at ``name`` so that a new entry can take its place.

        With ``keep_files``, a file or symlink is left for an atomic rename to replace.
        """
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            child_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
            try:
                _remove_directory_contents(child_fd)
            finally:
                os.close(child_fd)
            os.rmdir(name, dir_fd=dir_fd)
        elif not keep_files:
            os.unlink(name, dir_fd=dir_fd)

    # Reporting ------------------------------------------------------------------------

    def _damaged(self, path: bytes, error: BackvaultError) -> None:
        self.result.damaged.append((path, error.message))

    def _report_progress(self) -> None:
        if self._progress_callback is not None:
            self._progress_callback(self.progress)


class _BlobStream:
    """Blobs read and decrypted by the pool ahead of the writer, in order.

    At most PREFETCH_BLOBS blobs, and about PREFETCH_BYTES of plaintext, are in flight.
    """

    def __init__(
        self, pool: ThreadPoolExecutor, repository: Repository, blob_ids: list[bytes]
    ) -> None:
        self._pool = pool
        self._repository = repository
        self._pending = deque(blob_ids)
        self._window: deque[tuple[bytes, _LoadedBlob, int]] = deque()
        self._window_bytes = 0
        self._fill()

    def take(self, count: int) -> _FileBlobs:
        """Return the next ``count`` blobs, for one file."""
        return _FileBlobs(self, count)

    def pop(self) -> LoadedBlob:
        if not self._window:
            self._fill(minimum=1)
        blob_id, loaded, size = self._window.popleft()
        self._window_bytes -= size
        self._fill()
        return blob_id, loaded

    def _fill(self, minimum: int = 0) -> None:
        while self._pending and (
            len(self._window) < minimum
            or (len(self._window) < PREFETCH_BLOBS and self._window_bytes < PREFETCH_BYTES)
        ):
            group = self._next_group()
            read = self._pool.submit(self._load_group, group)
            for position, (blob_id, location) in enumerate(group):
                size = location.entry.raw_length if location else 0
                self._window.append((blob_id, _LoadedBlob(read, position), size))
                self._window_bytes += size

    def _next_group(self) -> list[tuple[bytes, BlobLocation | None]]:
        """Take the next blob, and the blobs after it that lie right behind it in its pack.

        Files restored in order were mostly written in order, so neighbouring blobs come
        in one read: one request instead of dozens on a server or S3.
        """
        first_id = self._pending.popleft()
        first = self._repository.index.lookup(first_id)
        group: list[tuple[bytes, BlobLocation | None]] = [(first_id, first)]
        if first is None:
            return group
        end = first.entry.offset + first.entry.length
        while self._pending and len(group) < MAX_GROUP_BLOBS:
            following = self._repository.index.lookup(self._pending[0])
            if (
                following is None
                or following.pack_id != first.pack_id
                or following.entry.offset != end
                or end + following.entry.length - first.entry.offset > MAX_GROUP_BYTES
            ):
                break
            group.append((self._pending.popleft(), following))
            end += following.entry.length
        return group

    def _load_group(
        self, group: list[tuple[bytes, BlobLocation | None]]
    ) -> list[bytes | BackvaultError]:
        if len(group) == 1 or group[0][1] is None:
            return [self._load_one(blob_id) for blob_id, _ in group]
        locations = [location for _, location in group if location is not None]
        try:
            return self._repository.load_blob_run(
                locations[0].pack_id, locations[0].salt, [item.entry for item in locations]
            )
        except BackvaultError:
            # The shared read failed: try each blob on its own to save what can be saved.
            return [self._load_one(blob_id) for blob_id, _ in group]

    def _load_one(self, blob_id: bytes) -> bytes | BackvaultError:
        try:
            return self._repository.load_blob(blob_id, BlobType.DATA)
        except BackvaultError as error:
            return error


class _LoadedBlob:
    """One blob of a group read: its plaintext, or the error that reading it raised."""

    def __init__(self, read: Future[list[bytes | BackvaultError]], position: int) -> None:
        self._read = read
        self._position = position

    def result(self) -> bytes:
        outcome = self._read.result()[self._position]
        if isinstance(outcome, BackvaultError):
            raise outcome
        return outcome


class _FileBlobs:
    """The blobs of one file, taken from a directory's stream in order.

    :meth:`close` takes whatever the file did not consume, whether or not iteration
    started, so the next file always starts at its own first blob. (A generator's
    ``finally`` would not run when the generator was never started, which is exactly
    the case of a file restored as a hard link.)
    """

    def __init__(self, stream: _BlobStream, count: int) -> None:
        self._stream = stream
        self._left = count

    def __iter__(self) -> _FileBlobs:
        return self

    def __next__(self) -> LoadedBlob:
        if self._left <= 0:
            raise StopIteration
        self._left -= 1
        return self._stream.pop()

    def close(self) -> None:
        while self._left > 0:
            self._left -= 1
            self._stream.pop()


def _remove_directory_contents(dir_fd: int) -> None:
    with os.scandir(dir_fd) as scan:
        names = [os.fsencode(entry.name) for entry in scan]
    for name in names:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            child_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
            try:
                _remove_directory_contents(child_fd)
            finally:
                os.close(child_fd)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


__all__ = ["RestoreResult", "Restorer", "path_selected", "shutil"]

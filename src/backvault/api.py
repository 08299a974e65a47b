"""The public Python API: create and open repositories, back up, restore, check.

Example::

    from backvault import api

    repository, recovery_key = api.init_repository("/backups/repo")
    print(recovery_key.format())          # keep this safe: the only way back
    result = api.backup(repository, ["/home/me/Documents"])
    api.restore(repository, "latest", "/tmp/restored")

    # later, elsewhere
    repository = api.open_repository("/backups/repo", recovery_key="1a2b 3c4d ...")

Every function raises subclasses of :class:`backvault.errors.BackvaultError` only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from backvault.crypto.recovery import RecoveryKey
from backvault.errors import UsageError
from backvault.repository.archiver import Archiver, BackupProgress, normalize_sources
from backvault.repository.blobsaver import BlobSaver
from backvault.repository.checker import Checker, CheckResult
from backvault.repository.repository import Repository
from backvault.repository.restorer import RestoreProgress, Restorer, RestoreResult, path_selected
from backvault.repository.snapshot import Snapshot
from backvault.repository.tree import Node
from backvault.storage import LocalBackend, open_backend

REMOTE_READ_WORKERS = 8

__all__ = [
    "BackupProgress",
    "BackupResult",
    "CheckResult",
    "Node",
    "RecoveryKey",
    "Repository",
    "RestoreProgress",
    "RestoreResult",
    "Snapshot",
    "backup",
    "check",
    "init_repository",
    "list_files",
    "open_repository",
    "restore",
    "snapshots",
]


def init_repository(location: str) -> tuple[Repository, RecoveryKey]:
    """Create a repository; return it unlocked, with its new recovery key."""
    return Repository.create(open_backend(location))


def open_repository(location: str, *, recovery_key: RecoveryKey | str | None = None) -> Repository:
    """Open a repository, unlocked with ``recovery_key`` when one is given."""
    repository = Repository.open(open_backend(location))
    if recovery_key is not None:
        if isinstance(recovery_key, str):
            recovery_key = RecoveryKey.parse(recovery_key)
        repository.unlock_with_recovery_key(recovery_key)
    return repository


@contextmanager
def _locked(repository: Repository, *, exclusive: bool) -> Iterator[None]:
    lock = repository.lock(exclusive=exclusive)
    try:
        yield
    finally:
        lock.release()


@dataclass
class BackupResult:
    snapshot: Snapshot
    skipped: list[tuple[bytes, str]]
    changed: list[bytes]
    recovered_packs: list[str]

    @property
    def complete(self) -> bool:
        return not self.skipped


def backup(
    repository: Repository,
    paths: list[str | bytes],
    *,
    progress: Callable[[BackupProgress], None] | None = None,
    use_parent: bool = True,
) -> BackupResult:
    """Back up ``paths`` into a new snapshot.

    Paths that cannot be read are skipped and listed in the result and the snapshot;
    the snapshot is saved all the same. If no path exists at all, nothing is saved and
    :class:`UsageError` is raised.
    """
    sources = [os.fsencode(path) for path in paths]
    if not sources:
        raise UsageError("no path to back up", hint="Name at least one file or directory.")
    if not any(os.path.lexists(source) for source in sources):
        names = ", ".join(os.fsdecode(source) for source in sources)
        raise UsageError(
            f"none of the paths to back up exists: {names}",
            hint="Check the spelling, or whether the disk is mounted.",
        )

    with _locked(repository, exclusive=False):
        repository.load_index()
        recovered, _ = repository.reconcile_index()
        if isinstance(repository.backend, LocalBackend):
            repository.backend.remove_temporary_files()
        parent = _find_parent(repository, sources) if use_parent else None

        saver = BlobSaver(repository)
        archiver = Archiver(repository, saver, parent=parent, progress=progress)
        snapshot = archiver.run(sources)
    return BackupResult(snapshot, archiver.skipped, archiver.changed, recovered)


def _find_parent(repository: Repository, sources: list[bytes]) -> Snapshot | None:
    """Return the newest snapshot of the same paths from this host, if any."""
    wanted = normalize_sources(sources)
    hostname = socket.gethostname()
    for snapshot in reversed(repository.list_snapshots()):
        if snapshot.hostname == hostname and snapshot.paths == wanted:
            return snapshot
    return None


def snapshots(repository: Repository) -> list[Snapshot]:
    """Return every snapshot, oldest first."""
    return repository.list_snapshots()


def list_files(
    repository: Repository, reference: str, path: str | bytes | None = None
) -> Iterator[tuple[bytes, Node]]:
    """Yield ``(path, node)`` for every entry of a snapshot, or of the tree under ``path``."""
    snapshot = repository.find_snapshot(reference)
    repository.load_index()
    includes = [] if path is None else [os.path.normpath(b"/" + os.fsencode(path).lstrip(b"/"))]
    yield from _walk_tree(repository, b"", snapshot.tree, includes)


def _walk_tree(
    repository: Repository, prefix: bytes, tree_id: bytes, includes: list[bytes]
) -> Iterator[tuple[bytes, Node]]:
    for node in repository.load_tree(tree_id):
        child = prefix + b"/" + node.name
        if not path_selected(child, includes):
            continue
        if not includes or any(child == i or child.startswith(i + b"/") for i in includes):
            yield child, node
        if node.type == "dir" and node.subtree is not None:
            yield from _walk_tree(repository, child, node.subtree, includes)


def restore(
    repository: Repository,
    reference: str,
    target: str | bytes,
    *,
    include: list[str | bytes] | None = None,
    progress: Callable[[RestoreProgress], None] | None = None,
) -> RestoreResult:
    """Restore a snapshot (``latest``, an id or an id prefix) under ``target``."""
    snapshot = repository.find_snapshot(reference)
    repository.load_index()
    includes = [_absolute(os.fsencode(path)) for path in include or []]
    for path in includes:
        _require_in_snapshot(repository, snapshot, path)
    _prepare_target(os.fsencode(target))
    with _locked(repository, exclusive=False):
        repository.load_index()
        # Reads from a server or S3 wait on the network, not on a core: more of them in
        # flight hide the latency of each.
        workers = 2 if isinstance(repository.backend, LocalBackend) else REMOTE_READ_WORKERS
        restorer = Restorer(repository, includes=includes, progress=progress, workers=workers)
        return restorer.run(snapshot, os.fsencode(target))


def _absolute(path: bytes) -> bytes:
    # Relative paths are taken from the current directory, as backup takes them.
    return os.path.normpath(os.path.abspath(path))


def _require_in_snapshot(repository: Repository, snapshot: Snapshot, path: bytes) -> None:
    """Raise UsageError unless ``path`` names an entry of the snapshot."""
    tree_id: bytes | None = snapshot.tree
    for name in [part for part in path.split(b"/") if part]:
        nodes = {node.name: node for node in repository.load_tree(tree_id)} if tree_id else {}
        node = nodes.get(name)
        if node is None:
            raise UsageError(
                f"{os.fsdecode(path)} is not in snapshot {snapshot.short_id}",
                hint=f"List what it holds with 'backvault ls {snapshot.short_id}'.",
            )
        tree_id = node.subtree


def _prepare_target(target: bytes) -> None:
    if os.path.lexists(target) and not os.path.isdir(target):
        raise UsageError(
            f"the restore target {os.fsdecode(target)} exists and is not a directory",
            hint="Give --target a directory, or a path that does not exist yet.",
        )
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot use {os.fsdecode(target)} as the restore target: {error.strerror}",
            hint="Give a directory that exists or can be created, with --target.",
        ) from error


def check(
    repository: Repository,
    *,
    read_data: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """Verify the repository; with ``read_data``, read and authenticate every byte."""
    with _locked(repository, exclusive=False):
        return Checker(repository, progress=progress).run(read_data=read_data)

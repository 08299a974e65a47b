"""The blob service: object rules (names, immutability, append-only, quota) over storage.

Each repository has its own storage backend: ``<data dir>/blobs/<account id>/<repo>`` by
default, or ``<s3 url>/<account id>/<repo>``. Account ids, not names, form the paths, so
an account name never reaches a file system or a bucket. Every method here blocks (disk,
S3, database), so the web layer calls them from a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import blake3

from backvault.server.errors import ApiError, QuotaExceededError
from backvault.server.metadata import Account, Metadata, RepositoryInfo, Reservation
from backvault.storage import KINDS, Backend, LocalBackend, ObjectNotFoundError, open_backend

# Object names are lowercase hex: content hashes and random ids. Anything else, such as a
# dot, a slash or an encoded slash, is rejected before it can reach a path or a key.
OBJECT_NAME = re.compile(r"[0-9a-f]{1,128}")
REPOSITORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CONFIG_NAME = "config"  # the one object of kind "config"
HASH_ALGORITHMS = ("blake3", "sha256")


@dataclass(frozen=True)
class ObjectBytes:
    """A byte range read from an object, with the object's total size."""

    data: bytes
    offset: int
    total_size: int


def check_repository_name(name: str) -> None:
    if not REPOSITORY_NAME.fullmatch(name):
        raise ApiError(
            400,
            f"invalid repository name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )


def check_object_name(kind: str, name: str) -> None:
    if kind not in KINDS:
        raise ApiError(400, f"invalid object kind {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "config":
        if name != CONFIG_NAME:
            raise ApiError(400, f"invalid object name {name!r}: the config object is 'config'")
        return
    if not OBJECT_NAME.fullmatch(name):
        raise ApiError(
            400, f"invalid object name {name!r}: use 1 to 128 lowercase hexadecimal digits"
        )


def verify_content_hash(data: bytes, algorithm: str, expected: str) -> str:
    """Check ``data`` against the hash the client sent; return the BLAKE3 hex digest."""
    digest = blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    if algorithm == "blake3":
        actual = digest
    elif algorithm == "sha256":
        actual = hashlib.sha256(data).hexdigest()
    else:
        raise ApiError(400, f"unsupported content hash {algorithm!r}: use blake3 or sha256")
    if actual != expected.strip().lower():
        raise ApiError(
            400,
            f"content hash mismatch: the body has {algorithm} {actual}, the request "
            f"header says {expected}; the body was damaged in transit, so send it again",
        )
    return digest


class BlobService:
    """Repositories and their objects, for one authenticated account at a time."""

    def __init__(self, metadata: Metadata, *, blob_dir: Path, storage: str | None) -> None:
        self._metadata = metadata
        self._blob_dir = blob_dir
        self._storage = storage
        self._backends: dict[int, Backend] = {}
        self._backends_lock = threading.Lock()

    # Repositories -------------------------------------------------------------------

    def create_repository(
        self, account: Account, name: str, *, append_only: bool
    ) -> tuple[RepositoryInfo, bool]:
        """Create a repository (idempotent while it has no objects); return it and if new."""
        check_repository_name(name)
        repository, created = self._metadata.create_repository(
            account.id, name, append_only=append_only
        )
        if not created and not self._metadata.repository_is_empty(repository.id):
            raise ApiError(409, f"repository {name!r} already exists and contains objects")
        if append_only and not repository.append_only:
            self._metadata.set_repository_append_only(repository.id)
        backend = self.backend(repository)
        if not backend.exists_repository():
            _prepare_storage(backend)
        return repository, created

    def repository(self, account: Account, name: str) -> RepositoryInfo:
        """Return the account's repository; 404 also when another account has one so named."""
        check_repository_name(name)
        repository = self._metadata.find_repository(account.id, name)
        if repository is None:
            raise ApiError(
                404,
                f"repository {name!r} not found; create it first (backvault init does)",
            )
        return repository

    def backend(self, repository: RepositoryInfo) -> Backend:
        with self._backends_lock:
            backend = self._backends.get(repository.id)
            if backend is None:
                backend = self._open_backend(repository)
                self._backends[repository.id] = backend
            return backend

    def _open_backend(self, repository: RepositoryInfo) -> Backend:
        relative = f"{repository.account_id}/{repository.name}"
        if self._storage is not None:
            return open_backend(f"{self._storage}/{relative}")
        return LocalBackend(self._blob_dir / relative)

    # Objects ------------------------------------------------------------------------

    def put(
        self, account: Account, repository: RepositoryInfo, kind: str, name: str, data: bytes,
        digest: str,
    ) -> bool:
        """Store an object whose BLAKE3 ``digest`` was checked; return True if it is new."""
        try:
            outcome = self._metadata.reserve_object(repository, kind, name, len(data), digest)
        except QuotaExceededError as error:
            raise ApiError(507, error.message) from None

        if outcome is Reservation.EXISTS:
            return False
        if outcome is Reservation.CONFLICT:
            raise ApiError(
                409,
                f"{kind}/{name} already exists with different content; stored objects are "
                "immutable",
            )

        try:
            self.backend(repository).write(kind, name, data)
        except BaseException:
            if outcome is Reservation.NEW:
                self._metadata.remove_object(repository, kind, name)
            raise
        self._metadata.commit_object(repository.id, kind, name)
        return True

    def size(self, repository: RepositoryInfo, kind: str, name: str) -> int:
        stored = self._metadata.find_object(repository.id, kind, name)
        if stored is None:
            raise ApiError(404, f"{kind}/{name} not found in repository {repository.name!r}")
        return stored.size

    def read(
        self, repository: RepositoryInfo, kind: str, name: str, byte_range: str | None
    ) -> ObjectBytes:
        total = self.size(repository, kind, name)
        offset, length = parse_range(byte_range, total)
        try:
            data = self.backend(repository).read(kind, name, offset, length)
        except ObjectNotFoundError:
            raise ApiError(
                404, f"{kind}/{name} is recorded but missing from storage; run check"
            ) from None
        return ObjectBytes(data, offset, total)

    def list(self, repository: RepositoryInfo, kind: str) -> list[tuple[str, int]]:
        if kind not in KINDS:
            raise ApiError(400, f"invalid object kind {kind!r}: use one of {', '.join(KINDS)}")
        return self._metadata.list_objects(repository.id, kind)

    def delete(self, account: Account, repository: RepositoryInfo, kind: str, name: str) -> None:
        # Locks stay deletable, or every append-only client would block the next one.
        if kind != "locks" and (account.append_only or repository.append_only):
            raise ApiError(
                403,
                f"cannot delete {kind}/{name}: the repository is append-only, so only lock "
                "objects can be deleted; ask the server's operator to prune it",
            )
        if self._metadata.find_object(repository.id, kind, name, committed_only=False) is None:
            raise ApiError(404, f"{kind}/{name} not found in repository {repository.name!r}")
        # The bytes are already gone after a crash during an earlier delete: drop the row.
        with contextlib.suppress(ObjectNotFoundError):
            self.backend(repository).delete(kind, name)
        self._metadata.remove_object(repository, kind, name)

    def delete_repository_objects(self, repository: RepositoryInfo) -> int:
        """Delete every object of a repository from storage; return how many."""
        backend = self.backend(repository)
        deleted = 0
        for kind, name in self._metadata.list_all_objects(repository.id):
            try:
                backend.delete(kind, name)
                deleted += 1
            except ObjectNotFoundError:
                continue
        return deleted


def _prepare_storage(backend: Backend) -> None:
    # LocalBackend.create_repository rejects a non-empty directory. A directory left by an
    # earlier, interrupted creation holds only empty folders, so it is reused.
    if isinstance(backend, LocalBackend) and (Path(backend.location) / "data").is_dir():
        return
    backend.create_repository()


def parse_range(header: str | None, total: int) -> tuple[int, int | None]:
    """Return ``(offset, length)`` for a ``Range`` header; length None means to the end.

    Supports one range of the forms ``bytes=A-B``, ``bytes=A-`` and ``bytes=-N``
    (RFC 9110, section 14.1.2); raises 416 for a range that starts past the end.
    """
    if header is None:
        return 0, None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise ApiError(416, f"unsupported range {header!r}: send one range in bytes")
    first, dash, last = spec.strip().partition("-")
    try:
        if not dash:
            raise ValueError
        if not first:
            suffix = int(last)
            start = max(total - suffix, 0)
            return start, total - start
        start = int(first)
        end = int(last) if last else total - 1
    except ValueError:
        raise ApiError(416, f"invalid range {header!r}") from None
    if start < 0 or end < start or start >= total:
        raise ApiError(
            416, f"range {header!r} is outside the object of {total} bytes",
            headers={"Content-Range": f"bytes */{total}"},
        )
    return start, min(end, total - 1) - start + 1

"""Repository locks: encrypted lock files under ``locks/``.

A lock file (magic "BVLK") records who holds it: hostname, pid, username, time and
whether it is exclusive. Backups take shared locks; operations that must see a quiet
repository take an exclusive one. A lock left by a process that no longer runs on this
host is stale and is removed. Locks of other hosts are only reported, because this host
cannot tell whether their process still runs.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from dataclasses import dataclass

import msgpack

from backvault.errors import (
    BackvaultError,
    IntegrityError,
    RepositoryLockedError,
    UnsupportedFormatError,
)
from backvault.repository.format import (
    MAGIC_LOCK,
    object_id,
    open_encrypted_file,
    seal_encrypted_file,
)
from backvault.storage import Backend, ObjectNotFoundError


@dataclass(frozen=True)
class LockInfo:
    hostname: str
    pid: int
    username: str
    time_ns: int
    exclusive: bool


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    def __init__(self, backend: Backend, metadata_key: bytes, *, exclusive: bool) -> None:
        self._backend = backend
        self._metadata_key = metadata_key
        self.exclusive = exclusive
        self.name: str | None = None

    def acquire(self) -> None:
        self._check_existing_locks()
        info = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "username": _username(),
            "time": time.time_ns(),
            "exclusive": self.exclusive,
        }
        data = seal_encrypted_file(
            MAGIC_LOCK, self._metadata_key, msgpack.packb(info, use_bin_type=True)
        )
        self.name = object_id(data)
        self._backend.write("locks", self.name, data)

        # Two processes may pass the check at the same moment; each checks again after
        # writing its own lock, so at least one of them sees the other and backs off.
        try:
            self._check_existing_locks()
        except RepositoryLockedError:
            self.release()
            raise

    def release(self) -> None:
        if self.name is not None:
            with contextlib.suppress(ObjectNotFoundError):
                self._backend.delete("locks", self.name)
            self.name = None

    def _check_existing_locks(self) -> None:
        for name, _ in list(self._backend.list("locks")):
            if name == self.name:
                continue
            info = self._read_lock(name)
            if info is None:
                continue
            if info.hostname == socket.gethostname() and not _process_is_alive(info.pid):
                with contextlib.suppress(ObjectNotFoundError):
                    self._backend.delete("locks", name)
                continue
            if self.exclusive or info.exclusive:
                raise RepositoryLockedError(
                    f"the repository is locked by pid {info.pid} on {info.hostname} "
                    f"(user {info.username}, {'exclusive' if info.exclusive else 'shared'})",
                    hint="Wait for that process to finish. If it is gone, run "
                    "'backvault unlock' on its host, or 'backvault unlock --remove-all'.",
                )

    def _read_lock(self, name: str) -> LockInfo | None:
        try:
            data = self._backend.read("locks", name)
            body = msgpack.unpackb(
                open_encrypted_file(MAGIC_LOCK, self._metadata_key, data, subject=f"lock {name}"),
                raw=False,
            )
            return LockInfo(
                str(body["hostname"]),
                int(body["pid"]),
                str(body["username"]),
                int(body["time"]),
                bool(body["exclusive"]),
            )
        except ObjectNotFoundError:
            return None
        except (
            IntegrityError,
            UnsupportedFormatError,
            KeyError,
            TypeError,
            ValueError,
            msgpack.UnpackException,
        ):
            # A lock that cannot be read still blocks: it may belong to a newer client.
            return LockInfo("unknown host", 0, "unknown", 0, exclusive=True)
        except BackvaultError:
            raise


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def remove_locks(backend: Backend, metadata_key: bytes, *, all_hosts: bool) -> int:
    """Remove stale locks of this host, or every lock with ``all_hosts``; return the count."""
    removed = 0
    reader = Lock(backend, metadata_key, exclusive=False)
    for name, _ in list(backend.list("locks")):
        info = reader._read_lock(name)
        if info is None:
            continue
        stale = info.hostname == socket.gethostname() and not _process_is_alive(info.pid)
        if all_hosts or stale:
            with contextlib.suppress(ObjectNotFoundError):
                backend.delete("locks", name)
                removed += 1
    return removed

"""Shared fixtures: a new repository with its recovery key file, and a tree comparison.

The comparison walks both trees through open directory descriptors (``openat`` and
``fstatat``), so it also works for paths longer than ``PATH_MAX``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from backvault import api
from backvault.repository.repository import Repository

if TYPE_CHECKING:
    from playwright.sync_api import Browser

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CLI_TIMEOUT = 60  # seconds
READ_SIZE = 1024 * 1024  # bytes per read when hashing a file
SHOWN_PATH_LENGTH = 160  # bytes of a path shown in a difference, without the middle

SourceTree = str | bytes | os.PathLike[str]
TreeAssertion = Callable[[SourceTree, SourceTree], None]


def backvault_executable() -> Path:
    """Return the ``backvault`` script installed beside the running interpreter."""
    beside = Path(sys.executable).parent / "backvault"
    if beside.exists():
        return beside
    found = shutil.which("backvault")
    if found is None:
        raise RuntimeError("the backvault command is not installed; run scripts/setup.sh")
    return Path(found)


def restored_location(target: Path, source: Path) -> Path:
    """Return where a restore into ``target`` puts the copy of ``source``."""
    return target / source.relative_to(source.anchor)


@dataclass
class LocalRepository:
    """A new repository in a local directory, with its recovery key saved to a file."""

    repository: Repository
    location: Path
    key_file: Path

    def run_cli(
        self,
        command: str,
        *arguments: str | bytes | os.PathLike[str],
        prefix: Sequence[str] = (),
        timeout: float = CLI_TIMEOUT,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``backvault COMMAND`` on this repository, with ``prefix`` (such as setpriv) first."""
        argv: list[str | bytes | os.PathLike[str]] = [
            *prefix,
            backvault_executable(),
            command,
            "--repo",
            self.location,
            "--recovery-key-file",
            self.key_file,
            *arguments,
        ]
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False)

    def back_up_and_restore(self, source: Path, target: Path) -> Path:
        """Back up ``source`` with the API and restore it into ``target``. Return the copy."""
        backup = api.backup(self.repository, [os.fsencode(source)])
        assert backup.skipped == []
        assert backup.changed == []

        restore = api.restore(self.repository, backup.snapshot.snapshot_id, str(target))
        assert restore.damaged == []
        assert restore.warnings == []
        return restored_location(target, source)


@pytest.fixture
def local_repository(tmp_path: Path) -> LocalRepository:
    location = tmp_path / "repository"
    repository, recovery_key = api.init_repository(str(location))
    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(recovery_key.format() + "\n")
    key_file.chmod(0o600)
    return LocalRepository(repository, location, key_file)


@pytest.fixture
def repository(local_repository: LocalRepository) -> Repository:
    return local_repository.repository


# Tree comparison ----------------------------------------------------------------------


@dataclass(frozen=True)
class EntryState:
    """The facts about one directory entry that a restore must reproduce."""

    file_type: int  # the stat.S_IFMT bits
    mode: int  # permission bits, including setuid, setgid and sticky
    uid: int
    gid: int
    mtime_ns: int
    size: int
    content_sha256: bytes | None  # regular files only
    target: bytes | None  # symlinks only
    xattrs: dict[bytes, bytes]  # regular files and directories only
    rdev: int
    links: int
    inode: tuple[int, int]  # (st_dev, st_ino), to group hard links


def _entry_state(
    st: os.stat_result,
    *,
    content_sha256: bytes | None = None,
    target: bytes | None = None,
    xattrs: dict[bytes, bytes] | None = None,
) -> EntryState:
    return EntryState(
        file_type=stat.S_IFMT(st.st_mode),
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) else 0,
        content_sha256=content_sha256,
        target=target,
        xattrs=xattrs or {},
        rdev=st.st_rdev,
        links=st.st_nlink,
        inode=(st.st_dev, st.st_ino),
    )


def _read_xattrs(fd: int) -> dict[bytes, bytes]:
    return {os.fsencode(name): os.getxattr(fd, name) for name in sorted(os.listxattr(fd))}


def _hash_file(fd: int) -> bytes:
    digest = hashlib.sha256()
    while True:
        block = os.read(fd, READ_SIZE)
        if not block:
            return digest.digest()
        digest.update(block)


def _read_child(
    dir_fd: int, name: bytes, relative: bytes, entries: dict[bytes, EntryState]
) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        child_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
        try:
            entries[relative] = _entry_state(st, xattrs=_read_xattrs(child_fd))
            _read_directory(child_fd, relative, entries)
        finally:
            os.close(child_fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
        try:
            entries[relative] = _entry_state(
                st, content_sha256=_hash_file(fd), xattrs=_read_xattrs(fd)
            )
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st.st_mode):
        entries[relative] = _entry_state(st, target=os.readlink(name, dir_fd=dir_fd))
    else:
        # Never opened: a FIFO would block and a device could have side effects. Linux
        # permits user.* extended attributes only on regular files and directories.
        entries[relative] = _entry_state(st)


def _read_directory(dir_fd: int, prefix: bytes, entries: dict[bytes, EntryState]) -> None:
    names = sorted(os.fsencode(name) for name in os.listdir(dir_fd))
    for name in names:
        _read_child(dir_fd, name, prefix + b"/" + name, entries)


def read_tree(root: SourceTree) -> dict[bytes, EntryState]:
    """Describe every entry under ``root``, keyed by its path relative to ``root``.

    The key of ``root`` itself is ``b""``, and every other key starts with ``b"/"``.
    """
    root_path = os.fsencode(root)
    entries: dict[bytes, EntryState] = {}
    root_fd = os.open(root_path, DIRECTORY_FLAGS)
    try:
        st = os.stat(root_fd)
        entries[b""] = _entry_state(st, xattrs=_read_xattrs(root_fd))
        _read_directory(root_fd, b"", entries)
    finally:
        os.close(root_fd)
    return entries


def _show_path(path: bytes) -> str:
    if len(path) <= SHOWN_PATH_LENGTH:
        return repr(path)
    half = SHOWN_PATH_LENGTH // 2
    return f"{path[:half]!r}...{path[-half:]!r} ({len(path)} bytes)"


def _describe(field_name: str, value: object) -> str:
    if field_name == "mode" and isinstance(value, int):
        return oct(value)
    if field_name == "file_type" and isinstance(value, int):
        return stat.filemode(value)[0]
    return repr(value)


def _entry_differences(
    path: bytes, expected: EntryState, actual: EntryState, *, compare_symlink_mtime: bool
) -> list[str]:
    skipped = {"inode"}
    if stat.S_ISDIR(expected.file_type):
        # A directory's link count depends on the file system's accounting of "..".
        skipped.add("links")
    if stat.S_ISLNK(expected.file_type) and not compare_symlink_mtime:
        skipped.add("mtime_ns")

    differences = []
    for state_field in fields(EntryState):
        name = state_field.name
        expected_value = getattr(expected, name)
        actual_value = getattr(actual, name)
        if name in skipped or expected_value == actual_value:
            continue
        differences.append(
            f"{_show_path(path)}: {name} expected {_describe(name, expected_value)}, "
            f"found {_describe(name, actual_value)}"
        )
    return differences


def _hard_link_groups(entries: dict[bytes, EntryState]) -> set[frozenset[bytes]]:
    """Return the sets of paths that share one inode, for inodes with several paths."""
    by_inode: dict[tuple[int, int], set[bytes]] = {}
    for path, entry in entries.items():
        if not stat.S_ISDIR(entry.file_type):
            by_inode.setdefault(entry.inode, set()).add(path)
    return {frozenset(paths) for paths in by_inode.values() if len(paths) > 1}


def tree_differences(
    expected_root: SourceTree, actual_root: SourceTree, *, compare_symlink_mtime: bool = True
) -> list[str]:
    """List every way the tree at ``actual_root`` differs from the one at ``expected_root``."""
    expected = read_tree(expected_root)
    actual = read_tree(actual_root)

    differences = []
    for path in sorted(expected.keys() | actual.keys()):
        if path not in actual:
            differences.append(f"{_show_path(path)}: missing from the restored tree")
        elif path not in expected:
            differences.append(f"{_show_path(path)}: not in the source tree")
        else:
            differences.extend(
                _entry_differences(
                    path, expected[path], actual[path], compare_symlink_mtime=compare_symlink_mtime
                )
            )

    expected_groups = _hard_link_groups(expected)
    actual_groups = _hard_link_groups(actual)
    for group in sorted(expected_groups - actual_groups, key=sorted):
        group_text = ", ".join(_show_path(path) for path in sorted(group))
        differences.append(f"hard links not linked in the restored tree: {group_text}")
    for group in sorted(actual_groups - expected_groups, key=sorted):
        group_text = ", ".join(_show_path(path) for path in sorted(group))
        differences.append(f"hard links not linked in the source tree: {group_text}")
    return differences


def _keeps_symlink_mtime(directory: Path) -> bool:
    """Return true if the file system of ``directory`` stores a symlink's own mtime."""
    link = directory / "probe-link"
    link.symlink_to("probe-target")
    mtime_ns = 123_456_789_000_000_001
    try:
        os.utime(link, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    except (NotImplementedError, OSError):
        return False
    return os.lstat(link).st_mtime_ns == mtime_ns


@pytest.fixture(scope="session")
def assert_same_tree(tmp_path_factory: pytest.TempPathFactory) -> TreeAssertion:
    """Return a check that two trees match in content, names, types and metadata.

    It compares type, content bytes, permission bits, owner, mtime, symlink target,
    extended attributes, device number, link count and hard link grouping. Symlink
    mtimes are compared only where the file system stores them.
    """
    compare_symlink_mtime = _keeps_symlink_mtime(tmp_path_factory.mktemp("symlink-probe"))

    def check(expected_root: SourceTree, actual_root: SourceTree) -> None:
        differences = tree_differences(
            expected_root, actual_root, compare_symlink_mtime=compare_symlink_mtime
        )
        assert differences == [], "the trees differ:\n" + "\n".join(differences)

    return check


# Browser fixtures of the passkey page tests. Playwright is imported only by the tests
# that use them.


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Headless Debian Chromium, one per test module."""
    from tests.helpers.browser import launch_chromium

    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """The folder where the passkey page tests save their screenshots."""
    from tests.helpers.browser import screenshot_directory

    return screenshot_directory()

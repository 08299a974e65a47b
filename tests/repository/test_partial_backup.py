"""Backups of sources that cannot be read completely or consistently.

Paths that cannot be read are skipped: the snapshot is saved all the same, every skipped
path is listed in the API result, in the snapshot and in the output of ``backvault
backup``, and the command exits with code 3. A file that changes while it is read is
stored as read and listed as changed.

The tests run as root, and root reads every file whatever its mode. The API tests make a
file unreadable by replacing ``os.open`` for its name. The command line tests run
``backvault`` under ``setpriv`` without the capabilities that let root ignore file modes.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from backvault import api
from backvault.repository import archiver
from backvault.repository.archiver import normalize_sources
from backvault.repository.repository import Repository

if TYPE_CHECKING:
    from conftest import LocalRepository

EXIT_PARTIAL_BACKUP = 3
MEBIBYTE = 1024 * 1024
LARGE_SIZE = 24 * MEBIBYTE  # bytes, several chunks of at most 8 MiB
READ_STEP = MEBIBYTE  # bytes returned by one read of a file that changes while read
SMALL_SIZE = 100 * 1024  # bytes, below the 512 KiB minimum chunk size
# Capabilities that let root read and list files whatever their mode.
DROP_READ_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def restored_location(target: Path, source: Path) -> Path:
    return target / source.relative_to(source.anchor)


def write_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def node_at(repository: Repository, path: Path) -> api.Node:
    return dict(api.list_files(repository, "latest"))[os.fsencode(path)]


def skipped_paths(skipped: list[tuple[bytes, str]]) -> list[bytes]:
    return sorted(path for path, _ in skipped)


# Unreadable and missing paths -------------------------------------------------------


def deny_open(monkeypatch: pytest.MonkeyPatch, names: set[bytes]) -> None:
    """Make ``os.open`` fail with EACCES for entries called one of ``names``."""
    real_open = os.open

    def open_or_deny(
        path: str | bytes | os.PathLike[str], flags: int, mode: int = 0o777, *,
        dir_fd: int | None = None,
    ) -> int:
        if os.path.basename(os.fsencode(path)) in names:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_or_deny)


def make_partly_readable_source(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Create a source tree and return it with the paths a backup of it must skip."""
    source = tmp_path / "source"
    source.mkdir()
    write_file(source / "readable.txt", b"readable")
    secret = write_file(source / "secret.txt", b"unreadable")
    locked = source / "locked-directory"
    locked.mkdir()
    write_file(locked / "inside.txt", b"unreachable")
    return source, [secret, locked]


def test_backup_lists_unreadable_and_missing_paths(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, unreadable = make_partly_readable_source(tmp_path)
    missing_file = tmp_path / "missing.txt"
    missing_below_missing = tmp_path / "missing-directory" / "missing.txt"
    sources = [source, missing_file, missing_below_missing]

    with monkeypatch.context() as patch:
        deny_open(patch, {b"secret.txt", b"locked-directory"})
        result = api.backup(repository, [os.fsencode(path) for path in sources])

    expected = [*unreadable, missing_file, missing_below_missing]
    assert result.complete is False
    assert skipped_paths(result.skipped) == sorted(os.fsencode(path) for path in expected)
    reasons = dict(result.skipped)
    assert reasons[os.fsencode(unreadable[0])] == os.strerror(errno.EACCES)
    assert reasons[os.fsencode(missing_file)] == os.strerror(errno.ENOENT)
    assert reasons[os.fsencode(missing_below_missing)] == os.strerror(errno.ENOENT)


def test_partial_snapshot_saved_with_skipped_paths(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, unreadable = make_partly_readable_source(tmp_path)
    missing = tmp_path / "missing.txt"

    with monkeypatch.context() as patch:
        deny_open(patch, {b"secret.txt", b"locked-directory"})
        result = api.backup(repository, [os.fsencode(source), os.fsencode(missing)])

    saved = api.snapshots(repository)
    assert [snapshot.snapshot_id for snapshot in saved] == [result.snapshot.snapshot_id]
    assert skipped_paths(saved[0].skipped) == sorted(
        os.fsencode(path) for path in [*unreadable, missing]
    )
    listed = dict(api.list_files(repository, "latest"))
    assert os.fsencode(source / "readable.txt") in listed
    assert os.fsencode(unreadable[0]) not in listed
    restored = restored_location(tmp_path / "restored", source)
    api.restore(repository, "latest", str(tmp_path / "restored"))
    assert (restored / "readable.txt").read_bytes() == b"readable"
    assert not (restored / "secret.txt").exists()


def test_source_below_non_directory_skipped(repository: Repository, tmp_path: Path) -> None:
    existing = write_file(tmp_path / "existing.txt", b"backed up")
    below_file = write_file(tmp_path / "plain-file", b"not a directory") / "child"

    result = api.backup(repository, [os.fsencode(path) for path in (existing, below_file)])

    # A source below a regular file cannot exist; it must be reported rather than left
    # out of the snapshot without a word.
    assert skipped_paths(result.skipped) == [os.fsencode(below_file)]
    assert os.fsencode(existing) in dict(api.list_files(repository, "latest"))


def test_source_below_symlink_recorded_resolved(repository: Repository, tmp_path: Path) -> None:
    real_directory = tmp_path / "real-directory"
    real_directory.mkdir()
    write_file(real_directory / "file.txt", b"reached through a symlinked parent")
    (tmp_path / "link-to-directory").symlink_to(real_directory)

    result = api.backup(repository, [os.fsencode(tmp_path / "link-to-directory" / "file.txt")])

    # Symlinks above a source are resolved, so the source is recorded at its real path.
    assert result.skipped == []
    assert result.snapshot.paths == [os.fsencode(real_directory / "file.txt")]
    listed = dict(api.list_files(repository, "latest"))
    assert listed[os.fsencode(real_directory / "file.txt")].size == 34


@pytest.fixture
def without_read_override(tmp_path: Path) -> list[str]:
    """Return a command prefix that runs a program without root's permission override."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = write_file(tmp_path / "probe", b"")
    probe.chmod(0o000)
    completed = subprocess.run(
        [*DROP_READ_OVERRIDE, "cat", str(probe)], capture_output=True, check=False, timeout=10
    )
    probe.unlink()
    if b"Permission denied" not in completed.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {completed.stderr!r}")
    return DROP_READ_OVERRIDE


def make_unreadable_source(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Create a source with mode 000 entries. Return it and the paths a backup must skip."""
    source = tmp_path / "source"
    source.mkdir()
    write_file(source / "readable.txt", b"readable")
    secret = write_file(source / "secret.txt", b"unreadable")
    secret.chmod(0o000)
    locked = source / "locked-directory"
    locked.mkdir()
    write_file(locked / "inside.txt", b"unreachable")
    locked.chmod(0o000)
    return source, [os.fsencode(secret), os.fsencode(locked)]


def test_cli_backup_text_lists_skipped_paths(
    local_repository: LocalRepository, tmp_path: Path, without_read_override: list[str]
) -> None:
    source, unreadable = make_unreadable_source(tmp_path)
    missing = os.fsencode(tmp_path) + b"/missing-\xff.txt"

    completed = local_repository.run_cli(
        "backup", source, missing, prefix=without_read_override
    )

    assert completed.returncode == EXIT_PARTIAL_BACKUP, completed.stderr
    lines = completed.stdout.splitlines()
    for path in unreadable:
        assert b"skipped (Permission denied): " + path in lines
    assert b"skipped (No such file or directory): " + missing in lines
    assert b"3 path(s) were skipped" in completed.stderr
    saved = api.snapshots(local_repository.repository)
    assert len(saved) == 1
    assert skipped_paths(saved[0].skipped) == sorted([*unreadable, missing])


def test_cli_backup_json_lists_skipped_paths(
    local_repository: LocalRepository, tmp_path: Path, without_read_override: list[str]
) -> None:
    source, unreadable = make_unreadable_source(tmp_path)
    missing = os.fsencode(tmp_path) + b"/missing-\xff.txt"

    completed = local_repository.run_cli(
        "backup", "--json", source, missing, prefix=without_read_override
    )

    assert completed.returncode == EXIT_PARTIAL_BACKUP, completed.stderr
    output = json.loads(completed.stdout)
    assert output["complete"] is False
    skipped = {
        base64.b64decode(entry["path_base64"]) if "path_base64" in entry
        else entry["path"].encode(): entry["error"]
        for entry in output["skipped"]
    }
    assert sorted(skipped) == sorted([*unreadable, missing])
    assert skipped[missing] == "No such file or directory"
    saved = api.snapshots(local_repository.repository)
    assert [snapshot.snapshot_id for snapshot in saved] == [output["snapshot_id"]]


def test_cli_backup_missing_path_exits_3(
    local_repository: LocalRepository, tmp_path: Path
) -> None:
    existing = write_file(tmp_path / "existing.txt", b"backed up")
    missing = tmp_path / "missing.txt"

    completed = local_repository.run_cli("backup", existing, missing)

    assert completed.returncode == EXIT_PARTIAL_BACKUP, completed.stderr
    expected_line = b"skipped (No such file or directory): " + os.fsencode(missing)
    assert expected_line in completed.stdout.splitlines()
    assert completed.stderr.startswith(b"error: snapshot ")


def test_cli_complete_backup_exits_0(local_repository: LocalRepository, tmp_path: Path) -> None:
    existing = write_file(tmp_path / "existing.txt", b"backed up")

    completed = local_repository.run_cli("backup", "--json", existing)

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["complete"] is True


# Files that change while they are read ----------------------------------------------


def change_large_file_while_read(
    monkeypatch: pytest.MonkeyPatch, change_at: int, change: Callable[[], None]
) -> None:
    """Run ``change`` once, when the archiver has read ``change_at`` bytes of a large file.

    Each read returns at most READ_STEP bytes, so the change happens at the same offset
    whatever buffer size the chunker passes.
    """
    state = {"changed": False, "read": 0}

    class ReaderThatChangesFile(io.FileIO):
        def readinto(self, buffer: Any) -> int:
            count = super().readinto(memoryview(buffer)[:READ_STEP]) or 0
            state["read"] += count
            if not state["changed"] and state["read"] >= change_at:
                state["changed"] = True
                change()
            return count

    monkeypatch.setattr(archiver, "io", SimpleNamespace(FileIO=ReaderThatChangesFile))


def assert_stored_as_read(
    repository: Repository, tmp_path: Path, path: Path, expected: bytes
) -> None:
    """Check that ``path`` is listed as changed and restores to ``expected``."""
    snapshot = api.snapshots(repository)[-1]
    assert snapshot.changed == [os.fsencode(path)]
    node = node_at(repository, path)
    assert node.changed is True
    assert node.size == len(expected)

    target = tmp_path / "restored"
    result = api.restore(repository, "latest", str(target))
    assert result.damaged == []
    restored = restored_location(target, path)
    assert os.stat(restored).st_size == node.size
    assert restored.read_bytes() == expected


def test_large_file_grows_while_read(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = os.urandom(LARGE_SIZE)
    appended = os.urandom(4 * MEBIBYTE)
    growing = write_file(tmp_path / "growing.bin", original)

    def append() -> None:
        with open(growing, "ab") as stream:
            stream.write(appended)

    change_large_file_while_read(monkeypatch, 8 * MEBIBYTE, append)
    result = api.backup(repository, [os.fsencode(growing)])

    assert result.changed == [os.fsencode(growing)]
    assert result.skipped == []
    # The reads go on to the new end of the file, so the appended bytes are stored too.
    assert_stored_as_read(repository, tmp_path, growing, original + appended)


def test_large_file_shrinks_while_read(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = os.urandom(LARGE_SIZE)
    shrinking = write_file(tmp_path / "shrinking.bin", original)
    new_size = 12 * MEBIBYTE

    def truncate() -> None:
        os.truncate(shrinking, new_size)

    change_large_file_while_read(monkeypatch, 8 * MEBIBYTE, truncate)
    result = api.backup(repository, [os.fsencode(shrinking)])

    assert result.changed == [os.fsencode(shrinking)]
    assert_stored_as_read(repository, tmp_path, shrinking, original[:new_size])


@pytest.mark.parametrize("new_size", [SMALL_SIZE + MEBIBYTE, SMALL_SIZE // 2])
def test_small_file_changes_while_read(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_size: int
) -> None:
    content = os.urandom(max(SMALL_SIZE, new_size))
    changing = write_file(tmp_path / "changing.bin", content[:SMALL_SIZE])
    real_read_xattrs = archiver.read_xattrs

    # The archiver reads a file's extended attributes after it examined the file and
    # before it reads the content, so a change made here lands between the two.
    def change_then_read_xattrs(target: int | bytes, *, follow_symlinks: bool = True
                                ) -> dict[bytes, bytes]:
        if isinstance(target, int) and stat.S_ISREG(os.fstat(target).st_mode):
            with open(changing, "r+b") as stream:
                stream.write(content[:new_size])
                stream.truncate(new_size)
        return real_read_xattrs(target, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(archiver, "read_xattrs", change_then_read_xattrs)
    result = api.backup(repository, [os.fsencode(changing)])

    assert result.changed == [os.fsencode(changing)]
    assert_stored_as_read(repository, tmp_path, changing, content[:new_size])


def test_changed_file_read_again_next_backup(
    repository: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = os.urandom(LARGE_SIZE)
    rewritten = write_file(tmp_path / "rewritten.bin", original)
    # An old mtime makes sure the rewrite below changes it, whatever the clock resolution.
    os.utime(rewritten, ns=(0, 0))
    new_start = os.urandom(MEBIBYTE)

    def rewrite_start() -> None:
        with open(rewritten, "r+b") as stream:
            stream.write(new_start)

    with monkeypatch.context() as patch:
        change_large_file_while_read(patch, 8 * MEBIBYTE, rewrite_start)
        first = api.backup(repository, [os.fsencode(rewritten)])
    assert first.changed == [os.fsencode(rewritten)]

    second = api.backup(repository, [os.fsencode(rewritten)])

    # The first snapshot stored the old first MiB with the new mtime. Its node is marked
    # changed, so the next backup reads the file again instead of reusing its chunks.
    assert second.snapshot.parent == first.snapshot.snapshot_id
    assert second.changed == []
    assert second.snapshot.summary["files_unchanged"] == 0
    assert node_at(repository, rewritten).changed is False
    target = tmp_path / "restored"
    api.restore(repository, "latest", str(target))
    assert restored_location(target, rewritten).read_bytes() == new_start + original[MEBIBYTE:]


def test_normalize_sources_keeps_root_and_resolves_parents(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    source = os.fsencode(tmp_path / "link" / "entry")

    assert normalize_sources([b"/"]) == [b"/"]
    assert normalize_sources([source, source]) == [os.fsencode(tmp_path / "real" / "entry")]
    assert normalize_sources([os.fsencode(tmp_path / "link")]) == [os.fsencode(tmp_path / "link")]

"""Restore into a directory that already holds an older or different copy of the tree.

A restore must replace each entry it restores: the result has exactly the snapshot's
bytes and length, and nothing outside the restored tree changes through a symlink or a
hard link that was in the way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from backvault import api

if TYPE_CHECKING:
    from conftest import LocalRepository, TreeAssertion

LARGE_SIZE = 3 * 1024 * 1024  # bytes, larger than the 512 KiB minimum chunk size


def restored_location(target: Path, source: Path) -> Path:
    return target / source.relative_to(source.anchor)


def write_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def make_source(source: Path) -> None:
    """Create a tree whose every entry the prepared target has in another form."""
    source.mkdir()
    write_file(source / "grows", b"short")
    write_file(source / "shrinks", b"long " * 20_000)
    write_file(source / "same-length", b"new content")
    write_file(source / "large", os.urandom(LARGE_SIZE))
    write_file(source / "was-symlink", b"a regular file now")
    write_file(source / "was-directory", b"a file where a directory was")
    write_file(source / "was-hard-link", b"must not reach the outside file")
    (source / "directory-was-symlink").mkdir()
    write_file(source / "directory-was-symlink" / "inner", b"inside a real directory")
    (source / "directory-was-file").mkdir()
    write_file(source / "directory-was-file" / "inner", b"inside")
    os.symlink("grows", source / "symlink-was-file")
    os.chmod(source / "same-length", 0o640)


def prepare_target(copy: Path, outside: Path) -> None:
    """Fill ``copy``, where the restore will put the source, with conflicting entries."""
    copy.mkdir(parents=True)
    write_file(copy / "grows", b"this existing content is much longer than the snapshot's")
    write_file(copy / "shrinks", b"tiny")
    write_file(copy / "same-length", b"old content")
    os.chmod(copy / "same-length", 0o777)
    write_file(copy / "large", b"\xff" * (LARGE_SIZE + 1024 * 1024))
    os.symlink(outside / "symlink-victim", copy / "was-symlink")
    (copy / "was-directory" / "nested").mkdir(parents=True)
    write_file(copy / "was-directory" / "nested" / "old", b"old")
    os.link(outside / "hard-link-victim", copy / "was-hard-link")
    os.symlink(outside / "directory-victim", copy / "directory-was-symlink")
    write_file(copy / "directory-was-file", b"a file where a directory belongs")
    write_file(copy / "symlink-was-file", b"a file where a symlink belongs")


def make_outside(outside: Path) -> dict[str, bytes]:
    """Create the files that conflicting entries point to. Return their contents."""
    outside.mkdir()
    (outside / "directory-victim").mkdir()
    contents = {
        "symlink-victim": b"reached through a symlink",
        "hard-link-victim": b"reached through a hard link",
        "directory-victim/existing": b"inside a directory reached through a symlink",
    }
    for name, content in contents.items():
        write_file(outside / name, content)
    return contents


def test_restore_replaces_conflicting_entries(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    make_source(source)
    outside = tmp_path / "outside"
    make_outside(outside)
    target = tmp_path / "restored"
    copy = restored_location(target, source)
    prepare_target(copy, outside)
    backup = api.backup(local_repository.repository, [os.fsencode(source)])
    assert backup.skipped == []

    result = api.restore(local_repository.repository, "latest", str(target))

    assert result.damaged == []
    assert result.warnings == []
    for name in ("grows", "shrinks", "same-length", "large", "was-hard-link"):
        expected = (source / name).read_bytes()
        assert (copy / name).read_bytes() == expected, name
        assert os.lstat(copy / name).st_size == len(expected), name
    assert stat.S_ISREG(os.lstat(copy / "was-symlink").st_mode)
    assert stat.S_ISREG(os.lstat(copy / "was-directory").st_mode)
    assert stat.S_ISDIR(os.lstat(copy / "directory-was-symlink").st_mode)
    assert stat.S_ISDIR(os.lstat(copy / "directory-was-file").st_mode)
    assert os.readlink(copy / "symlink-was-file") == "grows"
    assert_same_tree(source, copy)


def test_restore_leaves_outside_files_alone(
    local_repository: LocalRepository, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    make_source(source)
    outside = tmp_path / "outside"
    outside_contents = make_outside(outside)
    hard_link_victim = os.lstat(outside / "hard-link-victim")
    target = tmp_path / "restored"
    copy = restored_location(target, source)
    prepare_target(copy, outside)
    api.backup(local_repository.repository, [os.fsencode(source)])

    api.restore(local_repository.repository, "latest", str(target))

    for name, content in outside_contents.items():
        assert (outside / name).read_bytes() == content, name
    assert sorted(os.listdir(outside / "directory-victim")) == ["existing"]
    after = os.lstat(outside / "hard-link-victim")
    assert after.st_ino == hard_link_victim.st_ino
    assert after.st_mtime_ns == hard_link_victim.st_mtime_ns
    assert after.st_nlink == 1
    assert os.lstat(copy / "was-hard-link").st_ino != hard_link_victim.st_ino


def test_restore_twice_gives_same_tree(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    write_file(source / "linked", b"two names")
    os.link(source / "linked", source / "sub" / "linked-too")
    write_file(source / "large", os.urandom(LARGE_SIZE))
    os.symlink("linked", source / "symlink")
    os.mkfifo(source / "pipe")
    os.chmod(source / "sub", 0o555)
    target = tmp_path / "restored"
    copy = local_repository.back_up_and_restore(source, target)

    second = api.restore(local_repository.repository, "latest", str(target))

    assert second.damaged == []
    assert second.warnings == []
    assert_same_tree(source, copy)

"""Restore fidelity: a restored tree equals its source in content, names and metadata.

Most tests back up a small tree with the API, restore it into an empty directory and
compare both trees entry by entry (see ``assert_same_tree`` in ``tests/conftest.py``).
The tests run as root where they need to set owners or create device nodes, and skip
otherwise.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from backvault import api
from backvault.repository.repository import Repository

if TYPE_CHECKING:
    from conftest import LocalRepository, TreeAssertion

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

IS_ROOT = os.geteuid() == 0
SPARSE_FILE_SIZE = 128 * 1024 * 1024  # bytes, a multiple of the 8 MiB maximum chunk size
LONG_NAME_LENGTH = 200  # bytes per directory name in the long path test
LONG_PATH_MINIMUM = 5000  # bytes, more than the 4096 of PATH_MAX on Linux
NANOSECONDS = 1_000_000_000

needs_root = pytest.mark.skipif(not IS_ROOT, reason="only root can set this metadata")


def restored_location(target: Path, source: Path) -> Path:
    return target / source.relative_to(source.anchor)


def write_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def set_mtime(path: Path | bytes, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def listed_paths(repository: Repository) -> dict[bytes, api.Node]:
    return dict(api.list_files(repository, "latest"))


# Names ------------------------------------------------------------------------------


def test_non_utf8_names_round_trip(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    source_bytes = os.fsencode(source)
    file_name = source_bytes + b"/caf\xe9.txt"
    directory_name = source_bytes + b"/dir-\xff\xfe"
    inner_name = directory_name + b"/\x80inner"
    link_name = source_bytes + b"/link-\xc0"
    with open(file_name, "wb") as stream:
        stream.write(b"latin-1 name")
    os.mkdir(directory_name)
    with open(inner_name, "wb") as stream:
        stream.write(b"inner")
    os.symlink(b"caf\xe9.txt", link_name)

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    listed = listed_paths(local_repository.repository)
    assert listed[file_name].type == "file"
    assert listed[directory_name].type == "dir"
    assert listed[inner_name].type == "file"
    assert listed[link_name].target == b"caf\xe9.txt"
    assert_same_tree(source, restored)


def test_ls_json_carries_exact_name_bytes(
    local_repository: LocalRepository, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    source_bytes = os.fsencode(source)
    invalid_name = source_bytes + b"/bad-\xff\xfe.txt"
    valid_name = source_bytes + b"/gr\xc3\xbc\xc3\x9fe.txt"  # "grüße.txt" in UTF-8
    link_name = source_bytes + b"/link"
    for name in (invalid_name, valid_name):
        with open(name, "wb") as stream:
            stream.write(b"x")
    os.symlink(b"target-\xfe", link_name)
    api.backup(local_repository.repository, [source_bytes])

    completed = local_repository.run_cli("ls", "--json", "latest")

    assert completed.returncode == 0, completed.stderr
    entries = [json.loads(line) for line in completed.stdout.splitlines()]
    by_path = {
        base64.b64decode(entry["path_base64"]) if "path_base64" in entry
        else entry["path"].encode(): entry
        for entry in entries
    }
    assert "\ufffd" in by_path[invalid_name]["path"]
    assert "path_base64" not in by_path[valid_name]
    assert by_path[valid_name]["path"] == valid_name.decode()
    assert base64.b64decode(by_path[link_name]["target_base64"]) == b"target-\xfe"


def test_normalization_twins_both_kept(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    composed = unicodedata.normalize("NFC", "caf\u00e9")
    decomposed = unicodedata.normalize("NFD", "caf\u00e9")
    assert composed != decomposed
    write_file(source / composed, b"composed")
    write_file(source / decomposed, b"decomposed")
    if len(os.listdir(source)) != 2:
        pytest.skip("the file system of tmp_path normalizes file names")

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    listed = listed_paths(local_repository.repository)
    assert os.fsencode(source / composed) in listed
    assert os.fsencode(source / decomposed) in listed
    assert (restored / composed).read_bytes() == b"composed"
    assert (restored / decomposed).read_bytes() == b"decomposed"
    assert_same_tree(source, restored)


# Links ------------------------------------------------------------------------------


def test_symlinks_keep_exact_targets(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    (source / "directory").mkdir(parents=True)
    write_file(source / "file.txt", b"pointed at")
    targets = {
        b"relative": b"file.txt",
        b"absolute": os.fsencode(source / "file.txt"),
        b"to-directory": b"directory",
        b"dangling": b"does/not/exist",
        b"non-utf8": b"caf\xe9/\xff",
        b"long": b"x/" * 1000,
    }
    source_bytes = os.fsencode(source)
    for name, target in targets.items():
        os.symlink(target, source_bytes + b"/" + name)

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    restored_bytes = os.fsencode(restored)
    for name, target in targets.items():
        assert os.readlink(restored_bytes + b"/" + name) == target
    assert os.path.islink(restored / "dangling")
    assert_same_tree(source, restored)


def test_hard_links_restored_as_links(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    write_file(source / "first", b"three names")
    os.link(source / "first", source / "second")
    os.link(source / "first", source / "sub" / "third")
    write_file(source / "pair-a", b"two names")
    os.link(source / "pair-a", source / "sub" / "pair-b")
    write_file(source / "single", b"three names")  # same content, different inode

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    first = os.lstat(restored / "first")
    assert os.lstat(restored / "second").st_ino == first.st_ino
    assert os.lstat(restored / "sub" / "third").st_ino == first.st_ino
    assert first.st_nlink == 3
    pair = os.lstat(restored / "pair-a")
    assert os.lstat(restored / "sub" / "pair-b").st_ino == pair.st_ino
    assert pair.st_nlink == 2
    assert os.lstat(restored / "single").st_ino != first.st_ino
    assert os.lstat(restored / "single").st_nlink == 1
    assert_same_tree(source, restored)


def test_files_after_hard_link_keep_content(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    # A second name of a hard link reads no blobs; the files after it in the same
    # directory must still get their own content, not their neighbour's.
    source = tmp_path / "source"
    source.mkdir()
    write_file(source / "a", b"content of a")
    os.link(source / "a", source / "b")
    write_file(source / "c", b"content of c")
    write_file(source / "d", b"content of d, longer than c")

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    assert (restored / "c").read_bytes() == b"content of c"
    assert (restored / "d").read_bytes() == b"content of d, longer than c"
    assert_same_tree(source, restored)


# Contents ---------------------------------------------------------------------------


def test_empty_files_and_directories(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    (source / "empty-directory").mkdir(parents=True)
    (source / "nested" / "empty" / "deeper").mkdir(parents=True)
    write_file(source / "empty-file", b"")
    write_file(source / "nested" / "empty-file", b"")

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    node = listed_paths(local_repository.repository)[os.fsencode(source / "empty-file")]
    assert node.size == 0
    assert node.content == []
    assert (restored / "empty-file").read_bytes() == b""
    assert os.listdir(restored / "empty-directory") == []
    assert_same_tree(source, restored)


def test_sparse_file_restored_sparse(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    sparse = source / "sparse.img"
    data = os.urandom(4096)
    with open(sparse, "wb") as stream:
        stream.truncate(SPARSE_FILE_SIZE)
        stream.seek(SPARSE_FILE_SIZE // 2)
        stream.write(data)
    if os.stat(sparse).st_blocks * 512 > SPARSE_FILE_SIZE // 16:
        pytest.skip("the file system of tmp_path does not keep holes")

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    restored_sparse = restored / "sparse.img"
    st = os.stat(restored_sparse)
    assert st.st_size == SPARSE_FILE_SIZE
    # Only the chunks around the written block are allocated. A chunk is at most 8 MiB,
    # so two chunks take at most 16 MiB of the 128 MiB.
    assert st.st_blocks * 512 <= SPARSE_FILE_SIZE // 8
    with open(restored_sparse, "rb") as stream:
        stream.seek(SPARSE_FILE_SIZE // 2)
        assert stream.read(len(data)) == data
    assert_same_tree(source, restored)


# Special files ----------------------------------------------------------------------


def test_fifo_recorded_without_reading(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    os.mkfifo(source / "pipe", 0o640)
    write_file(source / "after-pipe", b"still backed up")

    # A backup that opened the FIFO for reading would block until the timeout, because
    # nothing ever writes to it.
    completed = local_repository.run_cli("backup", source, timeout=60)

    assert completed.returncode == 0, completed.stderr
    node = listed_paths(local_repository.repository)[os.fsencode(source / "pipe")]
    assert node.type == "fifo"
    assert node.size == 0
    assert node.content == []
    target = tmp_path / "restored"
    result = api.restore(local_repository.repository, "latest", str(target))
    assert result.warnings == []
    restored = restored_location(target, source)
    assert stat.S_ISFIFO(os.lstat(restored / "pipe").st_mode)
    assert_same_tree(source, restored)


@needs_root
def test_device_nodes_keep_rdev(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    null_device = os.makedev(1, 3)
    loop_device = os.makedev(7, 0)
    try:
        os.mknod(source / "null", stat.S_IFCHR | 0o666, null_device)
        os.mknod(source / "loop", stat.S_IFBLK | 0o660, loop_device)
    except PermissionError:
        pytest.skip("this process may not create device nodes (no CAP_MKNOD)")
    os.mknod(source / "socket", stat.S_IFSOCK | 0o600)

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    null = os.lstat(restored / "null")
    assert stat.S_ISCHR(null.st_mode)
    assert null.st_rdev == null_device
    loop = os.lstat(restored / "loop")
    assert stat.S_ISBLK(loop.st_mode)
    assert loop.st_rdev == loop_device
    assert stat.S_ISSOCK(os.lstat(restored / "socket").st_mode)
    assert_same_tree(source, restored)


# Metadata ---------------------------------------------------------------------------


def test_permission_bits_restored(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    modes = {
        "setuid": 0o4755,
        "setgid": 0o2750,
        "all-special-bits": 0o7777,
        "no-access": 0o000,
        "read-only": 0o444,
    }
    for name, mode in modes.items():
        write_file(source / name, name.encode())
        os.chmod(source / name, mode)
    (source / "sticky").mkdir(mode=0o777)
    os.chmod(source / "sticky", 0o1777)
    (source / "setgid-directory").mkdir()
    os.chmod(source / "setgid-directory", 0o2775)
    read_only = source / "read-only-directory"
    (read_only / "sub").mkdir(parents=True)
    write_file(read_only / "inside", b"in a read-only directory")
    write_file(read_only / "sub" / "deeper", b"deeper")
    os.chmod(read_only / "sub", 0o500)
    os.chmod(read_only, 0o555)
    closed = source / "closed-directory"
    closed.mkdir()
    write_file(closed / "hidden", b"in a directory with mode 000")
    os.chmod(closed, 0o000)

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    for name, mode in modes.items():
        assert stat.S_IMODE(os.lstat(restored / name).st_mode) == mode, name
    assert stat.S_IMODE(os.lstat(restored / "sticky").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(restored / "read-only-directory").st_mode) == 0o555
    assert (restored / "read-only-directory" / "inside").read_bytes() == b"in a read-only directory"
    assert_same_tree(source, restored)


@needs_root
def test_owners_restored(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    (source / "directory").mkdir(parents=True)
    write_file(source / "file", b"owned by someone else")
    write_file(source / "directory" / "setuid", b"setuid after chown")
    os.symlink("file", source / "link")
    os.mkfifo(source / "pipe")
    owners = {
        "file": (1234, 5678),
        "directory": (2345, 6789),
        "directory/setuid": (3456, 7890),
        "link": (4567, 8901),
        "pipe": (5678, 9012),
    }
    for name, (uid, gid) in owners.items():
        os.chown(source / name, uid, gid, follow_symlinks=False)
    # chown clears setuid, so the mode is set after the owner, as a restore must do.
    os.chmod(source / "directory" / "setuid", 0o4755)

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    for name, (uid, gid) in owners.items():
        st = os.lstat(restored / name)
        assert (st.st_uid, st.st_gid) == (uid, gid), name
    assert stat.S_IMODE(os.lstat(restored / "directory" / "setuid").st_mode) == 0o4755
    assert_same_tree(source, restored)


def first_time_kept(probe: Path, candidate_seconds: list[int]) -> int:
    """Return the first candidate time (seconds, plus nanoseconds) that ``probe`` keeps."""
    for seconds in candidate_seconds:
        mtime_ns = seconds * NANOSECONDS + 123_456_789
        set_mtime(probe, mtime_ns)
        if os.lstat(probe).st_mtime_ns == mtime_ns:
            return mtime_ns
    pytest.skip(f"the file system of {probe.parent} keeps none of the times {candidate_seconds}")


def test_times_before_1970_and_after_2038(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    probe = write_file(tmp_path / "probe", b"")
    # ext4 keeps -2**31 s to about 2**34 - 2**31 s, so the most extreme values fall back.
    before_1970 = first_time_kept(probe, [-(2**33), -(2**31) + 1, -1_000_000_000])
    after_2038 = first_time_kept(probe, [2**34, 2**33, 2**31 + 1])
    assert before_1970 < 0
    assert after_2038 > 2**31 * NANOSECONDS

    for label, mtime_ns in (("old", before_1970), ("future", after_2038)):
        directory = source / f"{label}-directory"
        directory.mkdir()
        file = write_file(directory / f"{label}-file", label.encode())
        link = directory / f"{label}-link"
        link.symlink_to(file.name)
        for path in (file, link, directory):
            set_mtime(path, mtime_ns)
    set_mtime(source, before_1970)

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    assert os.lstat(restored / "old-directory" / "old-file").st_mtime_ns == before_1970
    assert os.lstat(restored / "future-directory" / "future-file").st_mtime_ns == after_2038
    assert os.lstat(restored / "future-directory").st_mtime_ns == after_2038
    assert os.lstat(restored).st_mtime_ns == before_1970
    assert_same_tree(source, restored)


def test_xattrs_on_files_and_directories(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    (source / "directory").mkdir(parents=True)
    file = write_file(source / "file", b"with attributes")
    try:
        os.setxattr(file, "user.backvault.text", b"plain value")
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("the file system of tmp_path rejects user.* extended attributes")
        raise
    os.setxattr(file, "user.backvault.binary", bytes(range(256)))
    os.setxattr(file, "user.backvault.empty", b"")
    os.setxattr(source / "directory", "user.backvault.directory", b"on a directory")

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    assert os.getxattr(restored / "file", "user.backvault.binary") == bytes(range(256))
    assert os.getxattr(restored / "file", "user.backvault.empty") == b""
    assert os.getxattr(restored / "directory", "user.backvault.directory") == b"on a directory"
    assert_same_tree(source, restored)


# Paths ------------------------------------------------------------------------------


def make_deep_directory(root: Path, depth: int) -> list[bytes]:
    """Create ``depth`` nested directories with long names under ``root``. Return the names.

    The directories are made relative to open directory descriptors, because the full
    path grows past PATH_MAX.
    """
    names = [f"{level:03d}-".encode() + b"d" * (LONG_NAME_LENGTH - 4) for level in range(depth)]
    dir_fd = os.open(root, DIRECTORY_FLAGS)
    try:
        for name in names:
            os.mkdir(name, dir_fd=dir_fd)
            child_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = child_fd
        fd = os.open(b"bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dir_fd)
        try:
            os.write(fd, b"at the bottom of a long path")
        finally:
            os.close(fd)
        os.link(b"bottom.txt", b"bottom-link.txt", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.symlink(b"bottom.txt", b"bottom-symlink", dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return names


def read_deep_file(root: Path, names: list[bytes]) -> bytes:
    dir_fd = os.open(root, DIRECTORY_FLAGS)
    try:
        for name in names:
            child_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = child_fd
        fd = os.open(b"bottom.txt", os.O_RDONLY, dir_fd=dir_fd)
        try:
            return os.read(fd, 1024)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def test_paths_longer_than_path_max(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    depth = LONG_PATH_MINIMUM // (LONG_NAME_LENGTH + 1) + 1
    names = make_deep_directory(source, depth)
    bottom = b"/".join([os.fsencode(source), *names, b"bottom.txt"])
    assert len(bottom) > LONG_PATH_MINIMUM

    restored = local_repository.back_up_and_restore(source, tmp_path / "restored")

    listed = listed_paths(local_repository.repository)
    assert listed[bottom].size == len(b"at the bottom of a long path")
    assert read_deep_file(restored, names) == b"at the bottom of a long path"
    assert_same_tree(source, restored)


# Selection --------------------------------------------------------------------------


def make_two_subtrees(source: Path) -> None:
    (source / "wanted" / "inner").mkdir(parents=True)
    write_file(source / "wanted" / "file", b"wanted")
    write_file(source / "wanted" / "inner" / "deep", b"deep")
    # A sibling whose name starts with the included name must stay out.
    (source / "wanted-not").mkdir()
    write_file(source / "wanted-not" / "file", b"not wanted")
    write_file(source / "top-level", b"not wanted")


def test_include_restores_only_subtree(
    repository: Repository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    make_two_subtrees(source)
    api.backup(repository, [os.fsencode(source)])
    target = tmp_path / "restored"

    result = api.restore(repository, "latest", str(target), include=[str(source / "wanted")])

    restored = restored_location(target, source)
    assert sorted(os.listdir(restored)) == ["wanted"]
    assert result.files == 2
    assert_same_tree(source / "wanted", restored / "wanted")


def test_cli_include_restores_only_subtree(
    local_repository: LocalRepository, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    source = tmp_path / "source"
    make_two_subtrees(source)
    api.backup(local_repository.repository, [os.fsencode(source)])
    target = tmp_path / "restored"

    completed = local_repository.run_cli(
        "restore", "latest", "--target", target, "--include", source / "wanted" / "inner"
    )

    assert completed.returncode == 0, completed.stderr
    restored = restored_location(target, source)
    assert sorted(os.listdir(restored)) == ["wanted"]
    assert sorted(os.listdir(restored / "wanted")) == ["inner"]
    assert_same_tree(source / "wanted" / "inner", restored / "wanted" / "inner")

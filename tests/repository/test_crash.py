"""Crash tests: a real ``backvault backup`` process killed with SIGKILL at several points.

The backup writes packs first, then index files that list them, then the snapshot. Each
test kills the process at one stage, found by polling the repository's folders. Then
``check`` and ``check --read-data`` must pass, and the next command must remove the dead
process's lock. The next backup must index the orphaned packs, store none of their data
again, and write a snapshot that restores byte for byte.

About 150 MB of test data is generated once per module from fixed seeds: 3000 small text
files that the walk reads first, random (incompressible) files and hex text
(compressible to about half).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from backvault import api
from backvault.crypto.recovery import RecoveryKey
from backvault.repository.config import encode_config
from backvault.repository.format import MAGIC_LOCK, open_encrypted_file
from backvault.repository.pack import BlobType, PackEntry
from backvault.repository.repository import Repository

MEBIBYTE = 1024 * 1024
SMALL_FILES = 3000
RANDOM_FILES = 6
TEXT_FILES = 4
LARGE_FILE_SIZE = 15 * MEBIBYTE

# With the default 16 MiB packs and an index file every 32 packs, the first index file
# would appear only after 512 MiB. With 1 MiB packs, 150 MB make about 90 packs and two
# index files before the snapshot, so every kill point below can be reached.
PACK_SIZE = 1 * MEBIBYTE

POLL_INTERVAL = 0.002  # seconds
BACKUP_TIMEOUT = 60.0  # seconds
TEMPORARY_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Dataset:
    source: Path
    digests: dict[str, str]  # relative path to SHA-256 hex digest
    total_bytes: int


def write_dataset(source: Path) -> Dataset:
    rng = random.Random(20240607)
    files: dict[str, bytes] = {}
    # "000-small" sorts first, so the walk starts with small files that do not fill a
    # pack. That leaves a window in which the lock exists and no pack does.
    for number in range(SMALL_FILES):
        files[f"000-small/file-{number:04d}.txt"] = (
            b"small file %d\n" % number + rng.randbytes(100).hex().encode()
        )
    for number in range(RANDOM_FILES):
        files[f"random-{number}.bin"] = rng.randbytes(LARGE_FILE_SIZE)
    for number in range(TEXT_FILES):
        files[f"text-{number}.txt"] = rng.randbytes(LARGE_FILE_SIZE // 2).hex().encode()

    digests = {}
    for name, content in files.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        digests[name] = hashlib.sha256(content).hexdigest()
    return Dataset(source, digests, sum(len(content) for content in files.values()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_dataset(tmp_path_factory.mktemp("crash-source"))


# Repository helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    root: Path
    recovery_key: RecoveryKey
    environment: dict[str, str]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    root = tmp_path / "repository"
    repository, recovery_key = api.init_repository(str(root))
    config = dataclasses.replace(repository.config, pack_size=PACK_SIZE)
    config_bytes = encode_config(config, repository.subkeys.config_mac)
    repository.backend.write("config", "config", config_bytes)

    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(recovery_key.format() + "\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BACKVAULT_")}
    environment["BACKVAULT_RECOVERY_KEY_FILE"] = str(key_file)
    return Setup(root, recovery_key, environment)


def backvault_command() -> list[str]:
    script = Path(sys.executable).with_name("backvault")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "backvault.cli.main"]


def run(setup: Setup, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*backvault_command(), *arguments, "--repo", str(setup.root)],
        capture_output=True, text=True, env=setup.environment, stdin=subprocess.DEVNULL,
        timeout=BACKUP_TIMEOUT, check=False,
    )


def object_names(root: Path, kind: str) -> list[str]:
    """Return the complete objects of ``kind``, without temporary files."""
    folders = [entry.path for entry in os.scandir(root / "data")] if kind == "data" else [
        str(root / kind)
    ]
    return sorted(
        entry.name for folder in folders for entry in os.scandir(folder)
        if not entry.name.startswith(TEMPORARY_PREFIX)
    )


def open_repository(setup: Setup) -> Repository:
    return api.open_repository(str(setup.root), recovery_key=setup.recovery_key)


def lock_pids(setup: Setup) -> dict[str, int]:
    """Return the pid recorded in each lock file, by lock file name."""
    repository = open_repository(setup)
    pids = {}
    for name in object_names(setup.root, "locks"):
        data = repository.backend.read("locks", name)
        body = open_encrypted_file(MAGIC_LOCK, repository.subkeys.metadata, data, subject=name)
        pids[name] = int(msgpack.unpackb(body, raw=False)["pid"])
    return pids


@dataclass(frozen=True)
class StoredPacks:
    """The packs in a repository: their entries, and which ones an index file lists."""

    entries: dict[str, list[PackEntry]]
    indexed: set[str]

    @property
    def orphans(self) -> set[str]:
        return set(self.entries) - self.indexed

    def blob_ids(self) -> set[bytes]:
        return {entry.blob_id for entries in self.entries.values() for entry in entries}

    def raw_bytes(self, blob_type: BlobType | None = None) -> int:
        return sum(
            entry.raw_length for entries in self.entries.values() for entry in entries
            if blob_type is None or entry.blob_type == blob_type
        )


def read_stored_packs(setup: Setup) -> StoredPacks:
    """Read every pack header and index file, without writing to the repository."""
    repository = open_repository(setup)
    entries = {
        name: repository.read_pack_header(name, size).entries
        for name, size in repository.backend.list("data")
    }
    indexed = {
        pack.pack_id
        for name in object_names(setup.root, "index")
        for pack in repository.read_index_file(name)
    }
    return StoredPacks(entries, indexed)


# Killing the backup ---------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    locks: int
    packs: int
    indexes: int
    snapshots: int


def read_progress(root: Path) -> Progress:
    return Progress(
        locks=len(object_names(root, "locks")),
        packs=len(object_names(root, "data")),
        indexes=len(object_names(root, "index")),
        snapshots=len(object_names(root, "snapshots")),
    )


@dataclass(frozen=True)
class KillPoint:
    name: str
    reached: Callable[[Progress], bool]  # polled while the backup runs
    holds: Callable[[Progress], bool]  # must still be true after the kill


# A seeded "random" pack count for the last kill point: past the first index file (32
# packs), and well before the end (about 90 packs).
LATE_PACK_COUNT = random.Random(97).randint(40, 75)

KILL_POINTS = [
    KillPoint(
        "before-first-pack",
        reached=lambda progress: progress.locks > 0,
        holds=lambda progress: progress.packs == 0,
    ),
    KillPoint(
        "after-first-pack",
        reached=lambda progress: progress.packs > 0,
        holds=lambda progress: progress.packs > 0 and progress.indexes == 0,
    ),
    KillPoint(
        "after-first-index",
        reached=lambda progress: progress.indexes > 0,
        holds=lambda progress: progress.indexes > 0 and progress.snapshots == 0,
    ),
    KillPoint(
        "late",
        reached=lambda progress: progress.packs >= LATE_PACK_COUNT,
        holds=lambda progress: progress.packs >= LATE_PACK_COUNT and progress.snapshots == 0,
    ),
]


def kill_backup_at(setup: Setup, dataset: Dataset, point: KillPoint) -> int:
    """Start a backup, SIGKILL it when ``point`` is reached, and return its pid."""
    process = subprocess.Popen(
        [*backvault_command(), "backup", "--repo", str(setup.root), str(dataset.source)],
        env=setup.environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + BACKUP_TIMEOUT
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if point.reached(read_progress(setup.root)):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(POLL_INTERVAL)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=BACKUP_TIMEOUT)

    assert process.returncode == -signal.SIGKILL, (
        f"the backup ended with {process.returncode} before {point.name}: {stderr!r}"
    )
    return process.pid


def assert_restores(setup: Setup, dataset: Dataset, target: Path) -> None:
    completed = run(setup, "restore", "latest", "--target", str(target))
    assert completed.returncode == 0, completed.stderr

    restored = target / dataset.source.relative_to("/")
    found = {
        str(path.relative_to(restored)) for path in restored.rglob("*") if path.is_file()
    }
    assert found == set(dataset.digests)
    for name, digest in dataset.digests.items():
        assert hashlib.sha256((restored / name).read_bytes()).hexdigest() == digest, name


# The test -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS, ids=[point.name for point in KILL_POINTS])
def test_backup_killed(
    setup: Setup, dataset: Dataset, point: KillPoint, tmp_path: Path
) -> None:
    dead_pid = kill_backup_at(setup, dataset, point)
    progress = read_progress(setup.root)
    assert point.holds(progress), f"{point.name} missed: {progress}"

    # The dead backup's lock is still there, and the next command removes it.
    stale_locks = lock_pids(setup)
    assert list(stale_locks.values()) == [dead_pid]
    before = read_stored_packs(setup)

    check = run(setup, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert object_names(setup.root, "locks") == []
    for orphan in before.orphans:
        assert f"note: pack {orphan} is not in the index" in check.stdout

    check_data = run(setup, "check", "--read-data")
    assert check_data.returncode == 0, check_data.stdout + check_data.stderr
    assert f"{len(before.entries)} packs read" in check_data.stdout

    backup = run(setup, "backup", "--json", str(dataset.source))
    assert backup.returncode == 0, backup.stderr
    report = json.loads(backup.stdout)
    assert sorted(report["recovered_packs"]) == sorted(before.orphans)
    if point.name != "before-first-pack":
        assert before.entries, "the killed backup had written packs"

    # Nothing that the killed backup stored is stored again.
    after = read_stored_packs(setup)
    assert set(before.entries) <= set(after.entries)
    added = StoredPacks(
        {name: entries for name, entries in after.entries.items() if name not in before.entries},
        set(),
    )
    assert added.blob_ids().isdisjoint(before.blob_ids())
    summary = report["summary"]
    assert summary["bytes_total"] == dataset.total_bytes
    assert summary["bytes_added"] == added.raw_bytes()
    assert (
        added.raw_bytes(BlobType.DATA) + before.raw_bytes(BlobType.DATA)
        == dataset.total_bytes
    )
    assert after.orphans == set()

    # The restore below reads every blob the snapshot needs, so a plain check suffices.
    final_check = run(setup, "check")
    assert final_check.returncode == 0, final_check.stdout + final_check.stderr
    assert "note:" not in final_check.stdout
    assert_restores(setup, dataset, tmp_path / "restored")
    shutil.rmtree(tmp_path / "restored")

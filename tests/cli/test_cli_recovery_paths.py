"""The command line when a user gives a wrong path or the repository is partly damaged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from backvault import api

if TYPE_CHECKING:
    from tests.conftest import LocalRepository

from tests.conftest import backvault_executable


def make_source(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "documents").mkdir(parents=True)
    (source / "documents" / "letter.txt").write_bytes(b"dear reader")
    (source / "notes.txt").write_bytes(b"a note")
    return source


def test_restore_include_missing_path_rejected(
    local_repository: LocalRepository, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    api.backup(local_repository.repository, [os.fsencode(source)])
    missing = source / "no-such-folder"

    completed = local_repository.run_cli(
        "restore", "latest", "--target", tmp_path / "out", "--include", missing
    )

    stderr = completed.stderr.decode()
    assert completed.returncode == 2, stderr
    assert f"error: {missing} is not in snapshot" in stderr
    assert "hint: List what it holds with 'backvault ls" in stderr
    assert not (tmp_path / "out").exists()


def test_restore_include_relative_path(
    local_repository: LocalRepository, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    api.backup(local_repository.repository, [os.fsencode(source)])
    arguments = [
        backvault_executable(), "restore", "latest", "--repo", local_repository.location,
        "--recovery-key-file", local_repository.key_file, "--target", tmp_path / "out",
        "--include", "source/documents",
    ]

    completed = subprocess.run(
        arguments, cwd=tmp_path, capture_output=True, timeout=60, check=False
    )

    assert completed.returncode == 0, completed.stderr.decode()
    restored = tmp_path / "out" / source.relative_to("/")
    assert (restored / "documents" / "letter.txt").read_bytes() == b"dear reader"
    assert not (restored / "notes.txt").exists()


def test_damaged_snapshot_does_not_hide_others(
    local_repository: LocalRepository, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    first = api.backup(local_repository.repository, [os.fsencode(source)]).snapshot
    (source / "notes.txt").write_bytes(b"a longer note, changed")
    second = api.backup(local_repository.repository, [os.fsencode(source)]).snapshot
    damaged = local_repository.location / "snapshots" / first.snapshot_id
    damaged.write_bytes(damaged.read_bytes()[:-5])

    listed = local_repository.run_cli("snapshots")
    restored = local_repository.run_cli("restore", "latest", "--target", tmp_path / "out")
    checked = local_repository.run_cli("check")

    assert listed.returncode == 13, listed.stderr.decode()
    assert second.short_id in listed.stdout.decode()
    assert f"error: snapshot {first.snapshot_id}: decryption" in listed.stderr.decode()
    assert restored.returncode == 0, restored.stderr.decode()
    assert checked.returncode == 13
    assert first.snapshot_id in checked.stdout.decode()


def test_init_sheet_in_missing_directory_creates_nothing(tmp_path: Path) -> None:
    repository = tmp_path / "repository"

    completed = subprocess.run(
        [
            backvault_executable(), "init", "--repo", repository, "--no-confirm",
            "--sheet", tmp_path / "missing" / "sheet.html",
        ],
        capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )

    assert completed.returncode == 2
    assert "cannot write the recovery sheet" in completed.stderr.decode()
    assert not repository.exists()

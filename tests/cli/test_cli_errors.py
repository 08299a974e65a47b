"""Error output of the real ``backvault`` command, run as a subprocess.

Every failure prints exactly two lines on standard error, ``error: ...`` and then
``hint: ...``, never a traceback, and exits with the code of its error class in
``backvault.errors``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from backvault import api
from backvault.crypto.recovery import RecoveryKey
from backvault.repository.pack import BlobType

EXIT_USAGE = 2
EXIT_NOT_FOUND = 10
EXIT_WRONG_KEY = 12
EXIT_DAMAGED = 13
EXIT_UNSUPPORTED = 14

KEY_LINE = re.compile(r"^\s*([0-9a-f]{4}(?: [0-9a-f]{4}){15})\s*$", re.MULTILINE)


def backvault_command() -> list[str]:
    script = Path(sys.executable).with_name("backvault")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "backvault.cli.main"]


def clean_environment(**variables: str) -> dict[str, str]:
    """Return the environment without BACKVAULT_* variables, plus ``variables``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BACKVAULT_")}
    environment.update(variables)
    return environment


def run(*arguments: str, environment: dict[str, str],
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*backvault_command(), *arguments], capture_output=True, text=True,
        env=environment, stdin=subprocess.DEVNULL, cwd=cwd, timeout=120, check=False,
    )


def assert_error(
    completed: subprocess.CompletedProcess[str], exit_code: int, message: str
) -> str:
    """Check the two stderr lines, the error message and the exit code, then return the hint."""
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 2, completed.stderr
    error, hint = lines
    assert error.startswith("error: "), completed.stderr
    assert hint.startswith("hint: "), completed.stderr
    assert len(hint) > len("hint: ")
    assert message in error
    assert completed.returncode == exit_code, completed.stderr
    return hint.removeprefix("hint: ")


@dataclass(frozen=True)
class Template:
    root: Path
    source: Path
    recovery_key: RecoveryKey


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("cli-errors")
    source = base / "source"
    source.mkdir()
    (source / "notes.txt").write_text("some notes\n" * 100)
    (source / "data.bin").write_bytes(bytes(range(256)) * 40)
    repository, recovery_key = api.init_repository(str(base / "repository"))
    api.backup(repository, [str(source)])
    return Template(base / "repository", source, recovery_key)


@dataclass(frozen=True)
class Setup:
    root: Path
    key_file: Path
    environment: dict[str, str]
    template: Template


@pytest.fixture
def setup(template: Template, tmp_path: Path) -> Setup:
    """Return a copy of the repository and an environment that unlocks it."""
    root = Path(shutil.copytree(template.root, tmp_path / "repository"))
    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(template.recovery_key.format() + "\n")
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_FILE=str(key_file))
    return Setup(root, key_file, environment, template)


def files_of(root: Path, kind: str) -> list[Path]:
    if kind == "data":
        return sorted(root.glob("data/*/*"))
    return sorted((root / kind).iterdir())


def data_pack(setup: Setup) -> Path:
    """Return the pack of file contents; trees live in a pack of their own."""
    repository = api.open_repository(str(setup.root), recovery_key=setup.template.recovery_key)
    repository.load_index()
    (pack_id,) = [
        pack.pack_id
        for pack in repository.index.packs()
        if all(entry.blob_type == BlobType.DATA for entry in pack.entries)
    ]
    (path,) = [path for path in files_of(setup.root, "data") if path.name == pack_id]
    return path


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# The working case -----------------------------------------------------------------------


def test_snapshots_with_key_file(setup: Setup) -> None:
    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert "1 snapshot(s)" in completed.stdout


def test_key_command_with_cat(setup: Setup) -> None:
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_COMMAND=f"cat {setup.key_file}")

    completed = run("snapshots", "--repo", str(setup.root), environment=environment)

    assert completed.returncode == 0, completed.stderr
    assert "1 snapshot(s)" in completed.stdout


def test_repository_from_environment(setup: Setup) -> None:
    environment = {**setup.environment, "BACKVAULT_REPOSITORY": str(setup.root)}

    completed = run("snapshots", environment=environment)

    assert completed.returncode == 0, completed.stderr


# Keys -----------------------------------------------------------------------------------


def test_wrong_key(setup: Setup) -> None:
    setup.key_file.write_text(RecoveryKey.generate().format() + "\n")

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_WRONG_KEY, "the recovery key does not open this repository")


def test_wrong_key_in_key_verify(setup: Setup) -> None:
    setup.key_file.write_text(RecoveryKey.generate().format() + "\n")

    completed = run("key", "verify", "--repo", str(setup.root), environment=setup.environment)

    hint = assert_error(completed, EXIT_WRONG_KEY, "not the one of this repository")
    assert "(id " in hint


def mistype_digit(key: RecoveryKey, group: int, digit: int) -> str:
    groups = key.groups()
    typed = list(groups[group - 1])
    typed[digit] = "0123456789abcdef"[(int(typed[digit], 16) + 1) % 16]
    groups[group - 1] = "".join(typed)
    return " ".join(groups)


@pytest.mark.parametrize(("group", "digit"), [(1, 0), (9, 2), (16, 3)])
def test_mistyped_key_names_group(setup: Setup, group: int, digit: int) -> None:
    setup.key_file.write_text(mistype_digit(setup.template.recovery_key, group, digit) + "\n")

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    hint = assert_error(completed, EXIT_USAGE, f"group {group} (digits ")
    assert f"group {group}" in hint
    assert setup.template.recovery_key.format() not in completed.stderr


def test_key_with_letter_o_names_digit(setup: Setup) -> None:
    groups = setup.template.recovery_key.groups()
    groups[4] = "o" + groups[4][1:]
    setup.key_file.write_text(" ".join(groups) + "\n")

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    hint = assert_error(completed, EXIT_USAGE, "in group 5, which is not a hex digit")
    assert "probably the digit 0" in hint


def test_key_with_missing_digit(setup: Setup) -> None:
    setup.key_file.write_text(setup.template.recovery_key.format()[:-1] + "\n")

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_USAGE, "has 63 hex digits, expected 64")


def test_missing_key_file(setup: Setup, tmp_path: Path) -> None:
    absent = tmp_path / "no-such-key.txt"
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_FILE=str(absent))

    completed = run("snapshots", "--repo", str(setup.root), environment=environment)

    assert_error(completed, EXIT_USAGE, f"recovery key file {absent} does not exist")


def test_missing_key_file_option(setup: Setup, tmp_path: Path) -> None:
    absent = tmp_path / "no-such-key.txt"

    completed = run(
        "snapshots", "--repo", str(setup.root), "--recovery-key-file", str(absent),
        environment=setup.environment,
    )

    assert_error(completed, EXIT_USAGE, f"recovery key file {absent} does not exist")


def test_key_file_is_directory(setup: Setup, tmp_path: Path) -> None:
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_FILE=str(tmp_path))

    completed = run("snapshots", "--repo", str(setup.root), environment=environment)

    assert_error(completed, EXIT_USAGE, f"cannot read recovery key file {tmp_path}")


def test_failing_key_command(setup: Setup) -> None:
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_COMMAND="false")

    completed = run("snapshots", "--repo", str(setup.root), environment=environment)

    assert_error(completed, EXIT_USAGE, "failed with exit code 1")


def test_missing_key_command(setup: Setup) -> None:
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_COMMAND="no-such-command-xyz")

    completed = run("snapshots", "--repo", str(setup.root), environment=environment)

    assert_error(completed, EXIT_USAGE, "cannot run BACKVAULT_RECOVERY_KEY_COMMAND")


def test_key_command_prints_nothing(setup: Setup) -> None:
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_COMMAND="true")

    completed = run("snapshots", "--repo", str(setup.root), environment=environment)

    assert_error(completed, EXIT_USAGE, "has 0 hex digits")


def test_no_key_source_and_no_terminal(setup: Setup) -> None:
    completed = run("snapshots", "--repo", str(setup.root), environment=clean_environment())

    assert_error(completed, EXIT_USAGE, "no recovery key given")


# Repositories ---------------------------------------------------------------------------


def test_missing_repository(setup: Setup, tmp_path: Path) -> None:
    completed = run(
        "snapshots", "--repo", str(tmp_path / "absent"), environment=setup.environment
    )

    assert_error(completed, EXIT_NOT_FOUND, "no repository found at")


def test_missing_repo_option(setup: Setup) -> None:
    completed = run("snapshots", environment=setup.environment)

    hint = assert_error(completed, EXIT_USAGE, "no repository given")
    assert "--repo" in hint
    assert "BACKVAULT_REPOSITORY" in hint


def test_init_existing_repository(setup: Setup) -> None:
    completed = run("init", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_NOT_FOUND, "a repository already exists")


def test_newer_format_version(setup: Setup) -> None:
    data = bytearray((setup.root / "config").read_bytes())
    data[4] = 2
    (setup.root / "config").write_bytes(bytes(data))

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    hint = assert_error(completed, EXIT_UNSUPPORTED, "format version 2 is newer")
    assert "Upgrade backvault" in hint


def test_not_a_repository_config(setup: Setup) -> None:
    (setup.root / "config").write_bytes(b"this is not a backvault config file\n")

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_UNSUPPORTED, "not a backvault BVCF structure")


def test_missing_keys_folder(setup: Setup) -> None:
    shutil.rmtree(setup.root / "keys")

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 2, completed.stderr
    assert lines[0].startswith("error: ")
    assert "keys" in lines[0]
    assert lines[1].startswith("hint: ")
    # A storage error, not "wrong key": the key may well be right.
    assert completed.returncode == 1


def test_missing_index_folder_reported_by_check(setup: Setup) -> None:
    shutil.rmtree(setup.root / "index")

    completed = run("check", "--repo", str(setup.root), environment=setup.environment)

    assert "Traceback" not in completed.stderr
    assert "is not in the index" in completed.stdout
    assert completed.returncode == 13


@pytest.mark.parametrize("folder", ["locks", "snapshots", "data"])
def test_missing_folder_treated_as_empty(setup: Setup, folder: str) -> None:
    shutil.rmtree(setup.root / folder)

    completed = run(
        "backup", "--repo", str(setup.root), str(setup.template.source),
        environment=setup.environment,
    )

    assert "Traceback" not in completed.stderr
    assert completed.returncode == 0, completed.stderr
    checked = run("check", "--repo", str(setup.root), environment=setup.environment)
    if folder == "data":
        # The old snapshots lost their data; the new one stored it again.
        assert checked.returncode == 13
    else:
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_backup_after_empty_folders_dropped(setup: Setup) -> None:
    for folder in sorted(setup.root.rglob("*"), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    assert not (setup.root / "locks").exists()
    source = setup.root.parent / "new-source"
    source.mkdir()
    (source / "new.txt").write_text("written after the copy\n")

    backup = run("backup", "--repo", str(setup.root), str(source),
                 environment=setup.environment)
    check = run("check", "--read-data", "--repo", str(setup.root),
                environment=setup.environment)

    assert backup.returncode == 0, backup.stderr
    assert check.returncode == 0, check.stdout + check.stderr


# Damaged files --------------------------------------------------------------------------


def test_truncated_config(setup: Setup) -> None:
    data = (setup.root / "config").read_bytes()
    (setup.root / "config").write_bytes(data[: len(data) // 2])

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_DAMAGED, "repository config: decryption or authentication")


def test_tampered_config(setup: Setup) -> None:
    flip_byte(setup.root / "config", -1)

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_DAMAGED, "repository config: decryption or authentication")


def test_truncated_key_slot(setup: Setup) -> None:
    (slot,) = files_of(setup.root, "keys")
    slot.write_bytes(slot.read_bytes()[:20])

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_DAMAGED, f"key slot {slot.name}: decryption")


def test_tampered_snapshot(setup: Setup) -> None:
    (snapshot,) = files_of(setup.root, "snapshots")
    flip_byte(snapshot, 100)

    completed = run("snapshots", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_DAMAGED, f"snapshot {snapshot.name}: decryption")


def test_truncated_snapshot(setup: Setup) -> None:
    (snapshot,) = files_of(setup.root, "snapshots")
    snapshot.write_bytes(snapshot.read_bytes()[:-1])

    completed = run(
        "restore", "latest", "--repo", str(setup.root), "--target",
        str(setup.root.parent / "restored"), environment=setup.environment,
    )

    assert_error(completed, EXIT_DAMAGED, f"snapshot {snapshot.name}: decryption")


def test_truncated_index_in_backup(setup: Setup) -> None:
    (index,) = files_of(setup.root, "index")
    index.write_bytes(index.read_bytes()[:50])

    completed = run(
        "backup", "--repo", str(setup.root), str(setup.template.source),
        environment=setup.environment,
    )

    assert_error(completed, EXIT_DAMAGED, f"index {index.name}: decryption")


def test_truncated_index_in_check(setup: Setup) -> None:
    (index,) = files_of(setup.root, "index")
    index.write_bytes(index.read_bytes()[:50])

    completed = run("check", "--repo", str(setup.root), environment=setup.environment)

    assert_error(completed, EXIT_DAMAGED, "the check found")
    assert f"damaged: index {index.name}: decryption" in completed.stdout


def test_tampered_pack_in_check(setup: Setup) -> None:
    pack = data_pack(setup)
    flip_byte(pack, 60)

    plain = run("check", "--repo", str(setup.root), environment=setup.environment)
    reading = run(
        "check", "--read-data", "--repo", str(setup.root), environment=setup.environment
    )

    assert plain.returncode == 0, plain.stderr
    assert_error(reading, EXIT_DAMAGED, "the check found 1 error(s)")
    assert f"damaged: pack {pack.name}" in reading.stdout


def test_tampered_pack_in_restore(setup: Setup) -> None:
    pack = data_pack(setup)
    flip_byte(pack, 60)

    completed = run(
        "restore", "latest", "--repo", str(setup.root), "--target",
        str(setup.root.parent / "restored"), environment=setup.environment,
    )

    assert_error(completed, EXIT_DAMAGED, "could not be restored intact")
    assert "damaged (" in completed.stdout


# Snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["restore", "ls"])
def test_unknown_snapshot_id(setup: Setup, command: str) -> None:
    extra = ["--target", str(setup.root.parent / "restored")] if command == "restore" else []

    completed = run(
        command, "deadbeef", "--repo", str(setup.root), *extra, environment=setup.environment
    )

    hint = assert_error(completed, EXIT_USAGE, "no snapshot matches 'deadbeef'")
    assert "backvault snapshots" in hint


def test_latest_of_empty_repository(tmp_path: Path) -> None:
    _, recovery_key = api.init_repository(str(tmp_path / "repository"))
    key_file = tmp_path / "key.txt"
    key_file.write_text(recovery_key.format())
    environment = clean_environment(BACKVAULT_RECOVERY_KEY_FILE=str(key_file))

    completed = run("ls", "latest", "--repo", str(tmp_path / "repository"),
                    environment=environment)

    assert_error(completed, EXIT_USAGE, "the repository has no snapshots yet")


# init without a terminal ----------------------------------------------------------------


def test_init_without_terminal_prints_key(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    environment = clean_environment()

    completed = run("init", "--repo", str(root), environment=environment)

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    keys = KEY_LINE.findall(completed.stdout)
    assert len(keys) == 1, completed.stdout
    assert len(keys[0].split(" ")) == 16
    assert "group " not in completed.stdout, "init must not ask for groups without a terminal"

    key_file = tmp_path / "key.txt"
    key_file.write_text(keys[0] + "\n")
    verify = run("key", "verify", "--repo", str(root),
                 environment=clean_environment(BACKVAULT_RECOVERY_KEY_FILE=str(key_file)))
    assert verify.returncode == 0, verify.stderr
    assert "the recovery key is correct" in verify.stdout


def test_init_with_empty_stdin(tmp_path: Path) -> None:
    completed = subprocess.run(
        [*backvault_command(), "init", "--repo", str(tmp_path / "repository")],
        input="", capture_output=True, text=True, env=clean_environment(), timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert len(KEY_LINE.findall(completed.stdout)) == 1
    assert "group " not in completed.stdout

"""``--fido2-device`` through the ``backvault`` command, run in this process.

The command finds the software CTAP2 authenticator of tests/helpers/soft_ctap2.py in place
of a USB security key. Everything else is real: the command makes the credential and
stores the slot, and later unlocks with the key alone after the recovery key file is
deleted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backvault.cli.main import main
from backvault.passkey import fido2_direct
from tests.conftest import TreeAssertion, restored_location
from tests.helpers.soft_ctap2 import SoftCtap2Authenticator

EXIT_PASSKEY = 16
PIN = "4831"
CLEARED_VARIABLES = (
    "BACKVAULT_REPOSITORY", "BACKVAULT_RECOVERY_KEY_FILE", "BACKVAULT_RECOVERY_KEY_COMMAND",
    "BACKVAULT_PASSWORD_FILE", "BACKVAULT_PASSWORD_COMMAND", "BACKVAULT_PASSKEY",
    "BACKVAULT_TOKEN", "BACKVAULT_FIDO2_PIN_FILE",
)


class PluggedSecurityKey:
    """The USB port of the tests: the authenticator plugged in, and the device paths requested."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.authenticator: SoftCtap2Authenticator | None = None
        self.requested_paths: list[str | None] = []
        monkeypatch.setattr(fido2_direct, "find_fido2_device", self.find)

    def find(self, path: str | None) -> SoftCtap2Authenticator:
        self.requested_paths.append(path)
        assert self.authenticator is not None, "no security key plugged in"
        return self.authenticator


@pytest.fixture
def security_key(monkeypatch: pytest.MonkeyPatch) -> PluggedSecurityKey:
    for variable in CLEARED_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return PluggedSecurityKey(monkeypatch)


def run(capsys: pytest.CaptureFixture[str], *arguments: str | Path) -> tuple[int, str, str]:
    """Run ``backvault ARGUMENTS`` in this process; return the exit code, stdout and stderr."""
    capsys.readouterr()
    exit_code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return exit_code, captured.out, captured.err


def init_repository(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[Path, Path]:
    """Create a repository with ``backvault init``; return it and its recovery key file."""
    repository = tmp_path / "repository"
    exit_code, out, err = run(capsys, "init", "--repo", repository, "--json", "--no-confirm")
    assert exit_code == 0, err
    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(json.loads(out)["recovery_key"] + "\n")
    key_file.chmod(0o600)
    return repository, key_file


def make_source_tree(root: Path) -> Path:
    (root / "documents" / "letters").mkdir(parents=True)
    (root / "documents" / "notes.txt").write_text("passkeys protect this\n")
    (root / "documents" / "letters" / "one.txt").write_bytes(bytes(range(256)) * 64)
    (root / "empty").mkdir()
    (root / "link").symlink_to("documents/notes.txt")
    return root


def slot_kinds(capsys: pytest.CaptureFixture[str], repository: Path, key_file: Path) -> list[str]:
    exit_code, out, err = run(
        capsys, "key", "list", "--repo", repository, "--recovery-key-file", key_file, "--json"
    )
    assert exit_code == 0, err
    return [entry["kind"] for entry in json.loads(out)]


@pytest.mark.parametrize(
    "authenticator_options",
    [
        pytest.param({}, id="built-in-uv"),
        pytest.param({"pin": PIN, "built_in_uv": False}, id="pin"),
    ],
)
def test_fido2_passkey_backup_and_restore(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    security_key: PluggedSecurityKey,
    assert_same_tree: TreeAssertion,
    authenticator_options: dict[str, object],
) -> None:
    authenticator = SoftCtap2Authenticator(**authenticator_options)  # type: ignore[arg-type]
    security_key.authenticator = authenticator
    if "pin" in authenticator_options:
        pin_file = tmp_path / "fido2-pin"
        pin_file.write_text(PIN + "\n")
        monkeypatch.setenv("BACKVAULT_FIDO2_PIN_FILE", str(pin_file))
    repository, key_file = init_repository(capsys, tmp_path)
    source = make_source_tree(tmp_path / "source")
    target = tmp_path / "restored"

    exit_code, out, err = run(
        capsys, "key", "add-passkey", "--repo", repository, "--recovery-key-file", key_file,
        "--name", "yellow key", "--json", "--fido2-path", "/dev/hidraw7",
    )
    assert exit_code == 0, err
    added = json.loads(out)
    assert added["kind"] == "passkey"
    assert added["method"] == "fido2"
    assert added["name"] == "yellow key"
    assert security_key.requested_paths == ["/dev/hidraw7"]
    assert len(authenticator.credentials) == 1
    assert sorted(slot_kinds(capsys, repository, key_file)) == ["passkey", "recovery"]

    key_file.unlink()  # from here on, the security key is the only way in

    exit_code, _, err = run(capsys, "backup", "--repo", repository, source, "--fido2-device")
    assert exit_code == 0, err
    exit_code, _, err = run(
        capsys, "restore", "latest", "--repo", repository, "--target", target, "--fido2-device"
    )
    assert exit_code == 0, err

    assert security_key.requested_paths[1:] == [None, None]
    assert_same_tree(source, restored_location(target, source))


def test_key_without_hmac_secret_adds_no_slot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], security_key: PluggedSecurityKey
) -> None:
    authenticator = SoftCtap2Authenticator(hmac_secret=False)
    security_key.authenticator = authenticator
    repository, key_file = init_repository(capsys, tmp_path)

    exit_code, _, err = run(
        capsys, "key", "add-passkey", "--repo", repository, "--recovery-key-file", key_file,
        "--fido2-device",
    )

    assert exit_code == EXIT_PASSKEY
    assert "error: this security key cannot protect backups" in err
    assert "hmac-secret" in err
    assert "hint: No key slot was added." in err
    assert authenticator.credentials == {}
    assert slot_kinds(capsys, repository, key_file) == ["recovery"]


def test_unlock_with_other_key_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], security_key: PluggedSecurityKey
) -> None:
    security_key.authenticator = SoftCtap2Authenticator()
    repository, key_file = init_repository(capsys, tmp_path)
    exit_code, _, err = run(
        capsys, "key", "add-passkey", "--repo", repository, "--recovery-key-file", key_file,
        "--fido2-device",
    )
    assert exit_code == 0, err
    security_key.authenticator = SoftCtap2Authenticator()  # another key is plugged in

    exit_code, _, err = run(capsys, "snapshots", "--repo", repository, "--fido2-device")

    assert exit_code == EXIT_PASSKEY
    assert "error: this security key does not hold the repository's FIDO2 passkey" in err

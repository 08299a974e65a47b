"""Tests of the passkey commands, run in this process through ``backvault.cli.main.main``.

Security keys are the software CTAP2 authenticator of :mod:`tests.helpers.soft_ctap2`,
handed to the command in place of a USB device. Commands that need a server talk to a
real ``backvault server`` process. The browser path is tested end to end in
``test_passkey_e2e.py``; here it runs only as far as it can without a page.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import backvault.passkey.fido2_direct as fido2_direct
from backvault import api
from backvault.cli import passkey_commands
from backvault.cli.main import main
from backvault.cli.passkey_commands import decode_handoff_result, page_address
from backvault.passkey.client import encode_base64url
from backvault.passkey.handoff import HandoffError
from backvault.passkey.slot import create_passkey_slot
from backvault.repository.repository import Repository
from backvault.storage import http as http_storage
from backvault.storage.retry import RetryPolicy
from tests.conftest import LocalRepository
from tests.helpers.soft_ctap2 import SoftCtap2Authenticator
from tests.server.conftest import ServerProcess, start_server, unique_name

PRF_OUTPUT = bytes(range(32))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("passkey-cli-server") / "data")
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BACKVAULT_PASSKEY", "BACKVAULT_TOKEN", "BACKVAULT_RECOVERY_KEY_FILE",
                 "BACKVAULT_RECOVERY_KEY_COMMAND", "BACKVAULT_PASSWORD_FILE",
                 "BACKVAULT_PASSWORD_COMMAND", "BACKVAULT_REPOSITORY", "DISPLAY",
                 "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def security_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftCtap2Authenticator]:
    """A software security key that find_fido2_device returns for any path."""
    key = SoftCtap2Authenticator()
    monkeypatch.setattr(fido2_direct, "find_fido2_device", lambda path: key)
    yield key


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    exit_code = main([str(argument) for argument in argv])
    captured = capsys.readouterr()
    return exit_code, captured.out, captured.err


def repo_options(repository: LocalRepository, *, recovery_key: bool = True) -> list[str]:
    options = ["--repo", str(repository.location)]
    if recovery_key:
        options += ["--recovery-key-file", str(repository.key_file)]
    return options


def slot_kinds(repository: LocalRepository | ServerRepository) -> list[str]:
    return [slot.kind for slot in repository.repository.key_slots()]


def add_webauthn_slot(
    repository: LocalRepository | ServerRepository, server_url: str, credential_id: bytes
) -> None:
    """Store a browser passkey slot directly, as if a page had made it on ``server_url``."""
    slot = create_passkey_slot(
        PRF_OUTPUT, repository.repository.master_key, repository.repository.repository_id,
        method="webauthn", rp_id="localhost", server=server_url, credential_id=credential_id,
        prf_salt=bytes(32), name="old phone",
    )
    repository.repository.add_key_slot(slot)


# Security keys (--fido2-device) ----------------------------------------------------------


def test_fido2_passkey_unlocks_without_recovery_key(
    local_repository: LocalRepository, security_key: SoftCtap2Authenticator,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "letter.txt").write_text("kept behind a security key\n")
    api.backup(local_repository.repository, [str(source)])

    added = run(capsys, "key", "add-passkey", "--fido2-device", "--name", "blue key",
                *repo_options(local_repository))
    listed = run(capsys, "ls", "latest", "--fido2-path", "/dev/hidraw3",
                 *repo_options(local_repository, recovery_key=False))

    assert added[0] == 0, added[2]
    assert "added passkey key slot" in added[1]
    assert "'blue key', fido2 on a security key" in added[1]
    assert slot_kinds(local_repository) == ["recovery", "passkey"]
    assert len(security_key.credentials) == 1
    assert listed[0] == 0, listed[2]
    assert "letter.txt" in listed[1]
    assert security_key.closed


def test_fido2_device_path_reaches_finder(
    local_repository: LocalRepository, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = SoftCtap2Authenticator()
    paths: list[str | None] = []

    def find(path: str | None) -> SoftCtap2Authenticator:
        paths.append(path)
        return key

    monkeypatch.setattr(fido2_direct, "find_fido2_device", find)
    run(capsys, "key", "add-passkey", "--fido2-path", "/dev/hidraw7",
        *repo_options(local_repository))
    run(capsys, "snapshots", "--fido2-device", *repo_options(local_repository, recovery_key=False))

    assert paths == ["/dev/hidraw7", None]


def test_fido2_key_without_hmac_secret_is_refused(
    local_repository: LocalRepository, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = SoftCtap2Authenticator(hmac_secret=False)
    monkeypatch.setattr(fido2_direct, "find_fido2_device", lambda path: key)

    exit_code, stdout, stderr = run(
        capsys, "key", "add-passkey", "--fido2-device", *repo_options(local_repository)
    )

    assert exit_code != 0
    assert "hmac-secret" in stderr
    assert stdout == ""
    assert slot_kinds(local_repository) == ["recovery"]
    assert key.credentials == {}


def test_fido2_enrolment_asks_key_twice(
    local_repository: LocalRepository, security_key: SoftCtap2Authenticator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enrolment_only = SoftCtap2Authenticator()
    fido2_direct.enrol_fido2(enrolment_only, name="reference", prf_salt=bytes(32))

    exit_code, _, stderr = run(
        capsys, "key", "add-passkey", "--fido2-device", *repo_options(local_repository)
    )

    assert exit_code == 0, stderr
    assert security_key.touches > enrolment_only.touches


def test_unopened_fido2_slot_not_stored(
    local_repository: LocalRepository, security_key: SoftCtap2Authenticator,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    def other_output(device: Any, *, rp_id: str, credentials: Any) -> tuple[bytes, bytes]:
        return credentials[0][0], bytes(32)

    monkeypatch.setattr(fido2_direct, "evaluate_fido2", other_output)

    exit_code, stdout, stderr = run(
        capsys, "key", "add-passkey", "--fido2-device", *repo_options(local_repository)
    )

    assert exit_code == 16
    assert "gave a different output when asked again" in stderr
    assert "No key slot was added" in stderr
    assert stdout == ""
    assert slot_kinds(local_repository) == ["recovery"]


def test_key_list_shows_fido2_slot(
    local_repository: LocalRepository, security_key: SoftCtap2Authenticator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(capsys, "key", "add-passkey", "--fido2-device", "--name", "usb",
        *repo_options(local_repository))

    text = run(capsys, "key", "list", *repo_options(local_repository))
    as_json = run(capsys, "key", "list", "--json", *repo_options(local_repository))

    passkey_line = next(line for line in text[1].splitlines() if " passkey " in line)
    assert passkey_line.endswith("usb  (fido2, last use not recorded (a security key keeps "
                                 "no record))")
    entry = next(slot for slot in json.loads(as_json[1]) if slot["kind"] == "passkey")
    assert entry["label"] == "usb"
    assert entry["method"] == "fido2"
    assert entry["last_used"] is None
    assert entry["last_used_recorded"] is False


def test_key_remove_fido2_slot(
    local_repository: LocalRepository, security_key: SoftCtap2Authenticator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(capsys, "key", "add-passkey", "--fido2-device", *repo_options(local_repository))
    slot = next(s for s in local_repository.repository.key_slots() if s.kind == "passkey")

    exit_code, stdout, stderr = run(
        capsys, "key", "remove", slot.name[:8], *repo_options(local_repository)
    )

    assert exit_code == 0, stderr
    assert stdout.strip() == f"removed passkey key slot {slot.name}"
    assert slot_kinds(local_repository) == ["recovery"]


def test_server_and_fido2_device_conflict(
    local_repository: LocalRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code, _, stderr = run(
        capsys, "key", "add-passkey", "--fido2-device", "--server", "http://127.0.0.1:9",
        *repo_options(local_repository),
    )

    assert exit_code == 2
    assert "--server and --fido2-device do not go together" in stderr


# Errors that name the fix ----------------------------------------------------------------


def test_unlock_without_passkey_slot(
    local_repository: LocalRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code, _, stderr = run(
        capsys, "snapshots", "--passkey", *repo_options(local_repository, recovery_key=False)
    )

    assert exit_code == 2
    assert "error: the repository has no passkey slot" in stderr
    assert "'backvault key add-passkey'" in stderr


def test_environment_asks_for_passkey(
    local_repository: LocalRepository, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BACKVAULT_PASSKEY", "1")
    monkeypatch.setenv("BACKVAULT_RECOVERY_KEY_FILE", str(local_repository.key_file))

    from_environment = run(capsys, "snapshots", *repo_options(local_repository, recovery_key=False))
    with_option = run(capsys, "snapshots", *repo_options(local_repository))

    assert from_environment[0] == 2
    assert "no passkey slot" in from_environment[2]
    assert with_option[0] == 0, with_option[2]


def test_invalid_environment_value(
    local_repository: LocalRepository, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BACKVAULT_PASSKEY", "yes")

    exit_code, _, stderr = run(
        capsys, "snapshots", *repo_options(local_repository, recovery_key=False)
    )

    assert exit_code == 2
    assert "invalid value BACKVAULT_PASSKEY='yes'" in stderr
    assert "BACKVAULT_PASSKEY=1" in stderr


def test_browser_cannot_reach_security_key_slots(
    local_repository: LocalRepository, security_key: SoftCtap2Authenticator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(capsys, "key", "add-passkey", "--fido2-device", *repo_options(local_repository))

    exit_code, _, stderr = run(
        capsys, "snapshots", "--passkey", *repo_options(local_repository, recovery_key=False)
    )

    assert exit_code == 2
    assert "on security keys" in stderr
    assert "--fido2-device" in stderr


def test_local_repository_needs_server(
    local_repository: LocalRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code, _, stderr = run(capsys, "key", "add-passkey", *repo_options(local_repository))

    assert exit_code == 2
    assert "this repository is not on a backvault server" in stderr
    assert "--server https://HOST:PORT" in stderr


def test_missing_token_is_named_before_unlock(
    local_repository: LocalRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    # No recovery key either: the token is checked before anything is unlocked.
    exit_code, _, stderr = run(
        capsys, "key", "add-passkey", "--server", "http://127.0.0.1:9",
        *repo_options(local_repository, recovery_key=False),
    )

    assert exit_code == 2
    assert "no token for the backvault server http://127.0.0.1:9" in stderr
    assert "Set BACKVAULT_TOKEN" in stderr


def test_no_browser_is_started_without_desktop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, new=0: opened.append(url) or True)
    monkeypatch.setattr(sys, "platform", "linux")

    passkey_commands._open_browser("http://localhost:1/passkey/enrol#x")

    assert opened == []
    assert "No browser was started here" in capsys.readouterr().err


# With a server ---------------------------------------------------------------------------


@dataclass
class ServerRepository:
    """A repository on the test server, with its recovery key in a file."""

    repository: Repository
    url: str
    key_file: Path

    def options(self, *, recovery_key: bool = True) -> list[str]:
        options = ["--repo", self.url]
        if recovery_key:
            options += ["--recovery-key-file", str(self.key_file)]
        return options


@pytest.fixture
def server_repository(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ServerRepository:
    """A repository on the server of a new account, with BACKVAULT_TOKEN set."""
    _, token = server.create_account()
    monkeypatch.setenv("BACKVAULT_TOKEN", token)
    url = f"{server.url}/{unique_name('repo')}"
    repository, recovery_key = api.init_repository(url)
    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(recovery_key.format() + "\n")
    return ServerRepository(repository, url, key_file)


def test_browser_timeout_stores_nothing(
    server_repository: ServerRepository, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = server_repository
    monkeypatch.setattr(passkey_commands, "MAX_HANDOFF_WAIT", 0.5)

    exit_code, stdout, stderr = run(
        capsys, "key", "add-passkey", "--no-browser", *repository.options()
    )

    assert exit_code == 2
    assert "Open this address in a browser to create the passkey: http://localhost:" in stderr
    assert "error: timed out after 0.5 seconds waiting for the browser" in stderr
    assert "hint: Open the address printed above" in stderr
    assert stdout == ""
    assert slot_kinds(repository) == ["recovery"]


def test_passkey_deleted_on_server(
    server: ServerProcess, server_repository: ServerRepository,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = server_repository
    add_webauthn_slot(repository, server.url, b"gone-from-server")

    unlock = run(capsys, "snapshots", "--passkey", "--no-browser",
                 *repository.options(recovery_key=False))
    listed = run(capsys, "key", "list", *repository.options())

    assert unlock[0] == 16
    assert f"the backvault server {server.url} no longer has the passkeys" in unlock[2]
    assert "'backvault key remove'" in unlock[2]
    assert "old phone  (webauthn, deleted on the server)" in listed[1]


def test_key_list_warns_when_server_unreachable(
    local_repository: LocalRepository, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_webauthn_slot(local_repository, "http://127.0.0.1:9", b"credential")
    monkeypatch.delenv("BACKVAULT_TOKEN", raising=False)

    exit_code, stdout, stderr = run(capsys, "key", "list", *repo_options(local_repository))

    assert exit_code == 0, stderr
    assert "old phone  (webauthn, last use unknown (server not reached))" in stdout
    assert "warning: cannot read the passkeys of http://127.0.0.1:9" in stderr
    assert "no token" in stderr


# The page's result -----------------------------------------------------------------------


def result(**fields: Any) -> dict[str, Any]:
    base = {"state": "s", "kind": "register", "credential_id": "AAEC",
            "prf_create": None, "prf": encode_base64url(PRF_OUTPUT)}
    return {**base, **fields}


def test_result_decodes() -> None:
    answer = decode_handoff_result(result(prf_create=encode_base64url(bytes(32))), "register")

    assert answer.credential_id == b"\x00\x01\x02"
    assert answer.prf_output == PRF_OUTPUT
    assert answer.prf_output_at_creation == bytes(32)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"kind": "authenticate"}, "of kind 'authenticate'"),
        ({"credential_id": "A+B/"}, "not base64url"),
        ({"credential_id": ""}, "0 bytes"),
        ({"prf": encode_base64url(bytes(16))}, "16 bytes"),
        ({"prf_create": encode_base64url(bytes(31))}, "31 bytes"),
        ({"prf": None}, "cannot protect backups"),
    ],
)
def test_invalid_result_is_rejected(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(HandoffError, match=words):
        decode_handoff_result(result(**fields), "register")


def test_page_address_replaces_fragment() -> None:
    address = page_address("http://localhost:8443/passkey/enrol#ceremony=old", "new-id", 4321, "st")

    assert address == "http://localhost:8443/passkey/enrol#ceremony=new-id&port=4321&state=st"


def test_unreachable_passkey_server_names_the_way_back(
    local_repository: LocalRepository, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The hint names the passkey's server and the recovery key, not --repo."""
    add_webauthn_slot(local_repository, "http://127.0.0.1:9", b"credential")
    monkeypatch.setenv("BACKVAULT_TOKEN", "bv_unused")
    monkeypatch.setattr(http_storage, "RETRY_POLICY", RetryPolicy(attempts=1))

    exit_code, _, stderr = run(
        capsys, "snapshots", "--passkey", "--no-browser",
        *repo_options(local_repository, recovery_key=False),
    )

    assert exit_code != 0
    assert "cannot reach the backvault server http://127.0.0.1:9" in stderr
    assert "passkey server runs at this address" in stderr
    assert "recovery key" in stderr
    assert "--repo" not in stderr

"""End to end: a passkey made in Chromium protects a repository on a real server.

A real ``backvault server`` process serves the passkey pages at ``http://localhost:PORT``
(relying party id ``localhost``). Headless Debian Chromium, driven by Playwright, has a
CDP virtual authenticator with or without the PRF extension. The ``backvault`` command
runs as a subprocess that prints the page address on standard error. The test opens that
address, presses the page's button with the keyboard, and the command finishes through
the real loopback hand-off. Screenshots of the pages go to ``$BACKVAULT_SCREENSHOT_DIR``
or a temporary folder (printed with ``pytest -s``).
"""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import secrets
import subprocess
import threading
import time
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from backvault.cli.main import main
from backvault.cli.passkey_commands import page_address
from backvault.passkey.client import PasskeyServerClient, decode_base64url
from backvault.passkey.handoff import Handoff, origin_of
from backvault.repository.repository import Repository
from tests.conftest import TreeAssertion, backvault_executable, restored_location
from tests.helpers.browser import (
    authenticator_page,
    save_screenshot,
)
from tests.server.conftest import ServerProcess, run_backvault, start_server, unique_name

ADDRESS_LINE = re.compile(r"Open this address in a browser to (?P<action>[^:]+): (?P<url>\S+)")
PAGE_TIMEOUT = 20_000  # milliseconds for a page to reach a state
COMMAND_TIMEOUT = 60.0  # seconds for a command to print its address or to finish
ENROL_DONE_TEXT = "Passkey created. You can close this tab; the terminal says whether it was added."
UNLOCK_DONE_TEXT = "Passkey accepted. You can close this tab; the terminal shows the rest."


# Fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("passkey-server") / "data")
    yield process
    process.stop()


@dataclass
class Machine:
    """One user's backvault client: a home directory, a token and a repository address."""

    repo_url: str
    token: str
    key_file: Path
    home: Path
    page_origin: str  # where the server's passkey pages are, http://localhost:PORT

    def env(self, *, recovery_key: bool = True, **extra: str) -> dict[str, str]:
        env = {
            "HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
            "BACKVAULT_TOKEN": self.token,
        }
        if recovery_key:
            env["BACKVAULT_RECOVERY_KEY_FILE"] = str(self.key_file)
        return {**env, **extra}

    def run(
        self, *arguments: str | Path, recovery_key: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = self.env(recovery_key=recovery_key)
        return run_backvault(*arguments, "--repo", self.repo_url, env=env)

    def start(self, *arguments: str | Path, recovery_key: bool = True) -> RunningCommand:
        return RunningCommand(
            [str(backvault_executable()), *map(str, arguments), "--repo", self.repo_url],
            self.env(recovery_key=recovery_key),
        )

    def key_slots(self) -> list[dict[str, Any]]:
        listed = self.run("key", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        slots: list[dict[str, Any]] = json.loads(listed.stdout)
        return slots


@pytest.fixture
def machine(server: ServerProcess, tmp_path: Path) -> Machine:
    """A new repository on the server, made by ``backvault init``, and its recovery key."""
    _, token = server.create_account()
    home = tmp_path / "home"
    home.mkdir()
    repo_url = f"{server.url}/{unique_name('repo')}"
    initialized = run_backvault(
        "init", "--repo", repo_url, "--json",
        env={"BACKVAULT_TOKEN": token, "HOME": str(home)},
    )
    assert initialized.returncode == 0, initialized.stderr
    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(json.loads(initialized.stdout)["recovery_key"] + "\n")
    return Machine(repo_url, token, key_file, home, f"http://localhost:{server.port}")


class RunningCommand:
    """A ``backvault`` subprocess whose standard error is read line by line as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stderr_lines: list[str] = []
        self.stdout_parts: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        # One thread per pipe, so that neither fills up while the test waits on the other.
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self.stdout_parts.append(self.process.stdout.read())

    def wait_for_page_address(self) -> tuple[str, str]:
        """Wait for the line with the page address; return the action and the address."""
        while True:
            try:
                line = self._lines.get(timeout=COMMAND_TIMEOUT)
            except queue.Empty:
                self.process.kill()
                pytest.fail("the command printed no page address in time")
            if line is None:
                self.process.wait()
                pytest.fail(f"the command ended without a page address: {self.stderr}")
            found = ADDRESS_LINE.search(line)
            if found:
                return found["action"], found["url"]

    def finish(self) -> tuple[int, str]:
        """Wait for the command to end; return its exit code and standard output."""
        try:
            self.process.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the command did not finish in time: {self.stderr}")
        for reader in self._readers:
            reader.join(timeout=COMMAND_TIMEOUT)
        return self.process.returncode, "".join(self.stdout_parts)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)


def press_page_button(page: Page, url: str) -> None:
    """Open ``url`` and press its one button with the keyboard, as a user without a mouse."""
    page.goto(url)
    button = page.locator("button#start")
    expect(button).to_be_enabled(timeout=PAGE_TIMEOUT)
    button.focus()
    expect(button).to_be_focused()
    page.keyboard.press("Enter")


def status_text(page: Page) -> Any:
    return expect(page.locator("#status"))


def make_source_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("the passkey opens these backups\n" * 100)
    (root / "photo.bin").write_bytes(secrets.token_bytes(200_000))
    (root / "empty").write_bytes(b"")
    nested = root / "letters" / "2024"
    nested.mkdir(parents=True)
    (nested / "march.txt").write_text("dear reader\n")
    (root / "latest").symlink_to("letters/2024/march.txt")
    return root


def server_passkeys(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    with server.client(token) as client:
        response = client.get("/v1/passkeys")
    assert response.status_code == 200, response.text
    passkeys: list[dict[str, Any]] = response.json()["passkeys"]
    return passkeys


def add_passkey(machine: Machine, page: Page, name: str) -> tuple[int, str, RunningCommand]:
    command = machine.start("key", "add-passkey", "--no-browser", "--name", name)
    action, url = command.wait_for_page_address()
    assert action == "create the passkey"
    assert url.startswith(f"{machine.page_origin}/passkey/enrol#ceremony=")
    press_page_button(page, url)
    exit_code, stdout = command.finish()
    return exit_code, stdout, command


# Tests ----------------------------------------------------------------------------------


def test_passkey_alone_restores_backup(
    server: ServerProcess, machine: Machine, chromium: Browser, screenshots: Path,
    tmp_path: Path, assert_same_tree: TreeAssertion,
) -> None:
    source = make_source_tree(tmp_path / "source")
    with authenticator_page(chromium, prf=True) as tab:
        exit_code, stdout, command = add_passkey(machine, tab.page, "laptop")
        status_text(tab.page).to_have_text(ENROL_DONE_TEXT, timeout=PAGE_TIMEOUT)
        save_screenshot(tab.page, screenshots, "enrol-page-done")

        assert exit_code == 0, command.stderr
        assert "added passkey key slot" in stdout
        assert len(tab.credentials()) == 1

        backup = machine.run("backup", source)
        assert backup.returncode == 0, backup.stderr

        # The recovery key is put away: BACKVAULT_RECOVERY_KEY_FILE is not set.
        target = tmp_path / "restored"
        restore = machine.start(
            "restore", "latest", "--target", target, "--passkey", "--no-browser",
            recovery_key=False,
        )
        action, url = restore.wait_for_page_address()
        assert action == "unlock the repository"
        press_page_button(tab.page, url)
        status_text(tab.page).to_have_text(UNLOCK_DONE_TEXT, timeout=PAGE_TIMEOUT)
        save_screenshot(tab.page, screenshots, "unlock-page-done")
        exit_code, stdout = restore.finish()

    assert exit_code == 0, restore.stderr
    assert "restored" in stdout
    assert_same_tree(source, restored_location(target, source))

    slots = machine.key_slots()
    passkey_slots = [slot for slot in slots if slot["kind"] == "passkey"]
    assert len(passkey_slots) == 1
    assert passkey_slots[0]["label"] == "laptop"
    assert passkey_slots[0]["method"] == "webauthn"
    assert passkey_slots[0]["last_used"] is not None
    listed = machine.run("key", "list")
    assert "webauthn, last used" in listed.stdout


def test_passkey_without_prf_is_refused(
    server: ServerProcess, machine: Machine, chromium: Browser, screenshots: Path
) -> None:
    slots_before = machine.key_slots()

    with authenticator_page(chromium, prf=False) as tab:
        exit_code, stdout, command = add_passkey(machine, tab.page, "no-prf")
        status_text(tab.page).to_contain_text("cannot protect backups", timeout=PAGE_TIMEOUT)
        save_screenshot(tab.page, screenshots, "enrol-page-no-prf")

        # The page asked the authenticator, through the Signal API, to drop the passkey;
        # the request is asynchronous, so give it a moment.
        deadline = time.monotonic() + PAGE_TIMEOUT / 1000
        while tab.credentials() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tab.credentials() == []

    assert exit_code != 0
    assert "error: this passkey cannot protect backups" in command.stderr
    assert "PRF" in command.stderr
    assert "No key slot was added" in command.stderr
    assert stdout == ""
    assert machine.key_slots() == slots_before
    assert server_passkeys(server, machine.token) == []


def test_unlock_where_the_passkey_gives_no_prf(
    server: ServerProcess, machine: Machine, chromium: Browser
) -> None:
    """A synced passkey used in a browser without PRF gets an error worded for unlocking."""
    with authenticator_page(chromium, prf=True) as tab:
        exit_code, _, command = add_passkey(machine, tab.page, "synced")
        assert exit_code == 0, command.stderr
        [credential] = tab.credentials()

    with authenticator_page(chromium, prf=False) as tab:
        # The same credential, as a password manager that syncs it would hold it.
        tab.session.send("WebAuthn.addCredential", {
            "authenticatorId": tab.authenticator_id, "credential": credential,
        })
        unlock = machine.start("snapshots", "--passkey", "--no-browser", recovery_key=False)
        _, url = unlock.wait_for_page_address()
        press_page_button(tab.page, url)
        exit_code, stdout = unlock.finish()

    assert exit_code == 2, unlock.stderr
    assert stdout == ""
    assert "the passkey gave the browser no key for this repository" in unlock.stderr
    assert "recovery key" in unlock.stderr
    assert "No key slot was added" not in unlock.stderr


def test_passkey_listed_and_removed_with_server_credential(
    server: ServerProcess, machine: Machine, chromium: Browser
) -> None:
    with authenticator_page(chromium, prf=True) as tab:
        exit_code, _, command = add_passkey(machine, tab.page, "phone")
    assert exit_code == 0, command.stderr
    slot = next(slot for slot in machine.key_slots() if slot["kind"] == "passkey")
    assert slot["last_used"] is None
    assert len(server_passkeys(server, machine.token)) == 1

    listed = machine.run("key", "list")
    removed = machine.run("key", "remove", slot["id"])

    assert "phone  (webauthn, never used)" in listed.stdout
    assert removed.returncode == 0, removed.stderr
    assert f"deleted its passkey on {server.url}" in removed.stdout
    assert server_passkeys(server, machine.token) == []
    assert all(entry["kind"] != "passkey" for entry in machine.key_slots())


def test_replayed_state_is_rejected(
    server: ServerProcess, machine: Machine, chromium: Browser
) -> None:
    with authenticator_page(chromium, prf=True) as tab:
        exit_code, _, command = add_passkey(machine, tab.page, "desk")
        assert exit_code == 0, command.stderr
        credential_id = server_passkeys(server, machine.token)[0]["id"]
        handoff_posts: list[Request] = []
        tab.page.on("request", lambda request: handoff_posts.append(request)
                    if request.url.endswith("/handoff") and request.method == "POST" else None)

        with PasskeyServerClient(server.url, token=machine.token) as client:
            ceremony = client.start_authentication(
                [(decode_base64url(credential_id), secrets.token_bytes(32))]
            )
        with Handoff(origin_of(ceremony.page)) as handoff:
            press_page_button(
                tab.page,
                page_address(ceremony.page, ceremony.ceremony_id, handoff.port, handoff.state),
            )
            status_text(tab.page).to_have_text(UNLOCK_DONE_TEXT, timeout=PAGE_TIMEOUT)
            accepted = handoff.wait()
            posts_from_page = len(handoff_posts)
            body = handoff_posts[0].post_data or ""

            # The same post again from the page's own origin, as a replay would come.
            replay_status = tab.page.evaluate(
                """async ([address, body]) => {
                    const response = await fetch(address, {method: "POST", body: body,
                        headers: {"Content-Type": "application/json"}});
                    return response.status;
                }""",
                [f"http://127.0.0.1:{handoff.port}/handoff", body],
            )
            replay_outside_browser = httpx.post(
                f"http://127.0.0.1:{handoff.port}/handoff", content=body,
                headers={"Content-Type": "application/json", "Origin": machine.page_origin},
            )

    assert accepted["credential_id"] == credential_id
    assert posts_from_page == 1
    assert json.loads(body)["state"] == handoff.state
    assert replay_status == 409
    assert replay_outside_browser.status_code == 409


def test_failed_store_deletes_server_passkey(
    server: ServerProcess, machine: Machine, chromium: Browser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command runs in this process, so that storing the slot can be made to fail."""
    opened: queue.Queue[str] = queue.Queue()
    for name, value in machine.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DISPLAY", ":99")  # so the command opens the page with webbrowser
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: opened.put(url) is None)

    def fail_to_store(self: Repository, slot: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Repository, "add_key_slot", fail_to_store)
    exit_codes: list[int] = []
    command = threading.Thread(target=lambda: exit_codes.append(main(
        ["key", "add-passkey", "--name", "full disk", "--repo", machine.repo_url]
    )))
    command.start()
    try:
        url = opened.get(timeout=COMMAND_TIMEOUT)
        with authenticator_page(chromium, prf=True) as tab:
            press_page_button(tab.page, url)
            status_text(tab.page).to_have_text(ENROL_DONE_TEXT, timeout=PAGE_TIMEOUT)
    finally:
        command.join(timeout=COMMAND_TIMEOUT)

    assert exit_codes == [1]
    assert server_passkeys(server, machine.token) == []
    monkeypatch.undo()
    assert all(slot["kind"] != "passkey" for slot in machine.key_slots())

"""End to end: password key slots through the ``backvault`` command and a running server.

The restoring client has only the server address, its token and the password: the
recovery key is put away. Argon2id runs with 1 MiB and one pass here (the
``--argon2-*`` options), so the tests stay fast; the default is 64 MiB and 3 passes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import TreeAssertion, restored_location
from tests.server.conftest import ServerProcess, run_backvault
from tests.server.test_end_to_end import init_repository, make_source_tree

SMALL_ARGON2 = ["--argon2-memory", "1024", "--argon2-iterations", "1", "--argon2-lanes", "1"]
EXIT_WRONG_PASSWORD = 15
GUESS_LIMIT = 10


class Machine:
    """One client machine: its own home directory, and the secrets it was given."""

    def __init__(self, home: Path, token: str, **secrets: Path | str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "BACKVAULT_TOKEN": token,
            # Set empty, so nothing from the test's own environment leaks in.
            "BACKVAULT_RECOVERY_KEY_FILE": "", "BACKVAULT_RECOVERY_KEY_COMMAND": "",
            "BACKVAULT_PASSWORD_FILE": "", "BACKVAULT_PASSWORD_COMMAND": "",
        }
        for name, value in secrets.items():
            self.env[f"BACKVAULT_{name.upper()}"] = str(value)

    def run(self, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
        return run_backvault(*arguments, env=self.env)


def write_password(path: Path, password: str) -> Path:
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def add_password(machine: Machine, repo: str, *options: str) -> dict[str, object]:
    result = machine.run("key", "add-password", "--repo", repo, "--json", *SMALL_ARGON2, *options)
    assert result.returncode == 0, result.stderr
    added: dict[str, object] = json.loads(result.stdout)
    return added


def vault_records(server: ServerProcess, token: str) -> dict[str, dict[str, object]]:
    response = server.client(token).get("/v1/vault/records")
    assert response.status_code == 200, response.text
    return {entry["record_id"]: entry for entry in response.json()["records"]}


def test_password_only_restore(
    vault_server: ServerProcess, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    password_file = write_password(tmp_path / "password", "a password I can remember")
    source = make_source_tree(tmp_path / "source", seed="password")

    first = Machine(
        tmp_path / "machine-1", token, recovery_key_file=key_file, password_file=password_file
    )
    added = add_password(first, repo)
    assert added["vault"] == vault_server.url
    backup = first.run("backup", "--repo", repo, source)
    assert backup.returncode == 0, backup.stderr

    # The recovery key goes into the drawer; the new machine never gets it.
    drawer = tmp_path / "drawer"
    drawer.mkdir()
    key_file.rename(drawer / key_file.name)

    second = Machine(tmp_path / "machine-2", token, password_file=password_file)
    target = tmp_path / "restored"
    restore = second.run("restore", "latest", "--repo", repo, "--target", target)
    assert restore.returncode == 0, restore.stderr
    assert_same_tree(source, restored_location(target, source))

    listing = second.run("key", "list", "--repo", repo, "--json")
    assert listing.returncode == 0, listing.stderr
    kinds = sorted(slot["kind"] for slot in json.loads(listing.stdout))
    assert kinds == ["password", "recovery"]


def test_wrong_passwords_destroy_record(vault_server: ServerProcess, tmp_path: Path) -> None:
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    password_file = write_password(tmp_path / "password", "the right password")
    wrong_file = write_password(tmp_path / "wrong", "a wrong password")
    owner = Machine(
        tmp_path / "owner", token, recovery_key_file=key_file, password_file=password_file
    )
    add_password(owner, repo)

    guesser = Machine(tmp_path / "guesser", token, password_file=wrong_file)
    assert guesser.run("snapshots", "--repo", repo).returncode == EXIT_WRONG_PASSWORD
    listed = owner.run("key", "list", "--repo", repo)
    assert f"{GUESS_LIMIT - 1} wrong guesses allowed" in listed.stdout, listed.stderr
    for attempt in range(2, GUESS_LIMIT + 1):
        result = guesser.run("snapshots", "--repo", repo)
        assert result.returncode == EXIT_WRONG_PASSWORD, result.stderr
        left = GUESS_LIMIT - attempt
        if left > 1:
            assert f"{left} guesses left" in result.stderr
        elif left == 1:
            assert "1 guess left" in result.stderr
            assert "One more wrong password destroys" in result.stderr
            assert "recovery key" in result.stderr
        else:
            # Before the last guess the command warns; that guess destroys the record.
            assert "warning: one guess is left" in result.stderr
            assert "destroyed" in result.stderr

    # The eleventh attempt fails even with the right password, and names the way back.
    right = Machine(tmp_path / "owner-again", token, password_file=password_file)
    result = right.run("snapshots", "--repo", repo)
    assert result.returncode == EXIT_WRONG_PASSWORD
    assert "destroyed" in result.stderr
    assert "recovery key" in result.stderr
    assert "BACKVAULT_RECOVERY_KEY_FILE" in result.stderr
    [record] = vault_records(vault_server, token).values()
    assert record["state"] == "destroyed"

    with_key = Machine(tmp_path / "owner-with-key", token, recovery_key_file=key_file)
    result = with_key.run("snapshots", "--repo", repo)
    assert result.returncode == 0, result.stderr
    listed = with_key.run("key", "list", "--repo", repo, "--json")
    [password_slot] = [slot for slot in json.loads(listed.stdout) if slot["kind"] == "password"]
    assert password_slot["record_state"] == "destroyed"
    assert password_slot["vault"] == vault_server.url


def test_change_password(vault_server: ServerProcess, tmp_path: Path) -> None:
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    old_password = write_password(tmp_path / "old", "the old password")
    new_password = write_password(tmp_path / "new", "the new password")
    owner = Machine(
        tmp_path / "owner", token, recovery_key_file=key_file, password_file=old_password
    )
    old_record = add_password(owner, repo, "--guess-limit", "4")["record_id"]

    changer = Machine(
        tmp_path / "changer", token, recovery_key_file=key_file, password_file=new_password
    )
    result = changer.run("key", "change-password", "--repo", repo, "--json", *SMALL_ARGON2)
    assert result.returncode == 0, result.stderr
    changed = json.loads(result.stdout)
    assert changed["old_record_deleted"] is True
    records = vault_records(vault_server, token)
    assert set(records) == {changed["record_id"]}
    assert old_record != changed["record_id"]
    # The limit chosen for the old password carries over to the new one.
    assert records[changed["record_id"]]["guess_limit"] == 4

    assert Machine(tmp_path / "with-new", token, password_file=new_password).run(
        "snapshots", "--repo", repo
    ).returncode == 0
    old = Machine(tmp_path / "with-old", token, password_file=old_password).run(
        "snapshots", "--repo", repo
    )
    assert old.returncode == EXIT_WRONG_PASSWORD


def test_remove_password_slot(vault_server: ServerProcess, tmp_path: Path) -> None:
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    password_file = write_password(tmp_path / "password", "the right password")
    owner = Machine(
        tmp_path / "owner", token, recovery_key_file=key_file, password_file=password_file
    )
    added = add_password(owner, repo)
    assert set(vault_records(vault_server, token)) == {added["record_id"]}

    with_key = Machine(tmp_path / "with-key", token, recovery_key_file=key_file)
    result = with_key.run("key", "remove", "--repo", repo, str(added["slot"])[:8])
    assert result.returncode == 0, result.stderr
    assert f"deleted vault record {added['record_id']}" in result.stdout
    assert vault_records(vault_server, token) == {}

    listing = with_key.run("key", "list", "--repo", repo, "--json")
    [recovery_slot] = json.loads(listing.stdout)
    assert recovery_slot["kind"] == "recovery"

    last = with_key.run("key", "remove", "--repo", repo, recovery_slot["id"])
    assert last.returncode == 2
    assert "last one" in last.stderr
    # The refusal comes before any unlocking, so it needs no secret at all.
    without_secret = Machine(tmp_path / "no-secret", token).run(
        "key", "remove", "--repo", repo, recovery_slot["id"]
    )
    assert without_secret.returncode == 2
    assert "last one" in without_secret.stderr


def test_local_repository_needs_vault_option(
    vault_server: ServerProcess, tmp_path: Path
) -> None:
    _, token = vault_server.create_account()
    repo = str(tmp_path / "repository")
    init = run_backvault("init", "--repo", repo, "--json", env={"HOME": str(tmp_path)})
    assert init.returncode == 0, init.stderr
    key_file = write_password(tmp_path / "recovery-key", json.loads(init.stdout)["recovery_key"])
    password_file = write_password(tmp_path / "password", "a local password")
    owner = Machine(
        tmp_path / "owner", token, recovery_key_file=key_file, password_file=password_file
    )

    missing = owner.run("key", "add-password", "--repo", repo, *SMALL_ARGON2)
    assert missing.returncode == 2
    assert "--vault" in missing.stderr

    add_password(owner, repo, "--vault", vault_server.url)
    by_command = Machine(
        tmp_path / "by-command", token, password_command=f"cat {password_file}"
    )
    result = by_command.run("snapshots", "--repo", repo)
    assert result.returncode == 0, result.stderr


def test_short_password_rejected(vault_server: ServerProcess, tmp_path: Path) -> None:
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    short = write_password(tmp_path / "short", "abc")
    owner = Machine(tmp_path / "owner", token, recovery_key_file=key_file, password_file=short)
    result = owner.run("key", "add-password", "--repo", repo, *SMALL_ARGON2)
    assert result.returncode == 2
    assert "at least 8" in result.stderr
    assert vault_records(vault_server, token) == {}


def test_no_password_slot_message(vault_server: ServerProcess, tmp_path: Path) -> None:
    _, token = vault_server.create_account()
    repo, _ = init_repository(vault_server, token, tmp_path)
    password_file = write_password(tmp_path / "password", "a password I can remember")
    result = Machine(tmp_path / "m", token, password_file=password_file).run(
        "snapshots", "--repo", repo
    )
    assert result.returncode == 2
    assert "no password slot" in result.stderr


def test_recovery_slot_removal_needs_force(
    vault_server: ServerProcess, tmp_path: Path
) -> None:
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    password_file = write_password(tmp_path / "password", "the right password")
    owner = Machine(
        tmp_path / "owner", token, recovery_key_file=key_file, password_file=password_file
    )
    add_password(owner, repo)
    with_key = Machine(tmp_path / "with-key", token, recovery_key_file=key_file)
    slots = json.loads(with_key.run("key", "list", "--repo", repo, "--json").stdout)
    [recovery_slot] = [slot for slot in slots if slot["kind"] == "recovery"]

    refused = with_key.run("key", "remove", "--repo", repo, recovery_slot["id"])
    forced = with_key.run("key", "remove", "--repo", repo, recovery_slot["id"], "--force")

    assert refused.returncode == 2
    assert "is the recovery key" in refused.stderr
    assert "--force" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert "removed recovery key slot" in forced.stdout


def test_current_password_not_read_from_new_password_file(
    vault_server: ServerProcess, tmp_path: Path
) -> None:
    # change-password reads the new password from BACKVAULT_PASSWORD_FILE; without a
    # recovery key and a terminal it must stop, not spend a guess on the new password.
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    old_password = write_password(tmp_path / "old", "the old password")
    new_password = write_password(tmp_path / "new", "the new password")
    owner = Machine(
        tmp_path / "owner", token, recovery_key_file=key_file, password_file=old_password
    )
    add_password(owner, repo)
    without_key = Machine(tmp_path / "no-key", token, password_file=new_password)

    result = without_key.run("key", "change-password", "--repo", repo)

    assert result.returncode != 0
    assert result.returncode != EXIT_WRONG_PASSWORD, result.stderr
    [record] = vault_records(vault_server, token).values()
    assert record["guesses_used"] == 0, record


def test_too_short_password_costs_no_guess(
    vault_server: ServerProcess, tmp_path: Path
) -> None:
    _, token = vault_server.create_account()
    repo, key_file = init_repository(vault_server, token, tmp_path)
    password_file = write_password(tmp_path / "password", "the right password")
    owner = Machine(
        tmp_path / "owner", token, recovery_key_file=key_file, password_file=password_file
    )
    add_password(owner, repo)
    short = Machine(tmp_path / "short", token, password_file=write_password(tmp_path / "s", "abc"))

    result = short.run("snapshots", "--repo", repo)

    assert result.returncode == 2, result.stderr
    assert "Nothing was sent to the vault" in result.stderr
    [record] = vault_records(vault_server, token).values()
    assert record["guesses_used"] == 0, record

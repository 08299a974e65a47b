"""End to end: the ``backvault`` client backs up to and restores from a running server.

The server runs as a real process: with SQLite and local blobs, with PostgreSQL, and
with S3 (moto) for the blobs. The restoring client gets only the server address, a
token and the recovery key, in a fresh home directory.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from backvault.storage.http import HttpBackend
from tests.conftest import TreeAssertion, backvault_executable, restored_location
from tests.helpers.postgres import PostgresCluster
from tests.server.conftest import ServerProcess, run_backvault, start_server, unique_name

OUTAGE_SECONDS = 2.0  # how long the database stays down in the outage test


def make_source_tree(root: Path, *, seed: str = "") -> Path:
    """Create a small folder with text, binary, empty and nested files and a symlink."""
    root.mkdir(parents=True)
    (root / "notes.txt").write_text(f"shopping list {seed}\n" * 200)
    (root / "photo.bin").write_bytes(secrets.token_bytes(300_000))
    (root / "empty").write_bytes(b"")
    nested = root / "chat" / "media"
    nested.mkdir(parents=True)
    (nested / "voice.ogg").write_bytes(secrets.token_bytes(50_000))
    (root / "chat" / "messages.db").write_bytes(b"SQLite format 3\0" + seed.encode() * 1000)
    (root / "latest").symlink_to("chat/messages.db")
    return root


class Client:
    """The backvault client of one machine: its own home directory, token and key file."""

    def __init__(self, home: Path, repo_url: str, token: str, key_file: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.repo_url = repo_url
        self.env = {
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "BACKVAULT_TOKEN": token, "BACKVAULT_RECOVERY_KEY_FILE": str(key_file),
        }

    def run(self, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
        return run_backvault(*arguments, "--repo", self.repo_url, env=self.env)

    def popen(self, *arguments: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(backvault_executable()), *map(str, arguments), "--repo", self.repo_url],
            env={**os.environ, **self.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True,
        )


def init_repository(server: ServerProcess, token: str, tmp_path: Path) -> tuple[str, Path]:
    """Run ``backvault init`` against the server; return the address and the key file."""
    repo_url = f"{server.url}/{unique_name('repo')}"
    key_file = tmp_path / "recovery-key.txt"
    result = run_backvault(
        "init", "--repo", repo_url, "--json", env={"BACKVAULT_TOKEN": token,
                                                    "HOME": str(tmp_path / "init-home")},
    )
    assert result.returncode == 0, result.stderr
    key_file.write_text(json.loads(result.stdout)["recovery_key"] + "\n")
    return repo_url, key_file


def back_up_restore_check(
    server: ServerProcess, token: str, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    """Back up on one client, restore on a second, then check every stored byte."""
    repo_url, key_file = init_repository(server, token, tmp_path)
    source = make_source_tree(tmp_path / "source", seed="first")

    first = Client(tmp_path / "machine-1", repo_url, token, key_file)
    backup = first.run("backup", source)
    assert backup.returncode == 0, backup.stderr

    second = Client(tmp_path / "machine-2", repo_url, token, key_file)
    target = tmp_path / "restored"
    restore = second.run("restore", "latest", "--target", target)
    assert restore.returncode == 0, restore.stderr
    assert_same_tree(source, restored_location(target, source))

    check = second.run("check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no errors found" in check.stdout
    assert server.is_running()


# Local blobs and SQLite -------------------------------------------------------------


def test_account_create_prints_token_last(server: ServerProcess) -> None:
    name = unique_name("cli")
    result = server.operator("create", name)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("bv_")
    assert " " not in token
    response = server.client(token).get("/v1/account")
    assert response.json()["name"] == name


def test_backup_restore_through_server(
    server: ServerProcess, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    name = unique_name("e2e")
    created = server.operator("create", name)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    back_up_restore_check(server, token, tmp_path, assert_same_tree)


def test_two_clients_back_up_at_once(server: ServerProcess, tmp_path: Path) -> None:
    _, token = server.create_account()
    repo_url, key_file = init_repository(server, token, tmp_path)
    clients = [Client(tmp_path / f"machine-{i}", repo_url, token, key_file) for i in (1, 2)]
    sources = [make_source_tree(tmp_path / f"source-{i}", seed=str(i)) for i in (1, 2)]

    processes = [
        client.popen("backup", source) for client, source in zip(clients, sources, strict=True)
    ]
    for process in processes:
        _stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr

    listing = clients[0].run("snapshots", "--json")
    assert listing.returncode == 0, listing.stderr
    assert len(json.loads(listing.stdout)) == 2
    check = clients[1].run("check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr


def test_append_only_account_backs_up(server: ServerProcess, tmp_path: Path) -> None:
    # Backups take and release locks; an append-only account must still allow that.
    _, token = server.create_account(append_only=True)
    repo_url, key_file = init_repository(server, token, tmp_path)
    client = Client(tmp_path / "machine", repo_url, token, key_file)
    for round_number in range(2):
        backup = client.run("backup", make_source_tree(tmp_path / f"src-{round_number}"))
        assert backup.returncode == 0, backup.stderr

    backend = HttpBackend(repo_url, token)
    try:
        snapshot_name = next(iter(backend.list("snapshots")))[0]
        with pytest.raises(Exception, match="append-only"):
            backend.delete("snapshots", snapshot_name)
        assert backend.exists("snapshots", snapshot_name)
    finally:
        backend.close()


def test_client_errors_name_server_and_fix(server: ServerProcess, tmp_path: Path) -> None:
    bad = run_backvault(
        "init", "--repo", f"{server.url}/repo", env={"BACKVAULT_TOKEN": "bv_wrong"}
    )
    assert bad.returncode != 0
    assert server.url in bad.stderr
    assert "401" in bad.stderr
    assert "backvault login" in bad.stderr

    no_token = run_backvault(
        "init", "--repo", f"{server.url}/repo",
        env={"BACKVAULT_TOKEN": "", "XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    assert no_token.returncode == 2
    assert "BACKVAULT_TOKEN" in no_token.stderr

    _, token = server.create_account(quota=20_000)
    repo_url, key_file = init_repository(server, token, tmp_path)
    client = Client(tmp_path / "machine", repo_url, token, key_file)
    full = client.run("backup", make_source_tree(tmp_path / "source"))
    assert full.returncode != 0
    assert "quota exceeded" in full.stderr
    assert "larger quota" in full.stderr
    assert server.is_running()


def test_login_saves_token_privately(server: ServerProcess, tmp_path: Path) -> None:
    _, token = server.create_account()
    config_home = tmp_path / "config"
    env = {"XDG_CONFIG_HOME": str(config_home), "BACKVAULT_TOKEN": ""}
    login = subprocess.run(
        [str(backvault_executable()), "login", server.url], input=token + "\n",
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False,
    )
    assert login.returncode == 0, login.stderr
    token_file = config_home / "backvault" / "tokens.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert json.loads(token_file.read_text())["servers"][server.url]["token"] == token

    # With the saved token and no BACKVAULT_TOKEN, the client reaches the server.
    init = run_backvault("init", "--repo", f"{server.url}/{unique_name('repo')}", env=env)
    assert init.returncode == 0, init.stderr

    rejected = subprocess.run(
        [str(backvault_executable()), "login", server.url], input="bv_wrong\n",
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False,
    )
    assert rejected.returncode != 0
    assert "401" in rejected.stderr
    assert json.loads(token_file.read_text())["servers"][server.url]["token"] == token


# PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_server(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("pg-server") / "data", database=postgres.create_database()
    )
    yield process
    process.stop()


def test_backup_restore_with_postgres(
    postgres_server: ServerProcess, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    name = unique_name("pg")
    created = postgres_server.operator("create", name)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    back_up_restore_check(postgres_server, token, tmp_path, assert_same_tree)


def test_database_outage_is_retried(
    postgres_server: ServerProcess, postgres: PostgresCluster
) -> None:
    _, token = postgres_server.create_account()
    client = postgres_server.client(token)
    repo = unique_name("repo")
    assert client.post(f"/v1/repos/{repo}").status_code == 201
    backend = HttpBackend(f"{postgres_server.url}/{repo}", token)

    restart = threading.Timer(OUTAGE_SECONDS, postgres.start)
    postgres.stop_server()
    try:
        during = client.get(f"/v1/repos/{repo}/data")
        assert during.status_code == 503
        assert "database" in during.json()["detail"]
        assert httpx.get(f"{postgres_server.url}/healthz").status_code == 503

        # The client retries with backoff while the database is down.
        restart.start()
        started = time.monotonic()
        backend.write("index", "0f", b"written during the outage")
        assert time.monotonic() - started >= OUTAGE_SECONDS * 0.5
    finally:
        if restart.is_alive():
            restart.join()
        else:
            restart.cancel()
            if httpx.get(f"{postgres_server.url}/healthz").status_code != 200:
                postgres.start()

    assert backend.read("index", "0f") == b"written during the outage"
    backend.close()
    assert postgres_server.is_running()
    assert httpx.get(f"{postgres_server.url}/healthz").status_code == 200


# S3 -----------------------------------------------------------------------------------


def test_backup_restore_with_s3_storage(
    moto_endpoint: str, tmp_path: Path, assert_same_tree: TreeAssertion
) -> None:
    bucket = unique_name("bucket")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    process = start_server(tmp_path / "data", storage=f"s3://{bucket}/server")
    try:
        _, token = process.create_account()
        back_up_restore_check(process, token, tmp_path, assert_same_tree)
    finally:
        process.stop()

    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys
    assert all(key.startswith("server/1/repo-") for key in keys)
    assert not any((tmp_path / "data" / "blobs").rglob("*config"))

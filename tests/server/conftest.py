"""Fixtures for server tests: real ``backvault server`` processes and a PostgreSQL cluster.

Each server runs as its own uvicorn process on 127.0.0.1 and a free port, started through
the ``backvault`` command as an operator would, and is stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backvault.server.config import METADATA_FILE_NAME, normalize_database_url
from backvault.server.metadata import Metadata
from tests.conftest import backvault_executable
from tests.helpers.moto import aws_environment, find_free_port, start_moto_server
from tests.helpers.postgres import PostgresCluster, find_postgres_bin, start_postgres

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds; the server responds within about two
STOP_TIMEOUT = 10.0  # seconds to wait after SIGTERM before SIGKILL
CLI_TIMEOUT = 120  # seconds for one backvault command
# Small enough that a test can exceed it quickly, large enough for the packs of a small
# test folder.
TEST_MAX_OBJECT_SIZE = 4 * 1024 * 1024  # bytes


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class ServerProcess:
    """A running ``backvault server``, with helpers to run operator commands on its data."""

    def __init__(
        self, data_dir: Path, store_options: list[str], extra: list[str], database_url: str,
        ca_file: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.store_options = ["--data-dir", str(data_dir), *store_options]
        self.extra = extra
        self.port = find_free_port()
        # ca_file is the certificate to trust when the server serves HTTPS.
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        self.url = f"{'https' if ca_file else 'http'}://{HOST}:{self.port}"
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            str(backvault_executable()), "server", *self.store_options,
            "--host", HOST, "--port", str(self.port), *self.extra,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"backvault server exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=1.0, verify=self.verify)
                if health.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"backvault server did not answer within {START_TIMEOUT} s:\n{self.log()}"
        )

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def operator(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run ``backvault server account ...`` on this server's data."""
        argv = [str(backvault_executable()), "server", "account", *arguments,
                *self.store_options]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL,
        )

    def create_account(
        self, name: str | None = None, *, append_only: bool = False, quota: int | None = None
    ) -> tuple[str, str]:
        """Create an account and a token in the server's database; return both.

        This calls the metadata layer directly, because starting the command line for
        each account would take most of the test time. The command has tests of its own.
        """
        name = name or unique_name("account")
        metadata = Metadata(self.database_url)
        try:
            account = metadata.create_account(name, append_only=append_only, quota_bytes=quota)
            _, token = metadata.issue_token(account.id)
        finally:
            metadata.close()
        return name, token

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=30.0, verify=self.verify
        )


def start_server(
    data_dir: Path, *, database: str | None = None, storage: str | None = None,
    extra: list[str] | None = None, ca_file: Path | None = None,
) -> ServerProcess:
    """Start a server on ``data_dir``, with PostgreSQL or S3 when those are given."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store_options = []
    if database is not None:
        store_options += ["--database", database]
    if storage is not None:
        store_options += ["--storage", storage]
    database_url = normalize_database_url(database) if database else (
        f"sqlite:///{data_dir / METADATA_FILE_NAME}"
    )
    server = ServerProcess(data_dir, store_options, extra or [], database_url, ca_file)
    server.start()
    return server


def run_backvault(
    *arguments: str | Path, env: dict[str, str], timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run the ``backvault`` client with ``env`` added to the environment."""
    return subprocess.run(
        [str(backvault_executable()), *[str(argument) for argument in arguments]],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **env}, stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with SQLite metadata and local blobs, shared by the tests of a module."""
    process = start_server(
        tmp_path_factory.mktemp("server") / "data",
        extra=["--max-object-size", str(TEST_MAX_OBJECT_SIZE)],
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the session; in CI a missing PostgreSQL fails the tests."""
    if find_postgres_bin() is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed; apt-get install postgresql")
    cluster = start_postgres()
    yield cluster
    cluster.stop()


@pytest.fixture
def account(server: ServerProcess) -> tuple[str, str]:
    return server.create_account()


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server, with the AWS variables pointing at it for this process and its
    children (the server processes)."""
    moto = start_moto_server()
    config_directory = tmp_path_factory.mktemp("aws-config")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in aws_environment(moto.endpoint_url, config_directory).items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        try:
            yield moto.endpoint_url
        finally:
            moto.stop()

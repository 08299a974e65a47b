"""Start a throwaway PostgreSQL cluster on 127.0.0.1, for tests that need a real database.

The cluster is made by ``initdb`` from Debian's ``postgresql`` package
(``/usr/lib/postgresql/VERSION/bin``) in a new temporary directory. PostgreSQL refuses to
run as root, so when the tests run as root, every PostgreSQL command runs as the
``postgres`` user through ``runuser``, and the directory is handed to that user. The
cluster trusts every local connection and skips fsync: it holds only test data.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.helpers.moto import find_free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
COMMAND_TIMEOUT = 60  # seconds; initdb takes about two on a small machine
BIN_PATTERN = "/usr/lib/postgresql/*/bin"


def find_postgres_bin() -> Path | None:
    """Return the newest PostgreSQL server ``bin`` directory, or None if none is installed."""
    candidates = [Path(path) for path in glob.glob(BIN_PATTERN) if Path(path, "initdb").exists()]
    if not candidates:
        return None
    return max(candidates, key=lambda path: int(path.parent.name.split(".")[0]))


class PostgresCluster:
    """A running cluster; :meth:`stop` shuts it down and removes its directory."""

    def __init__(self, bin_dir: Path, directory: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.directory = directory
        self.port = port

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """Create a new, empty database and return its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        options = f"-h {HOST} -p {self.port} -k {self.directory} -F"
        _run_as_postgres([
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l",
            str(self.directory / "server.log"), "-o", options, "-w", "start",
        ])

    def stop_server(self) -> None:
        """Shut the server down (fast mode: open sessions are ended), keeping the data."""
        _run_as_postgres([
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop",
        ])

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop_server()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_postgres() -> PostgresCluster:
    """Create and start a cluster on a free port of 127.0.0.1.

    Raises RuntimeError when PostgreSQL is not installed or fails to start.
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError(
            f"PostgreSQL is not installed (no initdb in {BIN_PATTERN}); "
            "install it with 'apt-get install postgresql'"
        )
    directory = Path(tempfile.mkdtemp(prefix="backvault-postgres-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SUPERUSER)
        os.chown(directory, account.pw_uid, account.pw_gid)

    cluster = PostgresCluster(bin_dir, directory, find_free_port())
    try:
        _run_as_postgres([
            str(bin_dir / "initdb"), "-D", str(cluster.data_dir), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--no-sync",
        ])
        cluster.start()
    except subprocess.CalledProcessError as error:
        log = cluster.log()
        cluster.stop()
        raise RuntimeError(
            f"PostgreSQL failed to start: {error}\n{error.stdout}\n{error.stderr}\n{log}"
        ) from error
    return cluster


def _run_as_postgres(argv: list[str]) -> None:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", SUPERUSER, "--", *argv]
    subprocess.run(
        argv, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )

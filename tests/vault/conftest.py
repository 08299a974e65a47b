"""Fixtures for vault tests: SoftHSM2 tokens, metadata databases and vault servers.

The server and PostgreSQL fixtures of ``tests/server/conftest.py`` are imported here, so
these tests start real ``backvault server`` processes the same way. Vault servers get a
config file with a ``[vault]`` table. Its rate limits are off unless a test turns them
on, because every test client connects from 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backvault.server.config import normalize_database_url
from backvault.server.metadata import Metadata
from tests.helpers.postgres import PostgresCluster
from tests.server.conftest import ServerProcess, postgres, start_server  # noqa: F401
from tests.vault.softhsm import SoftHsm, SoftHsmToken, find_module

NO_RATE_LIMITS = {"account_rate_limit": 0, "address_rate_limit": 0}


def write_vault_config(path: Path, settings: dict[str, Any]) -> Path:
    """Write a server config file that has only a ``[vault]`` table."""
    lines = ["[vault]"]
    for name, value in settings.items():
        lines.append(f"{name} = {value!r}" if isinstance(value, str) else f"{name} = {value}")
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def start_vault_server(
    directory: Path, settings: dict[str, Any], *, database: str | None = None
) -> ServerProcess:
    config = write_vault_config(directory / "server.toml", {**NO_RATE_LIMITS, **settings})
    return start_server(directory / "data", database=database, extra=["--config", str(config)])


# SoftHSM2 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InProcessTokens:
    """Tokens for tests that load the PKCS#11 module into the test process itself.

    A loaded SoftHSM2 module does not see tokens created after it was initialized, so
    all of these are created together before any test loads it.
    """

    fresh: SoftHsmToken  # empty: the key store creates its keys here
    reopened: SoftHsmToken  # opened twice, to show the keys persist
    extractable: SoftHsmToken  # a test puts an extractable key here


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A SoftHSM2 configuration for the session, with SOFTHSM2_CONF set for every process.

    In CI a missing SoftHSM2 fails the tests; elsewhere they are skipped.
    """
    module = find_module()
    if module is None:
        if os.environ.get("CI"):
            raise RuntimeError("SoftHSM2 is not installed; apt-get install softhsm2")
        pytest.skip("SoftHSM2 is not installed; apt-get install softhsm2")
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"), module)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in hsm.environment().items():
            patch.setenv(name, value)
        yield hsm


@pytest.fixture(scope="session")
def in_process_tokens(softhsm: SoftHsm) -> InProcessTokens:
    return InProcessTokens(
        fresh=softhsm.new_token("fresh"),
        reopened=softhsm.new_token("reopened"),
        extractable=softhsm.new_token("extractable"),
    )


# Databases --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty metadata database: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return normalize_database_url(cluster.create_database("vault"))


@pytest.fixture
def metadata(metadata_url: str) -> Iterator[Metadata]:
    opened = Metadata(metadata_url)
    opened.create_schema()
    yield opened
    opened.close()


# Servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with SQLite metadata and the vault keys in a key file."""
    process = start_vault_server(tmp_path_factory.mktemp("vault-server"), {})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def postgres_vault_server(
    postgres: PostgresCluster,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A server with PostgreSQL metadata and the vault keys in a key file."""
    process = start_vault_server(
        tmp_path_factory.mktemp("vault-pg-server"), {}, database=postgres.create_database()
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def hsm_vault_server(
    postgres: PostgresCluster,  # noqa: F811
    softhsm: SoftHsm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A server with PostgreSQL metadata and the vault keys in a SoftHSM2 token."""
    token = softhsm.new_token("server")
    process = start_vault_server(
        tmp_path_factory.mktemp("vault-hsm-server"), token.vault_settings(),
        database=postgres.create_database(),
    )
    yield process
    process.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_vault_server(request: pytest.FixtureRequest) -> ServerProcess:
    """The SQLite vault server, then the PostgreSQL one."""
    name = "vault_server" if request.param == "sqlite" else "postgres_vault_server"
    server: ServerProcess = request.getfixturevalue(name)
    return server

"""The ``[vault]`` settings of the server's config file, and constants the CLI repeats."""

from __future__ import annotations

from pathlib import Path

import pytest

from backvault.cli import password_commands
from backvault.crypto.password_slot import DEFAULT_KSF, KIND_PASSWORD
from backvault.server.config import build_config, read_config_file
from backvault.server.errors import ServerConfigError
from backvault.vault.settings import DEFAULT_GUESS_LIMIT, KEY_FILE_NAME


def config_with(tmp_path: Path, vault_table: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(vault_table)
    return path


def test_defaults(tmp_path: Path) -> None:
    config = build_config({"data_dir": str(tmp_path)})
    assert config.vault.guess_limit == DEFAULT_GUESS_LIMIT
    assert config.vault.pkcs11 is None
    assert config.vault.key_file_path(config.data_dir) == config.data_dir / KEY_FILE_NAME


def test_vault_table_read(tmp_path: Path) -> None:
    path = config_with(tmp_path, (
        "[vault]\n"
        'pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"\n'
        'pkcs11_token = "backvault"\n'
        'pkcs11_pin_file = "/etc/backvault/pin"\n'
        "guess_limit = 5\n"
        "account_rate_limit = 0\n"
    ))
    config = build_config({"data_dir": str(tmp_path), **read_config_file(path)})
    assert config.vault.guess_limit == 5
    assert config.vault.account_rate_limit == 0
    assert config.vault.pkcs11 is not None
    assert config.vault.pkcs11.token_label == "backvault"
    assert config.vault.pkcs11.pin_file == Path("/etc/backvault/pin")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[vault]\nguess_limit = 0\n", "guess_limit"),
        ("[vault]\nguess_limit = true\n", "guess_limit"),
        ("[vault]\nguess_limits = 3\n", "unknown setting 'guess_limits'"),
        ('[vault]\npkcs11_module = "/lib/x.so"\n', "missing: pkcs11_token, pkcs11_pin_file"),
        ("[vault]\naddress_rate_limit = -1\n", "address_rate_limit"),
        ('vault = "on"\n', "'vault'"),
    ],
)
def test_invalid_vault_settings(tmp_path: Path, table: str, message: str) -> None:
    path = config_with(tmp_path, table)
    with pytest.raises(ServerConfigError, match=message):
        build_config({"data_dir": str(tmp_path), **read_config_file(path)})


def test_cli_constants_match_crypto() -> None:
    # The CLI repeats these so that its help does not load the OPAQUE modules.
    assert password_commands.KIND_PASSWORD == KIND_PASSWORD
    cli_defaults = (
        password_commands.DEFAULT_ARGON2_MEMORY,
        password_commands.DEFAULT_ARGON2_ITERATIONS,
        password_commands.DEFAULT_ARGON2_LANES,
    )
    assert cli_defaults == (DEFAULT_KSF.memory_kib, DEFAULT_KSF.iterations, DEFAULT_KSF.lanes)

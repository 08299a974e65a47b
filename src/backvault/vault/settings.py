"""The vault's settings: the ``[vault]`` table of the server's TOML config file.

::

    [vault]
    key_file = "/var/lib/backvault/vault-keys"   # default: DATA_DIR/vault-keys
    pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token = "backvault"
    pkcs11_pin_file = "/etc/backvault/hsm-pin"
    guess_limit = 10
    account_rate_limit = 60    # vault requests per minute and account; 0 turns it off
    address_rate_limit = 300   # vault requests per minute and client address; 0 turns it off

Setting ``pkcs11_module`` moves the OPRF seed and the record-encryption key into that
token, and then ``pkcs11_token`` and ``pkcs11_pin_file`` are required. Without it the
keys are in the key file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_GUESS_LIMIT = 10
MAX_GUESS_LIMIT = 100
DEFAULT_ACCOUNT_RATE_LIMIT = 60  # requests per minute
DEFAULT_ADDRESS_RATE_LIMIT = 300  # requests per minute
DEFAULT_LOGIN_TIMEOUT = 60  # seconds between KE2 and KE3
KEY_FILE_NAME = "vault-keys"

# Settings of the [vault] table, with the type each must have.
_SETTING_TYPES: dict[str, type] = {
    "key_file": str, "pkcs11_module": str, "pkcs11_token": str, "pkcs11_pin_file": str,
    "guess_limit": int, "account_rate_limit": int, "address_rate_limit": int,
    "login_timeout": int,
}


@dataclass(frozen=True)
class Pkcs11Settings:
    """Where the PKCS#11 token is and how to log in to it."""

    module: Path
    token_label: str
    pin_file: Path


@dataclass(frozen=True)
class VaultSettings:
    """The vault's keys, guess limit and rate limits; see the module docstring."""

    key_file: Path | None = None
    pkcs11: Pkcs11Settings | None = None
    guess_limit: int = DEFAULT_GUESS_LIMIT
    account_rate_limit: int = DEFAULT_ACCOUNT_RATE_LIMIT
    address_rate_limit: int = DEFAULT_ADDRESS_RATE_LIMIT
    login_timeout: int = DEFAULT_LOGIN_TIMEOUT

    def key_file_path(self, data_dir: Path) -> Path:
        return self.key_file if self.key_file is not None else data_dir / KEY_FILE_NAME


def parse_vault_settings(table: dict[str, Any] | None) -> VaultSettings:
    """Check the ``[vault]`` table of a config file; raise ValueError naming the bad setting."""
    if not table:
        return VaultSettings()
    for name, value in table.items():
        expected = _SETTING_TYPES.get(name)
        if expected is None:
            known = ", ".join(sorted(_SETTING_TYPES))
            raise ValueError(f"unknown setting {name!r} in [vault]; known settings: {known}")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValueError(f"setting {name!r} in [vault] must be a {expected.__name__}")

    guess_limit = int(table.get("guess_limit", DEFAULT_GUESS_LIMIT))
    if not 1 <= guess_limit <= MAX_GUESS_LIMIT:
        raise ValueError(f"guess_limit in [vault] must be from 1 to {MAX_GUESS_LIMIT}")
    for name in ("account_rate_limit", "address_rate_limit"):
        if int(table.get(name, 0)) < 0:
            raise ValueError(f"{name} in [vault] must be 0 (off) or a positive number")
    login_timeout = int(table.get("login_timeout", DEFAULT_LOGIN_TIMEOUT))
    if login_timeout < 1:
        raise ValueError("login_timeout in [vault] must be at least 1 second")

    key_file = table.get("key_file")
    return VaultSettings(
        key_file=Path(key_file).absolute() if key_file else None,
        pkcs11=_pkcs11_settings(table),
        guess_limit=guess_limit,
        account_rate_limit=int(table.get("account_rate_limit", DEFAULT_ACCOUNT_RATE_LIMIT)),
        address_rate_limit=int(table.get("address_rate_limit", DEFAULT_ADDRESS_RATE_LIMIT)),
        login_timeout=login_timeout,
    )


def _pkcs11_settings(table: dict[str, Any]) -> Pkcs11Settings | None:
    names = ("pkcs11_module", "pkcs11_token", "pkcs11_pin_file")
    given = [name for name in names if table.get(name)]
    if not given:
        return None
    missing = [name for name in names if name not in given]
    if missing:
        raise ValueError(
            f"a PKCS#11 token needs {', '.join(names)} in [vault]; missing: {', '.join(missing)}"
        )
    return Pkcs11Settings(
        module=Path(table["pkcs11_module"]),
        token_label=str(table["pkcs11_token"]),
        pin_file=Path(table["pkcs11_pin_file"]),
    )

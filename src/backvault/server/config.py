"""The server's settings, from command-line options and an optional TOML config file.

A config file has the same settings as the options, with underscores in place of dashes::

    data_dir = "/var/lib/backvault"
    database = "postgresql://backvault@db.example/backvault"
    storage = "s3://backups/backvault"
    host = "0.0.0.0"
    port = 8420
    tls_cert = "/etc/backvault/cert.pem"
    tls_key = "/etc/backvault/key.pem"
    log_level = "info"
    max_object_size = 67108864
    jwt_public_key = "/etc/backvault/idp.pem"
    jwt_issuer = "https://id.example"
    jwt_audience = "backvault"
    passkey_rp_id = "backup.example.com"
    passkey_origin = "https://backup.example.com"

    [vault]            # the key vault; see backvault.vault.settings
    guess_limit = 10

An option provided on the command line wins over the same setting in the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from backvault.server.errors import ServerConfigError
from backvault.vault.settings import VaultSettings, parse_vault_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
# Packs are about 16 MiB, so 64 MiB leaves room for larger pack settings.
DEFAULT_MAX_OBJECT_SIZE = 64 * 1024 * 1024  # bytes
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_PASSKEY_RP_ID = "localhost"
SERVICES = ("blobs", "vault", "passkeys")  # every service, the default
METADATA_FILE_NAME = "metadata.sqlite3"


@dataclass(frozen=True)
class JwtConfig:
    """The identity provider whose JSON Web Tokens the server accepts."""

    public_key_pem: bytes
    issuer: str
    audience: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; see the module docstring for the file form."""

    data_dir: Path
    database: str | None = None
    storage: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: str = "info"
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE
    jwt: JwtConfig | None = field(default=None)
    vault: VaultSettings = field(default_factory=VaultSettings)
    # The WebAuthn relying party: passkeys are bound to passkey_rp_id, and the passkey
    # pages must be opened at passkey_origin (see docs/passkeys.md).
    passkey_rp_id: str = DEFAULT_PASSKEY_RP_ID
    passkey_origin: str = f"http://{DEFAULT_PASSKEY_RP_ID}:{DEFAULT_PORT}"
    # Which APIs this server offers; an operator can run the key vault apart from blobs.
    services: tuple[str, ...] = SERVICES

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the metadata database; SQLite in the data dir by default."""
        if self.database:
            return self.database
        return f"sqlite:///{self.data_dir / METADATA_FILE_NAME}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


# Settings that may appear in a config file, with the type each must have.
_FILE_SETTINGS: dict[str, type] = {
    "data_dir": str, "database": str, "storage": str, "host": str, "port": int,
    "tls_cert": str, "tls_key": str, "log_level": str, "max_object_size": int,
    "jwt_public_key": str, "jwt_issuer": str, "jwt_audience": str, "vault": dict,
    "passkey_rp_id": str, "passkey_origin": str, "services": str,
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file and check the names and types of its settings."""
    try:
        with open(path, "rb") as file:
            settings = tomllib.load(file)
    except FileNotFoundError:
        raise ServerConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ServerConfigError(f"cannot read config file {path}: {error}") from error

    for name, value in settings.items():
        expected = _FILE_SETTINGS.get(name)
        if expected is None:
            known = ", ".join(sorted(_FILE_SETTINGS))
            raise ServerConfigError(
                f"unknown setting {name!r} in config file {path}", hint=f"Known settings: {known}."
            )
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ServerConfigError(
                f"setting {name!r} in config file {path} must be a {expected.__name__}, "
                f"not {value!r}"
            )
    return settings


def build_config(settings: dict[str, Any]) -> ServerConfig:
    """Check merged settings (file and options, None for unset) and build the config."""
    provided = {name: value for name, value in settings.items() if value is not None}
    if "data_dir" not in provided:
        raise ServerConfigError(
            "no data directory provided",
            hint="Pass --data-dir DIR or set data_dir in the config file.",
        )

    log_level = str(provided.get("log_level", "info")).lower()
    if log_level not in LOG_LEVELS:
        raise ServerConfigError(
            f"invalid log level {log_level!r}", hint=f"Use one of {', '.join(LOG_LEVELS)}."
        )
    port = int(provided.get("port", DEFAULT_PORT))
    if not 0 < port < 65536:
        raise ServerConfigError(f"invalid port {port}", hint="Use a port from 1 to 65535.")
    max_object_size = int(provided.get("max_object_size", DEFAULT_MAX_OBJECT_SIZE))
    if max_object_size < 1:
        raise ServerConfigError(
            f"invalid maximum object size {max_object_size}",
            hint="Use a positive number of bytes.",
        )

    storage = provided.get("storage")
    if storage is not None and not str(storage).startswith("s3://"):
        raise ServerConfigError(
            f"unsupported storage {storage!r}",
            hint="Use s3://BUCKET/PREFIX, or leave it unset to store blobs in the data dir.",
        )
    database = provided.get("database")
    if database is not None:
        database = normalize_database_url(str(database))

    tls_cert, tls_key = provided.get("tls_cert"), provided.get("tls_key")
    if (tls_cert is None) != (tls_key is None):
        raise ServerConfigError(
            "TLS needs both a certificate and a key", hint="Pass both --tls-cert and --tls-key."
        )

    passkey_rp_id, passkey_origin = _passkey_relying_party(
        provided, port, tls=tls_cert is not None
    )
    return ServerConfig(
        data_dir=Path(provided["data_dir"]).absolute(),
        database=database,
        storage=storage.rstrip("/") if storage else None,
        host=str(provided.get("host", DEFAULT_HOST)),
        port=port,
        tls_cert=Path(tls_cert) if tls_cert else None,
        tls_key=Path(tls_key) if tls_key else None,
        log_level=log_level,
        max_object_size=max_object_size,
        jwt=_jwt_config(provided),
        vault=_vault_settings(provided.get("vault")),
        passkey_rp_id=passkey_rp_id,
        passkey_origin=passkey_origin,
        services=parse_services(provided.get("services")),
    )


def _vault_settings(table: dict[str, Any] | None) -> VaultSettings:
    try:
        return parse_vault_settings(table)
    except ValueError as error:
        raise ServerConfigError(str(error)) from None


def normalize_database_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver named for PostgreSQL, which SQLAlchemy needs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith(("postgresql+", "sqlite:")):
        return url
    raise ServerConfigError(
        "unsupported database URL (the part before '://' must be postgresql or sqlite)",
        hint="Use postgresql://USER:PASSWORD@HOST:PORT/DATABASE or sqlite:///PATH.",
    )


def _jwt_config(provided: dict[str, Any]) -> JwtConfig | None:
    key_file, issuer = provided.get("jwt_public_key"), provided.get("jwt_issuer")
    if key_file is None and issuer is None:
        if provided.get("jwt_audience") is not None:
            raise ServerConfigError("--jwt-audience needs --jwt-public-key and --jwt-issuer")
        return None
    if key_file is None or issuer is None:
        raise ServerConfigError(
            "JSON Web Tokens need both a public key and an issuer",
            hint="Pass both --jwt-public-key FILE and --jwt-issuer ISSUER.",
        )
    try:
        public_key_pem = Path(key_file).read_bytes()
    except OSError as error:
        raise ServerConfigError(f"cannot read the JWT public key {key_file}: {error}") from error
    return JwtConfig(public_key_pem, str(issuer), provided.get("jwt_audience"))


# Passkey relying party ----------------------------------------------------------------


def _passkey_relying_party(
    provided: dict[str, Any], port: int, *, tls: bool
) -> tuple[str, str]:
    """Return the checked WebAuthn RP ID and origin of the passkey pages.

    The origin defaults to the RP ID with this server's scheme and port. That is right
    when browsers reach the server directly. Behind a proxy, the operator sets it.
    """
    rp_id = str(provided.get("passkey_rp_id", DEFAULT_PASSKEY_RP_ID)).strip().lower()
    if not rp_id or "/" in rp_id or ":" in rp_id:
        raise ServerConfigError(
            f"invalid passkey RP ID {rp_id!r}",
            hint="Use the server's host name without scheme or port, such as "
            "backup.example.com (or localhost).",
        )
    default_origin = f"{'https' if tls else 'http'}://{rp_id}:{port}"
    origin = str(provided.get("passkey_origin", default_origin)).strip().rstrip("/")
    return rp_id, _checked_passkey_origin(origin, rp_id)


def _checked_passkey_origin(origin: str, rp_id: str) -> str:
    """Check ``origin`` and return it as browsers write it, without a default port."""
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        raise ServerConfigError(
            f"invalid port in the passkey origin {origin!r}", hint="Use a port from 1 to 65535."
        ) from None

    host = parts.hostname or ""
    extra = parts.path or parts.query or parts.fragment or parts.username
    if parts.scheme not in ("http", "https") or not host or extra:
        raise ServerConfigError(
            f"invalid passkey origin {origin!r}",
            hint="Use the scheme, host and port that browsers open, such as "
            "https://backup.example.com.",
        )

    # WebAuthn accepts an RP ID only if it is the origin's host or a parent domain of it.
    if host != rp_id and not host.endswith("." + rp_id):
        raise ServerConfigError(
            f"passkey origin {origin!r} does not belong to the passkey RP ID {rp_id!r}",
            hint="The origin's host must be the RP ID or a subdomain of it; set "
            "--passkey-rp-id and --passkey-origin to match.",
        )

    # Browsers run WebAuthn only in a secure context: HTTPS, or plain HTTP on localhost.
    if parts.scheme == "http" and host != "localhost" and not host.endswith(".localhost"):
        raise ServerConfigError(
            f"passkey origin {origin!r} uses plain HTTP on a host other than localhost",
            hint="Browsers allow passkeys only over HTTPS (or on localhost); serve HTTPS "
            "with --tls-cert and --tls-key, or put an HTTPS proxy in front and set "
            "--passkey-origin to its address.",
        )

    # The origin in a browser's client data leaves out the scheme's default port.
    if port is None or port == {"http": 80, "https": 443}[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def parse_services(text: str | None) -> tuple[str, ...]:
    """Parse a comma-separated list of services, such as ``vault`` or ``blobs,vault``."""
    if text is None:
        return SERVICES
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in SERVICES]
    if unknown or not names:
        raise ServerConfigError(
            f"invalid services {text!r}",
            hint=f"Give one or more of {', '.join(SERVICES)}, separated by commas, such as "
            "--services vault for a key vault alone.",
        )
    return names

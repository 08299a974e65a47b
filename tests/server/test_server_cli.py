"""The operator commands: accounts, tokens, the config file and their error messages."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
from pathlib import Path

import blake3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backvault.cli.server_commands import parse_size
from tests.server.conftest import ServerProcess, run_backvault, start_server, unique_name


def operator(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return run_backvault("server", "account", *arguments, env={})


def test_parse_size() -> None:
    assert parse_size("1000") == 1000
    assert parse_size("2K") == 2048
    assert parse_size("5MiB") == 5 * 1024**2
    assert parse_size("1g") == 1024**3


def test_account_commands(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    created = operator("create", "alice", "--append-only", "--quota", "1G", "--json", *data)
    assert created.returncode == 0, created.stderr
    details = json.loads(created.stdout)
    assert details["account"]["append_only"] is True
    assert details["account"]["quota_bytes"] == 1024**3
    assert details["token"].startswith("bv_")

    duplicate = operator("create", "alice", *data)
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr

    listing = operator("list", *data)
    assert "alice" in listing.stdout
    assert "append-only" in listing.stdout

    assert operator("disable", "alice", *data).returncode == 0
    listed = json.loads(operator("list", "--json", *data).stdout)
    assert listed[0]["disabled"] is True

    issued = operator("token", "issue", "alice", "--label", "phone", *data)
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.strip().splitlines()[-1].startswith("bv_")
    tokens = json.loads(operator("token", "list", "alice", "--json", *data).stdout)
    assert [token["label"] for token in tokens] == ["created with the account", "phone"]

    revoked = operator("token", "revoke", tokens[1]["id"], *data)
    assert revoked.returncode == 0, revoked.stderr
    unknown = operator("token", "revoke", "ffff", *data)
    assert unknown.returncode == 1
    assert "no token has the id" in unknown.stderr

    missing = operator("disable", "nobody", *data)
    assert missing.returncode == 1
    assert "no account is called" in missing.stderr


def test_account_delete_removes_objects(server: ServerProcess) -> None:
    name, token = server.create_account()
    client = server.client(token)
    assert client.post("/v1/repos/doomed").status_code == 201
    data = b"to be deleted"
    client.put("/v1/repos/doomed/data/abcd", content=data,
               headers={"X-Content-Hash": f"blake3={blake3.blake3(data).hexdigest()}"})
    stored = list((server.data_dir / "blobs").rglob("abcd"))
    assert len(stored) == 1

    unconfirmed = server.operator("delete", name)
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr

    deleted = server.operator("delete", name, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "1 stored objects" in deleted.stdout
    assert not stored[0].exists()
    assert client.get("/v1/account").status_code == 401


def test_config_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nmax_object_size = 1000\n')
    created = operator("create", "carol", "--config", str(config), "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]

    process = start_server(tmp_path / "unused", extra=["--config", str(config)])
    try:
        # The data dir option given by start_server wins over the file.
        assert process.client(token).get("/v1/account").status_code == 401
    finally:
        process.stop()

    unknown = tmp_path / "bad.toml"
    unknown.write_text('data_dir = "x"\ncolour = "blue"\n')
    result = run_backvault("server", "--config", str(unknown), env={})
    assert result.returncode == 2
    assert "unknown setting 'colour'" in result.stderr


def test_vault_alone(tmp_path: Path) -> None:
    """--services vault serves accounts and the key vault, and no blob API."""
    process = start_server(tmp_path / "data", extra=["--services", "vault"])
    try:
        _, token = process.create_account()
        client = process.client(token)
        assert client.get("/v1/account").status_code == 200
        assert client.get("/v1/vault/records").json() == {"records": []}
        assert client.post("/v1/repos/photos").status_code == 404
        assert client.post(
            "/v1/passkeys/ceremonies", json={"kind": "register", "name": "x", "prf_salt": "AA"}
        ).status_code == 404
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["server"], "no data directory provided"),
        (["server", "--data-dir", "x", "--storage", "ftp://host"], "unsupported storage"),
        (["server", "--data-dir", "x", "--database", "mysql://db"], "unsupported database"),
        (["server", "--data-dir", "x", "--tls-cert", "c.pem"], "TLS needs both"),
        (["server", "--data-dir", "x", "--jwt-issuer", "i"], "need both a public key"),
        (["server", "--data-dir", "x", "--port", "http"], "invalid value 'http' for --port"),
        (["server", "--data-dir", "x", "--log-level", "loud"], "invalid log level 'loud'"),
        (["server", "--data-dir", "x", "--services", "vault,mail"], "invalid services"),
    ],
)
def test_invalid_server_options(arguments: list[str], message: str) -> None:
    result = run_backvault(*arguments, env={})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_unreachable_database_reported(tmp_path: Path) -> None:
    result = operator(
        "list", "--data-dir", str(tmp_path), "--database",
        "postgresql://nobody:hunter2@127.0.0.1:1/none",
    )
    assert result.returncode == 1
    assert "metadata database failed" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def make_self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a certificate for 127.0.0.1 that is its own CA, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return certificate_path, key_path


def test_client_over_tls(tmp_path: Path) -> None:
    certificate, key = make_self_signed_certificate(tmp_path)
    process = start_server(
        tmp_path / "data", ca_file=certificate,
        extra=["--tls-cert", str(certificate), "--tls-key", str(key)],
    )
    try:
        assert process.url.startswith("https://")
        _, token = process.create_account()
        repo_url = f"{process.url}/{unique_name('repo')}"
        env = {"BACKVAULT_TOKEN": token, "BACKVAULT_CA_FILE": str(certificate)}
        init = run_backvault("init", "--repo", repo_url, env=env)
        assert init.returncode == 0, init.stderr

        untrusted = run_backvault("init", "--repo", repo_url + "-2",
                                  env={"BACKVAULT_TOKEN": token})
        assert untrusted.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        assert "BACKVAULT_CA_FILE" in untrusted.stderr
    finally:
        process.stop()

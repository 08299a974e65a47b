"""JSON Web Tokens of an identity provider: accepted algorithms, rejected tokens, accounts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from backvault.server.auth import JwtVerifier
from backvault.server.config import JwtConfig
from backvault.server.errors import ApiError, ServerConfigError
from tests.server.conftest import start_server

ISSUER = "https://id.example.test"
AUDIENCE = "backvault"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def public_pem(private_key: PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "+15551234567", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


KEYS: dict[str, tuple[PrivateKey, str]] = {
    "EdDSA": (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    "ES256": (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    "RS256": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
}


@pytest.mark.parametrize("algorithm", sorted(KEYS))
def test_signed_token_accepted(algorithm: str) -> None:
    private_key, name = KEYS[algorithm]
    verifier = JwtVerifier(JwtConfig(public_pem(private_key), ISSUER, AUDIENCE))
    token = jwt.encode(claims(), private_key, algorithm=name)
    assert verifier.subject(token) == "+15551234567"


def unsigned_token(payload: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def test_invalid_tokens_rejected() -> None:
    private_key, _ = KEYS["EdDSA"]
    pem = public_pem(private_key)
    verifier = JwtVerifier(JwtConfig(pem, ISSUER, AUDIENCE))
    other_key = ed25519.Ed25519PrivateKey.generate()
    cases = {
        "expired": jwt.encode(claims(exp=int(time.time()) - 3600), private_key, "EdDSA"),
        "no expiry": jwt.encode(claims(exp=None), private_key, "EdDSA"),
        "wrong issuer": jwt.encode(claims(iss="https://evil.test"), private_key, "EdDSA"),
        "wrong audience": jwt.encode(claims(aud="other"), private_key, "EdDSA"),
        "no subject": jwt.encode(claims(sub=None), private_key, "EdDSA"),
        "other key": jwt.encode(claims(), other_key, "EdDSA"),
        "alg none": unsigned_token(claims()),
        # An HMAC token keyed with the public key, the classic algorithm confusion.
        "HS256 with public key": _hs256_token(claims(), pem),
    }
    for case, token in cases.items():
        with pytest.raises(ApiError) as raised:
            verifier.subject(token)
        assert raised.value.status == 401, case
    with pytest.raises(ApiError, match="expired"):
        verifier.subject(cases["expired"])


def _hs256_token(payload: dict[str, Any], key: bytes) -> str:
    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = encode(json.dumps(payload).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{encode(signature)}"


def test_unsupported_key_rejected() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ServerConfigError, match="unsupported JWT public key"):
        JwtVerifier(JwtConfig(public_pem(p384), ISSUER))
    with pytest.raises(ServerConfigError, match="not a PEM public key"):
        JwtVerifier(JwtConfig(b"not a key", ISSUER))


def test_server_creates_account_for_jwt(tmp_path: Path) -> None:
    private_key, _ = KEYS["EdDSA"]
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(public_pem(private_key))
    process = start_server(tmp_path / "data", extra=[
        "--jwt-public-key", str(key_file), "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
    ])
    try:
        token = jwt.encode(claims(sub="user-42"), private_key, algorithm="EdDSA")
        client = process.client(token)
        account = client.get("/v1/account")
        assert account.status_code == 200
        assert account.json()["name"] == "user-42"
        assert client.post("/v1/repos/phone").status_code == 201

        expired = jwt.encode(claims(sub="user-42", exp=int(time.time()) - 3600), private_key,
                             algorithm="EdDSA")
        response = process.client(expired).get("/v1/repos")
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]

        listing = process.operator("list", "--json")
        assert "user-42" in [item["name"] for item in json.loads(listing.stdout)]
        assert token not in process.log()
    finally:
        process.stop()

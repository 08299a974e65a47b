"""Authentication: bearer tokens issued by the operator, or JSON Web Tokens of an identity provider.

An operator token is looked up by its SHA-256 hash. A JSON Web Token (three dot-separated
parts) is verified against the operator's public key, issuer and optional audience, and
its ``sub`` claim names the account. Such an account is created on first use with default
settings, so an app's backend can vouch for its users without an operator step. An
operator may create it beforehand to set a quota or make it append-only.

The accepted signature algorithm follows from the type of the public key (Ed25519 gives
EdDSA, an EC P-256 key gives ES256, RSA gives RS256), so a token can never choose ``none``
or an HMAC algorithm keyed with the public key.
"""

from __future__ import annotations

import logging
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from backvault.server.config import JwtConfig
from backvault.server.errors import ApiError, ServerConfigError
from backvault.server.metadata import Account, Metadata, hash_token

logger = logging.getLogger("backvault.server")

MAX_SUBJECT_LENGTH = 200  # characters; the length of the accounts.name column
JWT_LEEWAY = 30  # seconds of clock difference allowed on exp, nbf and iat
TOKEN_CACHE_SECONDS = 2.0  # how long a revoked token may keep working (TokenCache)
TOKEN_CACHE_ENTRIES = 10_000


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="backvault"'})


class JwtVerifier:
    """Verifies JSON Web Tokens of one identity provider."""

    def __init__(self, config: JwtConfig) -> None:
        try:
            self._key = load_pem_public_key(config.public_key_pem)
        except ValueError as error:
            raise ServerConfigError(
                f"the JWT public key is not a PEM public key: {error}"
            ) from error
        self._algorithm = _algorithm_for(self._key)
        self._config = config

    def subject(self, token: str) -> str:
        """Return the ``sub`` claim of a valid token; raise 401 for any invalid one."""
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[self._algorithm],
                issuer=self._config.issuer,
                audience=self._config.audience,
                leeway=JWT_LEEWAY,
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_aud": self._config.audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the JSON Web Token has expired; get a new one") from None
        except jwt.InvalidTokenError as error:
            raise _unauthorized(f"invalid JSON Web Token: {error}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
            raise _unauthorized(
                f"invalid JSON Web Token: 'sub' must be a string of 1 to {MAX_SUBJECT_LENGTH} "
                "characters"
            )
        return subject


def _algorithm_for(key: object) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    raise ServerConfigError(
        "unsupported JWT public key type",
        hint="Use an Ed25519, EC P-256 or RSA public key in PEM form.",
    )


class TokenCache:
    """Remembers, for TOKEN_CACHE_SECONDS, which account a valid server token belongs to.

    A client sends its token with every request; looking it up in the database each time
    was the largest single cost of a vault login. The price is that a token revoked, or
    an account disabled, by the operator's command keeps working for up to that long on
    a server process that had just seen it. Only valid tokens are remembered, keyed by
    their SHA-256 hash, so a wrong token is always checked against the database.
    """

    def __init__(self, seconds: float = TOKEN_CACHE_SECONDS) -> None:
        self._seconds = seconds
        self._entries: dict[str, tuple[Account, float]] = {}

    def get(self, token_hash: str) -> Account | None:
        entry = self._entries.get(token_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, token_hash: str, account: Account) -> None:
        if len(self._entries) >= TOKEN_CACHE_ENTRIES:
            self._entries.clear()  # simpler than LRU, and refilled within one period
        self._entries[token_hash] = (account, time.monotonic() + self._seconds)


class Authenticator:
    """Turns the ``Authorization`` header of a request into an account."""

    def __init__(self, metadata: Metadata, jwt_config: JwtConfig | None) -> None:
        self._metadata = metadata
        self._jwt = JwtVerifier(jwt_config) if jwt_config is not None else None
        self._tokens = TokenCache()

    def account(self, authorization: str | None) -> Account:
        token = _bearer_token(authorization)
        if token.count(".") == 2:
            account = self._account_for_jwt(token)
        else:
            account = self._account_for_server_token(token)
        if account.disabled:
            raise ApiError(403, f"account {account.name!r} is disabled; ask the server's operator")
        return account

    def _account_for_server_token(self, token: str) -> Account:
        token_hash = hash_token(token)
        account = self._tokens.get(token_hash)
        if account is not None:
            return account
        found = self._metadata.account_for_token_hash(token_hash)
        if found is None:
            raise _unauthorized(
                "invalid or revoked token; log in again or ask the server's operator for a "
                "new token"
            )
        self._tokens.put(token_hash, found)
        return found

    def _account_for_jwt(self, token: str) -> Account:
        if self._jwt is None:
            raise _unauthorized("this server does not accept JSON Web Tokens; use a server token")
        subject = self._jwt.subject(token)
        account = self._metadata.find_account(subject)
        if account is None:
            account = self._metadata.ensure_account(subject)
            logger.info("account created for a JSON Web Token", extra={"account_id": account.id})
        return account


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _unauthorized("missing token: send 'Authorization: Bearer TOKEN'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("invalid Authorization header: send 'Authorization: Bearer TOKEN'")
    return token

"""Conventions that the vault's client and server share, beside OPAQUE itself.

- The OPAQUE context string of every login, :data:`LOGIN_CONTEXT`.
- Record and login ids: 32 lowercase hex digits (16 random bytes).
- How the server releases a wrapped master key after a valid KE3: sealed with
  AES-256-GCM under ``HKDF-SHA256(session_key, info="backvault v1 vault release key")``,
  with the record id as associated data. TLS protects it on the way already. This second
  layer keeps it from anyone who reads the traffic where TLS ends before the server (a
  proxy, a load balancer), and binds the release to the login that made the session key.

Release layout::

    offset  size  field
    0       1     version: 1
    1       12    random GCM nonce
    13      n+16  AES-256-GCM ciphertext and tag
"""

from __future__ import annotations

import re
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backvault.crypto.keys import hkdf_sha256
from backvault.errors import IntegrityError

LOGIN_CONTEXT = b"backvault vault v1"
LABEL_RELEASE_KEY = b"backvault v1 vault release key"
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
RELEASE_VERSION = 1
NONCE_SIZE = 12  # bytes

# Upper bounds on what the server accepts, far above the real sizes, so that a client
# cannot make it store or decrypt large values.
MAX_WRAPPED_KEY_SIZE = 1024  # bytes
MAX_MESSAGE_SIZE = 4096  # bytes of one OPAQUE message


def new_id() -> str:
    return secrets.token_hex(16)


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def _release_cipher(session_key: bytes) -> AESGCM:
    return AESGCM(hkdf_sha256(session_key, salt=b"", info=LABEL_RELEASE_KEY))


def seal_release(session_key: bytes, wrapped_key: bytes, record_id: str) -> bytes:
    """Encrypt a wrapped master key for the client that finished the login."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    sealed = _release_cipher(session_key).encrypt(nonce, wrapped_key, record_id.encode())
    return bytes([RELEASE_VERSION]) + nonce + sealed


def open_release(session_key: bytes, release: bytes, record_id: str) -> bytes:
    """Decrypt what :func:`seal_release` made; raise IntegrityError if it fails."""
    if len(release) < 1 + NONCE_SIZE + 16 or release[0] != RELEASE_VERSION:
        raise IntegrityError(f"vault record {record_id}")
    nonce, ciphertext = release[1 : 1 + NONCE_SIZE], release[1 + NONCE_SIZE :]
    try:
        return _release_cipher(session_key).decrypt(nonce, ciphertext, record_id.encode())
    except InvalidTag:
        raise IntegrityError(f"vault record {record_id}") from None

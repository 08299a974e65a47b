"""The vault's two secret keys, and where they are kept.

- The OPRF seed (64 bytes). OPAQUE derives each record's OPRF key from it with
  HKDF-Expand-SHA512, and an expansion to 32 bytes is one HMAC-SHA512 with the seed as
  key, ``HMAC(seed, info || 0x01)``. A PKCS#11 token can therefore hold the seed as a
  generic secret and compute the expansion itself.
- The record-encryption key (AES-256). It seals the records at rest, the login states
  between KE2 and KE3, and the server's OPAQUE private key, with AES-256-GCM.

:class:`KeyFileStore` is the embedded default: both keys in one file with mode 0600,
used in software. :class:`backvault.vault.pkcs11_keystore.Pkcs11KeyStore` keeps them in a
PKCS#11 token as non-extractable objects. Sealed data has the same layout in both::

    offset  size  field
    0       1     version: 1
    1       12    random GCM nonce
    13      n+16  AES-256-GCM ciphertext and tag
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backvault.vault.errors import KeyStoreError, SealedDataError
from backvault.vault.settings import VaultSettings

OPRF_SEED_SIZE = 64  # bytes: Nh of SHA-512, the seed size that OPAQUE-3DH uses
RECORD_KEY_SIZE = 32  # bytes: AES-256
NONCE_SIZE = 12  # bytes
SEALED_VERSION = 1
SEALED_OVERHEAD = 1 + NONCE_SIZE + 16  # version, nonce and GCM tag

KEY_FILE_MAGIC = b"BVVK\x01\x00\x00\x00"  # "BVVK", version 1, 3 reserved bytes
KEY_FILE_SIZE = len(KEY_FILE_MAGIC) + OPRF_SEED_SIZE + RECORD_KEY_SIZE


class KeyStore(Protocol):
    """The operations the vault needs from its keys; the keys themselves stay inside."""

    description: str

    def oprf_seed_expand(self, info: bytes) -> bytes:
        """Return HKDF-Expand-SHA512(OPRF seed, info, 32)."""
        ...

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt under the record-encryption key with a random nonce."""
        ...

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        """Decrypt what :meth:`seal` made; raise SealedDataError if it fails."""
        ...

    def close(self) -> None: ...


def hkdf_expand_block(key: bytes, info: bytes) -> bytes:
    """Return the first 32 bytes of HKDF-Expand-SHA512(key, info): one HMAC block."""
    return hmac.new(key, info + b"\x01", hashlib.sha512).digest()[:32]


def split_sealed(sealed: bytes) -> tuple[bytes, bytes]:
    """Return ``(nonce, ciphertext)`` of sealed data; raise SealedDataError if malformed."""
    if len(sealed) < SEALED_OVERHEAD or sealed[0] != SEALED_VERSION:
        raise SealedDataError("sealed vault data is malformed or of an unknown version")
    return sealed[1 : 1 + NONCE_SIZE], sealed[1 + NONCE_SIZE :]


class KeyFileStore:
    """Both keys in a file that only the server's user may read, used in software."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"key file {path}"
        contents = _read_key_file(path)
        seed_end = len(KEY_FILE_MAGIC) + OPRF_SEED_SIZE
        self._seed = contents[len(KEY_FILE_MAGIC) : seed_end]
        self._aead = AESGCM(contents[seed_end:])

    @classmethod
    def open_or_create(cls, path: Path) -> KeyFileStore:
        """Open the key file, creating it with new random keys if it does not exist."""
        if not path.exists():
            _create_key_file(path)
        return cls(path)

    def oprf_seed_expand(self, info: bytes) -> bytes:
        return hkdf_expand_block(self._seed, info)

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_SIZE)
        return bytes([SEALED_VERSION]) + nonce + self._aead.encrypt(
            nonce, plaintext, associated_data
        )

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        nonce, ciphertext = split_sealed(sealed)
        try:
            return self._aead.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise SealedDataError("sealed vault data failed to authenticate") from None

    def close(self) -> None:
        pass


def _read_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyStoreError(f"the vault key file {path} does not exist") from None
    except OSError as error:
        raise KeyStoreError(f"cannot open the vault key file {path}: {error.strerror}") from error
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyStoreError(f"the vault key file {path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise KeyStoreError(
                f"the vault key file {path} belongs to user id {info.st_uid}, not to the "
                f"server's user id {os.geteuid()}; change its owner"
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise KeyStoreError(
                f"the vault key file {path} has mode {stat.S_IMODE(info.st_mode):04o}, so "
                f"other users may read it; run 'chmod 600 {path}' if nobody else did"
            )
        contents = os.read(fd, KEY_FILE_SIZE + 1)
    finally:
        os.close(fd)
    if len(contents) != KEY_FILE_SIZE or not contents.startswith(KEY_FILE_MAGIC):
        raise KeyStoreError(f"the vault key file {path} is damaged or not a vault key file")
    return contents


def _create_key_file(path: Path) -> None:
    """Write new keys to a private temporary file, then link it to ``path`` atomically.

    ``os.link`` fails if ``path`` exists, so when two server processes start at once,
    exactly one file wins and both use it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    contents = (
        KEY_FILE_MAGIC
        + secrets.token_bytes(OPRF_SEED_SIZE)
        + secrets.token_bytes(RECORD_KEY_SIZE)
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(contents)
            file.flush()
            os.fsync(file.fileno())
        # If another process created the file first, its keys are the ones to use.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def open_key_store(settings: VaultSettings, data_dir: Path) -> KeyStore:
    """Open the keys that ``settings`` name: a PKCS#11 token, or else the key file."""
    if settings.pkcs11 is not None:
        from backvault.vault.pkcs11_keystore import Pkcs11KeyStore

        # The lock keeps two server processes on this machine from both creating keys.
        return Pkcs11KeyStore.from_settings(
            settings.pkcs11, creation_lock=data_dir / "vault-pkcs11.lock"
        )
    return KeyFileStore.open_or_create(settings.key_file_path(data_dir))

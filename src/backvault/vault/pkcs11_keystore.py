"""The vault's keys as non-extractable objects in a PKCS#11 token (python-pkcs11).

The OPRF seed is a 512-bit generic secret that may only sign with CKM_SHA512_HMAC, so
the token computes ``HMAC(seed, info || 0x01)`` and the seed never leaves it. The
record-encryption key is a 256-bit AES key that may only encrypt and decrypt, used with
CKM_AES_GCM. Both are created inside the token on first start (sensitive, not
extractable, private, stored on the token) and found by their labels afterwards. An
existing object with one of the labels that is extractable or not sensitive is rejected,
because its value could be read out.

python-pkcs11 calls C_Initialize with no arguments. By PKCS#11 (v2.40, C_Initialize) the
application then promises not to call the module from several threads at once, so every
call here goes through one lock on one session.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin, SignMixin

from backvault.vault.errors import KeyStoreError, SealedDataError
from backvault.vault.keystore import NONCE_SIZE, SEALED_VERSION, split_sealed
from backvault.vault.settings import Pkcs11Settings

OPRF_SEED_LABEL = "backvault-vault-oprf-seed"
RECORD_KEY_LABEL = "backvault-vault-record-key"
OPRF_SEED_BITS = 512
RECORD_KEY_BITS = 256
GCM_TAG_BITS = 128

Result = TypeVar("Result")


class Pkcs11KeyStore:
    """The OPRF seed and the record-encryption key inside a PKCS#11 token."""

    def __init__(
        self, module: Path, token_label: str, pin: str, *, creation_lock: Path | None = None
    ) -> None:
        self.description = f"PKCS#11 token {token_label!r} through {module}"
        self._lock = threading.Lock()
        try:
            library = pkcs11.lib(str(module))
        except (OSError, PKCS11Error, RuntimeError) as error:
            raise KeyStoreError(
                f"cannot load the PKCS#11 module {module}: {error.__class__.__name__} {error}"
            ) from error
        try:
            token = library.get_token(token_label=token_label)
            try:
                self._session = token.open(rw=True, user_pin=pin)
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                # A login holds for every session of the process, and another key store
                # of this process still has one open.
                self._session = token.open(rw=True)
        except pkcs11.exceptions.NoSuchToken:
            raise KeyStoreError(
                f"the PKCS#11 module {module} has no token labelled {token_label!r}"
            ) from None
        except pkcs11.exceptions.PinIncorrect:
            raise KeyStoreError(
                f"the PIN for PKCS#11 token {token_label!r} is incorrect; check pkcs11_pin_file"
            ) from None
        except PKCS11Error as error:
            raise KeyStoreError(
                f"cannot log in to PKCS#11 token {token_label!r}: {error.__class__.__name__}"
            ) from error

        try:
            with _file_lock(creation_lock):
                seed = self._find_or_generate(
                    OPRF_SEED_LABEL, KeyType.GENERIC_SECRET, OPRF_SEED_BITS, MechanismFlag.SIGN
                )
                record_key = self._find_or_generate(
                    RECORD_KEY_LABEL, KeyType.AES, RECORD_KEY_BITS,
                    MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                )
            # python-pkcs11 gives a key the methods of the capabilities it has.
            if not isinstance(seed, SignMixin):
                raise KeyStoreError(f"the PKCS#11 key {OPRF_SEED_LABEL!r} cannot sign (HMAC)")
            if not isinstance(record_key, EncryptMixin) or not isinstance(
                record_key, DecryptMixin
            ):
                raise KeyStoreError(
                    f"the PKCS#11 key {RECORD_KEY_LABEL!r} cannot both encrypt and decrypt"
                )
            self._seed: SignMixin = seed
            self._encryptor: EncryptMixin = record_key
            self._decryptor: DecryptMixin = record_key
        except BaseException:
            self._session.close()
            raise

    @classmethod
    def from_settings(
        cls, settings: Pkcs11Settings, *, creation_lock: Path | None = None
    ) -> Pkcs11KeyStore:
        try:
            pin = settings.pin_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise KeyStoreError(
                f"cannot read the PKCS#11 PIN file {settings.pin_file}: {error.strerror}"
            ) from error
        return cls(settings.module, settings.token_label, pin, creation_lock=creation_lock)

    def _find_or_generate(
        self, label: str, key_type: KeyType, bits: int, capabilities: MechanismFlag
    ) -> pkcs11.Key:
        try:
            key = self._session.get_key(ObjectClass.SECRET_KEY, key_type, label=label)
        except pkcs11.exceptions.NoSuchKey:
            key = self._session.generate_key(
                key_type, bits, label=label, id=secrets.token_bytes(8), store=True,
                capabilities=capabilities,
                template={
                    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                },
            )
        except pkcs11.exceptions.MultipleObjectsReturned:
            raise KeyStoreError(
                f"the PKCS#11 token has several secret keys labelled {label!r}; keep one"
            ) from None
        if not key[Attribute.SENSITIVE] or key[Attribute.EXTRACTABLE]:
            raise KeyStoreError(
                f"the PKCS#11 key {label!r} is extractable or not sensitive, so its value "
                "could leave the token; replace it with a sensitive, non-extractable key"
            )
        return key

    def _call(self, operation: Callable[[], Result], action: str) -> Result:
        with self._lock:
            try:
                return operation()
            except PKCS11Error as error:
                raise KeyStoreError(
                    f"the PKCS#11 token failed to {action}: {error.__class__.__name__}"
                ) from error

    def oprf_seed_expand(self, info: bytes) -> bytes:
        message = info + b"\x01"
        digest = self._call(
            lambda: self._seed.sign(message, mechanism=Mechanism.SHA512_HMAC),
            "compute an HMAC with the OPRF seed",
        )
        return bytes(digest[:32])

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_SIZE)
        parameters = GCMParams(nonce, associated_data, GCM_TAG_BITS)
        ciphertext = self._call(
            lambda: self._encryptor.encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=parameters
            ),
            "encrypt with the record-encryption key",
        )
        return bytes([SEALED_VERSION]) + nonce + _as_bytes(ciphertext)

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        nonce, ciphertext = split_sealed(sealed)
        parameters = GCMParams(nonce, associated_data, GCM_TAG_BITS)
        with self._lock:
            try:
                return _as_bytes(self._decryptor.decrypt(
                    ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=parameters
                ))
            except PKCS11Error as error:
                # A failed tag check is CKR_ENCRYPTED_DATA_INVALID in PKCS#11 3.0, but
                # SoftHSM 2.6 returns CKR_GENERAL_ERROR, so every failure counts as one.
                raise SealedDataError(
                    f"sealed vault data failed to decrypt in the PKCS#11 token: "
                    f"{error.__class__.__name__}"
                ) from error

    def close(self) -> None:
        with self._lock:
            self._session.close()


def _as_bytes(result: bytes | Iterator[bytes]) -> bytes:
    # encrypt() and decrypt() return an iterator only when given one.
    return result if isinstance(result, bytes) else b"".join(result)


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, so that only one process creates missing keys."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

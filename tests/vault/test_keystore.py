"""The vault's key stores: the key file and a SoftHSM2 token through PKCS#11."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

from backvault.opaque import software_expand
from backvault.vault.errors import KeyStoreError, SealedDataError
from backvault.vault.keystore import (
    KEY_FILE_MAGIC,
    KEY_FILE_SIZE,
    OPRF_SEED_SIZE,
    KeyFileStore,
    KeyStore,
)
from backvault.vault.pkcs11_keystore import (
    OPRF_SEED_LABEL,
    RECORD_KEY_LABEL,
    Pkcs11KeyStore,
)
from backvault.vault.settings import Pkcs11Settings
from tests.vault.conftest import InProcessTokens
from tests.vault.softhsm import SoftHsmToken

INFO = b"credential identifier" + b"OprfKey"
ASSOCIATED_DATA = b"record 1"


def check_seal_and_open(store: KeyStore) -> None:
    sealed = store.seal(b"registration record", ASSOCIATED_DATA)
    assert b"registration record" not in sealed
    assert store.open(sealed, ASSOCIATED_DATA) == b"registration record"
    # Random nonces: sealing the same bytes twice gives different results.
    assert store.seal(b"registration record", ASSOCIATED_DATA) != sealed

    with pytest.raises(SealedDataError):
        store.open(sealed, b"record 2")
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(SealedDataError):
        store.open(bytes(flipped), ASSOCIATED_DATA)
    with pytest.raises(SealedDataError):
        store.open(sealed[:10], ASSOCIATED_DATA)


# Key file -----------------------------------------------------------------------------


def test_key_file_created_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "vault-keys"
    store = KeyFileStore.open_or_create(path)

    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == KEY_FILE_SIZE
    assert path.read_bytes().startswith(KEY_FILE_MAGIC)
    assert [entry.name for entry in path.parent.iterdir()] == ["vault-keys"]
    assert len(store.oprf_seed_expand(INFO)) == 32


def test_key_file_expand_is_hkdf_expand(tmp_path: Path) -> None:
    path = tmp_path / "vault-keys"
    store = KeyFileStore.open_or_create(path)
    seed = path.read_bytes()[len(KEY_FILE_MAGIC) : len(KEY_FILE_MAGIC) + OPRF_SEED_SIZE]

    expected = hmac.new(seed, INFO + b"\x01", hashlib.sha512).digest()[:32]
    assert store.oprf_seed_expand(INFO) == expected
    assert store.oprf_seed_expand(INFO) == software_expand(seed)(INFO)


def test_key_file_keys_persist(tmp_path: Path) -> None:
    path = tmp_path / "vault-keys"
    first = KeyFileStore.open_or_create(path)
    sealed = first.seal(b"secret", ASSOCIATED_DATA)

    second = KeyFileStore.open_or_create(path)
    assert second.oprf_seed_expand(INFO) == first.oprf_seed_expand(INFO)
    assert second.open(sealed, ASSOCIATED_DATA) == b"secret"


def test_key_file_seal_and_open(tmp_path: Path) -> None:
    check_seal_and_open(KeyFileStore.open_or_create(tmp_path / "vault-keys"))


def test_key_file_concurrent_creation(tmp_path: Path) -> None:
    path = tmp_path / "vault-keys"
    stores: list[KeyFileStore] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        stores.append(KeyFileStore.open_or_create(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(stores) == 8
    assert len({store.oprf_seed_expand(INFO) for store in stores}) == 1
    assert [entry.name for entry in tmp_path.iterdir()] == ["vault-keys"]


def test_key_file_readable_by_others_rejected(tmp_path: Path) -> None:
    path = tmp_path / "vault-keys"
    KeyFileStore.open_or_create(path)
    path.chmod(0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        KeyFileStore(path)


def test_key_file_of_other_user_rejected(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    path = tmp_path / "vault-keys"
    KeyFileStore.open_or_create(path)
    os.chown(path, 65534, 65534)
    with pytest.raises(KeyStoreError, match="belongs to user id 65534"):
        KeyFileStore(path)


def test_key_file_damaged_rejected(tmp_path: Path) -> None:
    path = tmp_path / "vault-keys"
    KeyFileStore.open_or_create(path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(KeyStoreError, match="damaged"):
        KeyFileStore(path)


def test_key_file_symlink_rejected(tmp_path: Path) -> None:
    target = tmp_path / "real-keys"
    KeyFileStore.open_or_create(target)
    link = tmp_path / "vault-keys"
    link.symlink_to(target)
    with pytest.raises(KeyStoreError):
        KeyFileStore(link)


# SoftHSM2 -----------------------------------------------------------------------------


def open_token_store(token: SoftHsmToken, tmp_path: Path) -> Pkcs11KeyStore:
    settings = Pkcs11Settings(token.module, token.label, token.pin_file)
    return Pkcs11KeyStore.from_settings(settings, creation_lock=tmp_path / "lock")


def token_session(token: SoftHsmToken) -> pkcs11.Session:
    """Open a session of this process on ``token`` to inspect its objects."""
    opened = pkcs11.lib(str(token.module)).get_token(token_label=token.label)
    try:
        return opened.open(rw=True, user_pin=token.pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        return opened.open(rw=True)


def test_token_keys_created_non_extractable(
    in_process_tokens: InProcessTokens, tmp_path: Path
) -> None:
    token = in_process_tokens.fresh
    store = open_token_store(token, tmp_path)
    try:
        assert len(store.oprf_seed_expand(INFO)) == 32
        session = token_session(token)
        try:
            for label, key_type in ((OPRF_SEED_LABEL, KeyType.GENERIC_SECRET),
                                    (RECORD_KEY_LABEL, KeyType.AES)):
                key = session.get_key(ObjectClass.SECRET_KEY, key_type, label=label)
                assert key[Attribute.SENSITIVE] is True
                assert key[Attribute.EXTRACTABLE] is False
                assert key[Attribute.TOKEN] is True
                with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                    key[Attribute.VALUE]
        finally:
            session.close()
    finally:
        store.close()


def test_token_keys_persist(in_process_tokens: InProcessTokens, tmp_path: Path) -> None:
    token = in_process_tokens.reopened
    first = open_token_store(token, tmp_path)
    expanded = first.oprf_seed_expand(INFO)
    sealed = first.seal(b"secret", ASSOCIATED_DATA)
    check_seal_and_open(first)
    first.close()

    second = open_token_store(token, tmp_path)
    try:
        assert second.oprf_seed_expand(INFO) == expanded
        assert second.oprf_seed_expand(b"other info") != expanded
        assert second.open(sealed, ASSOCIATED_DATA) == b"secret"
    finally:
        second.close()


def test_token_and_key_file_differ(
    in_process_tokens: InProcessTokens, tmp_path: Path
) -> None:
    key_file = KeyFileStore.open_or_create(tmp_path / "vault-keys")
    store = open_token_store(in_process_tokens.reopened, tmp_path)
    try:
        with pytest.raises(SealedDataError):
            store.open(key_file.seal(b"secret", ASSOCIATED_DATA), ASSOCIATED_DATA)
    finally:
        store.close()


def test_token_concurrent_use(in_process_tokens: InProcessTokens, tmp_path: Path) -> None:
    store = open_token_store(in_process_tokens.reopened, tmp_path)
    expected = store.oprf_seed_expand(INFO)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                assert store.oprf_seed_expand(INFO) == expected
                assert store.open(store.seal(b"x", ASSOCIATED_DATA), ASSOCIATED_DATA) == b"x"
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert failures == []


def test_token_extractable_key_rejected(
    in_process_tokens: InProcessTokens, tmp_path: Path
) -> None:
    token = in_process_tokens.extractable
    session = token_session(token)
    try:
        session.generate_key(
            KeyType.GENERIC_SECRET, 512, label=OPRF_SEED_LABEL, store=True,
            capabilities=MechanismFlag.SIGN,
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    finally:
        session.close()
    with pytest.raises(KeyStoreError, match="extractable"):
        open_token_store(token, tmp_path)


def test_token_wrong_pin_rejected(
    in_process_tokens: InProcessTokens, tmp_path: Path
) -> None:
    token = in_process_tokens.extractable
    pin_file = tmp_path / "wrong.pin"
    pin_file.write_text("0000-wrong\n")
    settings = Pkcs11Settings(token.module, token.label, pin_file)
    with pytest.raises(KeyStoreError, match="PIN"):
        Pkcs11KeyStore.from_settings(settings)


def test_token_missing_rejected(in_process_tokens: InProcessTokens, tmp_path: Path) -> None:
    token = in_process_tokens.fresh
    settings = Pkcs11Settings(token.module, "no-such-token", token.pin_file)
    with pytest.raises(KeyStoreError, match="no token labelled 'no-such-token'"):
        Pkcs11KeyStore.from_settings(settings)


def test_token_module_missing_rejected(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("1234")
    settings = Pkcs11Settings(tmp_path / "missing.so", "token", pin_file)
    with pytest.raises(KeyStoreError, match="cannot load the PKCS#11 module"):
        Pkcs11KeyStore.from_settings(settings)

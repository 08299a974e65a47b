"""The vault API of a running server, on SQLite, PostgreSQL and a SoftHSM2 token.

Every test talks HTTP to a real ``backvault server`` process through the same client the
command line uses, or sends raw requests where it checks statuses and sizes.
"""

from __future__ import annotations

import base64
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from backvault.crypto.keys import MasterKey
from backvault.crypto.password_slot import (
    create_password_slot,
    open_password_slot,
    password_slot_info,
)
from backvault.crypto.slots import KeySlot
from backvault.errors import WrongPasswordError
from backvault.opaque import IdentityKsf, OpaqueError, client_login_finish, client_login_start
from backvault.opaque.messages import KE2_BYTES
from backvault.vault.client import HttpVaultClient
from backvault.vault.protocol import LOGIN_CONTEXT, new_id
from tests.server.conftest import ServerProcess
from tests.vault.conftest import start_vault_server

REPOSITORY_ID = bytes(range(16))
PASSWORD = b"correct horse battery staple"
WRONG_PASSWORD = b"wrong horse battery staple"
PARALLEL_GUESSES = 50
GUESS_LIMIT = 10


def register(
    server: ServerProcess, token: str, master_key: MasterKey, guess_limit: int | None = None
) -> KeySlot:
    with HttpVaultClient(server.url, token) as client:
        return create_password_slot(
            PASSWORD, master_key, REPOSITORY_ID, vault_url=server.url, transport=client,
            ksf=IdentityKsf(), guess_limit=guess_limit,
        )


def login(server: ServerProcess, token: str, slot: KeySlot, password: bytes) -> MasterKey:
    with HttpVaultClient(server.url, token) as client:
        return open_password_slot(slot, password, REPOSITORY_ID, client)


def list_records(server: ServerProcess, token: str) -> dict[str, dict[str, object]]:
    response = server.client(token).get("/v1/vault/records")
    assert response.status_code == 200, response.text
    return {entry["record_id"]: entry for entry in response.json()["records"]}


def start_login(client: httpx.Client, record_id: str, password: bytes) -> httpx.Response:
    _, ke1 = client_login_start(password)
    return client.post(
        f"/v1/vault/records/{record_id}/logins", json={"ke1": base64.b64encode(ke1).decode()}
    )


def test_password_login_over_http(any_vault_server: ServerProcess) -> None:
    _, token = any_vault_server.create_account()
    master_key = MasterKey.generate()
    slot = register(any_vault_server, token, master_key)

    assert login(any_vault_server, token, slot, PASSWORD).raw == master_key.raw
    record = list_records(any_vault_server, token)[password_slot_info(slot).record_id]
    assert record["state"] == "active"
    assert record["guess_limit"] == GUESS_LIMIT
    assert record["guesses_used"] == 0


def test_wrong_password_then_right(any_vault_server: ServerProcess) -> None:
    _, token = any_vault_server.create_account()
    master_key = MasterKey.generate()
    slot = register(any_vault_server, token, master_key)
    record_id = password_slot_info(slot).record_id

    for expected_left in (9, 8):
        with pytest.raises(WrongPasswordError) as caught:
            login(any_vault_server, token, slot, WRONG_PASSWORD)
        assert caught.value.guesses_left == expected_left
    assert list_records(any_vault_server, token)[record_id]["guesses_used"] == 2

    assert login(any_vault_server, token, slot, PASSWORD).raw == master_key.raw
    assert list_records(any_vault_server, token)[record_id]["guesses_used"] == 0


def test_limit_reached_destroys_record(vault_server: ServerProcess) -> None:
    _, token = vault_server.create_account()
    slot = register(vault_server, token, MasterKey.generate(), guess_limit=2)
    record_id = password_slot_info(slot).record_id

    for expected_left in (1, 0):
        with pytest.raises(WrongPasswordError) as caught:
            login(vault_server, token, slot, WRONG_PASSWORD)
        assert caught.value.guesses_left == expected_left
    record = list_records(vault_server, token)[record_id]
    assert record["state"] == "destroyed"
    assert record["guesses_left"] == 0

    response = start_login(vault_server.client(token), record_id, PASSWORD)
    assert response.status_code == 410
    assert "recovery key" in response.json()["detail"]
    with pytest.raises(WrongPasswordError, match="destroyed") as caught:
        login(vault_server, token, slot, PASSWORD)
    assert caught.value.guesses_left == 0


def test_parallel_wrong_guesses_hold_limit(any_vault_server: ServerProcess) -> None:
    """50 wrong guesses at once against a limit of 10: at most 10 get a KE2."""
    _, token = any_vault_server.create_account()
    slot = register(any_vault_server, token, MasterKey.generate())
    record_id = password_slot_info(slot).record_id
    statuses: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(PARALLEL_GUESSES)

    def guess(client: httpx.Client) -> None:
        try:
            state, ke1 = client_login_start(WRONG_PASSWORD)
            barrier.wait()
            response = client.post(
                f"/v1/vault/records/{record_id}/logins",
                json={"ke1": base64.b64encode(ke1).decode()},
            )
            statuses.append(response.status_code)
            if response.status_code != 200:
                return
            body = response.json()
            with pytest.raises(OpaqueError):
                client_login_finish(
                    state, base64.b64decode(body["ke2"]), ksf=IdentityKsf(),
                    context=LOGIN_CONTEXT,
                )
            aborted = client.delete(f"/v1/vault/logins/{body['login_id']}")
            assert aborted.status_code == 200, aborted.text
        except BaseException as error:
            errors.append(error)

    with any_vault_server.client(token) as client:
        threads = [threading.Thread(target=guess, args=(client,)) for _ in range(PARALLEL_GUESSES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    counts = Counter(statuses)
    assert 1 <= counts[200] <= GUESS_LIMIT, counts
    assert set(counts) <= {200, 409, 410}, counts
    assert sum(counts.values()) == PARALLEL_GUESSES
    record = list_records(any_vault_server, token)[record_id]
    assert record["guesses_used"] == counts[200]
    if counts[200] == GUESS_LIMIT:
        assert record["state"] == "destroyed"
    assert any_vault_server.is_running()


def test_other_account_cannot_use_records(vault_server: ServerProcess) -> None:
    _, owner_token = vault_server.create_account()
    _, stranger_token = vault_server.create_account()
    master_key = MasterKey.generate()
    slot = register(vault_server, owner_token, master_key)
    record_id = password_slot_info(slot).record_id
    stranger = vault_server.client(stranger_token)

    assert stranger.get("/v1/vault/records").json() == {"records": []}
    assert stranger.delete(f"/v1/vault/records/{record_id}").status_code == 404

    # The stranger's login reaches only a record id of its own account: a fake KE2.
    response = start_login(stranger, record_id, PASSWORD)
    assert response.status_code == 200
    with pytest.raises(WrongPasswordError):
        login(vault_server, stranger_token, slot, PASSWORD)

    # A login id of the owner is unknown to the stranger, so KE3 cannot be sent for it.
    owner = vault_server.client(owner_token)
    owner_login = start_login(owner, record_id, PASSWORD).json()["login_id"]
    finish = stranger.post(f"/v1/vault/logins/{owner_login}", json={"ke3": "AAAA"})
    assert finish.status_code == 404
    assert stranger.delete(f"/v1/vault/logins/{owner_login}").status_code == 404
    assert owner.delete(f"/v1/vault/logins/{owner_login}").status_code == 200

    record = list_records(vault_server, owner_token)[record_id]
    assert record["guesses_used"] == 1  # the owner's own aborted login, nothing else
    assert login(vault_server, owner_token, slot, PASSWORD).raw == master_key.raw


def test_unknown_record_gets_fake_ke2(vault_server: ServerProcess) -> None:
    _, token = vault_server.create_account()
    slot = register(vault_server, token, MasterKey.generate())
    client = vault_server.client(token)

    real = start_login(client, password_slot_info(slot).record_id, PASSWORD)
    fake = start_login(client, new_id(), PASSWORD)
    assert real.status_code == 200
    assert fake.status_code == 200
    assert set(fake.json()) == set(real.json())
    assert len(base64.b64decode(fake.json()["ke2"])) == KE2_BYTES
    assert len(base64.b64decode(real.json()["ke2"])) == KE2_BYTES
    assert len(fake.content) == len(real.content)


def test_requests_need_a_token(vault_server: ServerProcess) -> None:
    anonymous = vault_server.client(None)
    assert anonymous.get("/v1/vault/records").status_code == 401
    assert anonymous.post("/v1/vault/registrations", json={"request": "AAAA"}).status_code == 401
    wrong = vault_server.client("bv_wrong")
    assert start_login(wrong, new_id(), PASSWORD).status_code == 401


def test_invalid_requests_rejected(vault_server: ServerProcess) -> None:
    _, token = vault_server.create_account()
    client = vault_server.client(token)
    assert client.post(
        "/v1/vault/registrations", json={"request": "not base64!"}
    ).status_code == 400
    assert client.post("/v1/vault/registrations", json={"request": "AAAA"}).status_code == 400
    assert start_login(client, "not-an-id", PASSWORD).status_code == 400
    oversized = client.post(
        f"/v1/vault/records/{new_id()}/logins", json={"ke1": "A" * 100_000}
    )
    assert oversized.status_code == 422
    assert client.post(f"/v1/vault/logins/{new_id()}", json={"ke3": "AAAA"}).status_code == 404
    assert vault_server.is_running()


def test_delete_record(vault_server: ServerProcess) -> None:
    _, token = vault_server.create_account()
    slot = register(vault_server, token, MasterKey.generate())
    record_id = password_slot_info(slot).record_id
    with HttpVaultClient(vault_server.url, token) as client:
        assert client.delete_record(record_id) is True
        assert client.delete_record(record_id) is False
    assert list_records(vault_server, token) == {}
    with pytest.raises(WrongPasswordError):
        login(vault_server, token, slot, PASSWORD)


def test_server_log_has_no_secrets(vault_server: ServerProcess) -> None:
    _, token = vault_server.create_account()
    slot = register(vault_server, token, MasterKey.generate())
    login(vault_server, token, slot, PASSWORD)
    with pytest.raises(WrongPasswordError):
        login(vault_server, token, slot, WRONG_PASSWORD)

    log = vault_server.log()
    assert "vault login succeeded" in log
    assert "vault login failed" in log
    assert token not in log
    assert PASSWORD.decode() not in log
    assert WRONG_PASSWORD.decode() not in log


def test_rate_limits(tmp_path: Path) -> None:
    server = start_vault_server(tmp_path, {"account_rate_limit": 3, "address_rate_limit": 5})
    try:
        _, first_token = server.create_account()
        _, second_token = server.create_account()
        first = server.client(first_token)
        statuses = [first.get("/v1/vault/records").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = first.get("/v1/vault/records")
        assert int(limited.headers["Retry-After"]) >= 1
        assert "account" in limited.json()["detail"]

        # Another account from the same address has its own account limit but shares
        # the address limit, of which 5 requests are spent by now.
        second = server.client(second_token)
        response = second.get("/v1/vault/records")
        assert response.status_code == 429
        assert "address" in response.json()["detail"]

        log = server.log()
        assert "vault rate limit reached" in log
        assert first_token not in log
        assert second_token not in log
    finally:
        server.stop()


def test_hsm_server_login_survives_restart(hsm_vault_server: ServerProcess) -> None:
    _, token = hsm_vault_server.create_account()
    master_key = MasterKey.generate()
    slot = register(hsm_vault_server, token, master_key)
    assert login(hsm_vault_server, token, slot, PASSWORD).raw == master_key.raw
    assert "PKCS#11 token" in hsm_vault_server.log()

    hsm_vault_server.stop()
    hsm_vault_server.start()
    assert login(hsm_vault_server, token, slot, PASSWORD).raw == master_key.raw
    with pytest.raises(WrongPasswordError) as caught:
        login(hsm_vault_server, token, slot, WRONG_PASSWORD)
    assert caught.value.guesses_left == GUESS_LIMIT - 1

"""Round trips, tampered messages and invalid inputs for the OPAQUE client and server."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import pytest

from backvault.errors import BackvaultError, IntegrityError
from backvault.opaque import (
    Argon2idKsf,
    ClientLoginState,
    IdentityKsf,
    Ksf,
    OpaqueError,
    ServerKeys,
    ServerLoginState,
    client_login_finish,
    client_login_start,
    client_registration_finish,
    client_registration_start,
    generate_fake_client_public_key,
    generate_server_keys,
    ksf_from_parameters,
    oprf,
    ristretto255,
    server_login_finish,
    server_login_start,
    server_registration_finish,
    server_registration_response,
    software_expand,
)
from backvault.opaque.messages import (
    KE1_BYTES,
    KE2_BYTES,
    KE3_BYTES,
    REGISTRATION_RECORD_BYTES,
    REGISTRATION_REQUEST_BYTES,
    REGISTRATION_RESPONSE_BYTES,
)

PASSWORD = b"correct horse battery staple"
WRONG_PASSWORD = b"correct horse battery stapler"
CREDENTIAL_ID = b"account-7/slot-1"
CONTEXT = b"backvault test context"
FAST_ARGON2 = Argon2idKsf(memory_kib=1024, iterations=1)

IDENTITY_ELEMENT = bytes(32)
# Encodings that RFC 9496 (section 4.3.1) Decode must reject, one of each kind.
INVALID_ELEMENTS = {
    "identity": IDENTITY_ELEMENT,
    "field-prime": bytes.fromhex("ed" + "ff" * 30 + "7f"),  # s = p, not below p
    "field-all-ones": bytes.fromhex("ff" * 31 + "7f"),  # s = 2**255 - 1
    "high-bit-set": bytes(31) + b"\x80",  # libsodium 1.0.18 alone accepts this one
    "negative-s": (1).to_bytes(32, "little"),  # odd s is negative
    "not-a-square": (2).to_bytes(32, "little"),  # canonical, but no element has it
}

# Byte offsets inside KE2: evaluated element, masking nonce, masked response, server
# nonce, server public keyshare and server MAC.
KE2_FIELD_OFFSETS = {
    "evaluated_message": 0,
    "masking_nonce": 32,
    "masked_server_public_key": 64,
    "masked_envelope": 96,
    "server_nonce": 192,
    "server_public_keyshare": 224,
    "server_mac": 256,
    "server_mac_last_byte": KE2_BYTES - 1,
}


@dataclass
class Registered:
    keys: ServerKeys
    record: bytes
    export_key: bytes


def flip(data: bytes, offset: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 0x01
    return bytes(changed)


def register(
    keys: ServerKeys,
    password: bytes = PASSWORD,
    *,
    ksf: Ksf | None = None,
    server_identity: bytes | None = None,
    client_identity: bytes | None = None,
) -> Registered:
    state, request = client_registration_start(password)
    response = server_registration_response(keys, request, CREDENTIAL_ID)
    record, export_key = client_registration_finish(
        state,
        response,
        ksf=ksf or IdentityKsf(),
        server_identity=server_identity,
        client_identity=client_identity,
    )
    return Registered(keys, server_registration_finish(record), export_key)


def start_login(
    registered: Registered, password: bytes = PASSWORD
) -> tuple[ClientLoginState, ServerLoginState, bytes]:
    client_state, ke1 = client_login_start(password)
    server_state, ke2 = server_login_start(
        registered.keys, registered.record, ke1, CREDENTIAL_ID, context=CONTEXT
    )
    return client_state, server_state, ke2


@pytest.fixture(scope="module")
def keys() -> ServerKeys:
    return generate_server_keys()[1]


@pytest.fixture(scope="module")
def registered(keys: ServerKeys) -> Registered:
    return register(keys)


# Round trips


def test_login_round_trip(registered: Registered) -> None:
    client_state, server_state, ke2 = start_login(registered)

    ke3, client_session_key, export_key = client_login_finish(
        client_state, ke2, ksf=IdentityKsf(), context=CONTEXT
    )
    server_session_key = server_login_finish(server_state, ke3)

    assert len(ke2) == KE2_BYTES
    assert len(ke3) == KE3_BYTES
    assert client_session_key == server_session_key
    assert len(client_session_key) == 64
    assert export_key == registered.export_key
    assert len(export_key) == 64


def test_login_round_trip_argon2id(keys: ServerKeys) -> None:
    registered = register(keys, ksf=FAST_ARGON2)
    client_state, server_state, ke2 = start_login(registered)

    ke3, session_key, export_key = client_login_finish(
        client_state, ke2, ksf=FAST_ARGON2, context=CONTEXT
    )

    assert server_login_finish(server_state, ke3) == session_key
    assert export_key == registered.export_key


def test_login_argon2id_parameters_must_match(keys: ServerKeys) -> None:
    registered = register(keys, ksf=FAST_ARGON2)
    client_state, _, ke2 = start_login(registered)

    with pytest.raises(OpaqueError):
        client_login_finish(
            client_state, ke2, ksf=Argon2idKsf(memory_kib=1024, iterations=2), context=CONTEXT
        )


def test_login_round_trip_with_identities(keys: ServerKeys) -> None:
    registered = register(keys, server_identity=b"vault.example", client_identity=b"alice")
    client_state, ke1 = client_login_start(PASSWORD)
    server_state, ke2 = server_login_start(
        keys,
        registered.record,
        ke1,
        CREDENTIAL_ID,
        context=CONTEXT,
        server_identity=b"vault.example",
        client_identity=b"alice",
    )

    ke3, session_key, export_key = client_login_finish(
        client_state,
        ke2,
        ksf=IdentityKsf(),
        context=CONTEXT,
        server_identity=b"vault.example",
        client_identity=b"alice",
    )

    assert server_login_finish(server_state, ke3) == session_key
    assert export_key == registered.export_key


def test_registrations_give_distinct_export_keys(keys: ServerKeys) -> None:
    first = register(keys)
    second = register(keys)

    assert first.export_key != second.export_key
    assert first.record != second.record


def test_server_login_state_bytes_round_trip(registered: Registered) -> None:
    client_state, server_state, ke2 = start_login(registered)
    restored = ServerLoginState.from_bytes(server_state.to_bytes())

    ke3, session_key, _ = client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)

    assert server_login_finish(restored, ke3) == session_key


@pytest.mark.parametrize("length", [0, 128, 130])
def test_server_login_state_bytes_invalid(length: int) -> None:
    with pytest.raises(OpaqueError):
        ServerLoginState.from_bytes(bytes(length))


def test_server_login_state_bytes_invalid_flag() -> None:
    with pytest.raises(OpaqueError):
        ServerLoginState.from_bytes(bytes(128) + b"\x02")


# Failures that a wrong password or a changed message cause


def test_wrong_password_fails(registered: Registered) -> None:
    client_state, _, ke2 = start_login(registered, WRONG_PASSWORD)

    with pytest.raises(OpaqueError):
        client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)


@pytest.mark.parametrize("offset", KE2_FIELD_OFFSETS.values(), ids=KE2_FIELD_OFFSETS.keys())
def test_ke2_flipped_byte_fails(registered: Registered, offset: int) -> None:
    client_state, _, ke2 = start_login(registered)
    result = None

    with pytest.raises(OpaqueError):
        result = client_login_finish(
            client_state, flip(ke2, offset), ksf=IdentityKsf(), context=CONTEXT
        )
    assert result is None


def test_ke3_flipped_byte_fails(registered: Registered) -> None:
    client_state, server_state, ke2 = start_login(registered)
    ke3, _, _ = client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)

    for offset in (0, KE3_BYTES // 2, KE3_BYTES - 1):
        with pytest.raises(OpaqueError):
            server_login_finish(server_state, flip(ke3, offset))


def test_ke3_from_another_login_fails(registered: Registered) -> None:
    first_client, _, first_ke2 = start_login(registered)
    _, second_server, _ = start_login(registered)
    first_ke3, _, _ = client_login_finish(
        first_client, first_ke2, ksf=IdentityKsf(), context=CONTEXT
    )

    with pytest.raises(OpaqueError):
        server_login_finish(second_server, first_ke3)


def test_wrong_context_fails(registered: Registered) -> None:
    client_state, _, ke2 = start_login(registered)

    with pytest.raises(OpaqueError):
        client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=b"another context")


def test_wrong_client_identity_fails(keys: ServerKeys) -> None:
    registered = register(keys, client_identity=b"alice")
    client_state, ke1 = client_login_start(PASSWORD)
    _, ke2 = server_login_start(
        keys, registered.record, ke1, CREDENTIAL_ID, context=CONTEXT, client_identity=b"alice"
    )

    with pytest.raises(OpaqueError):
        client_login_finish(
            client_state, ke2, ksf=IdentityKsf(), context=CONTEXT, client_identity=b"mallory"
        )


def test_wrong_credential_identifier_fails(registered: Registered) -> None:
    client_state, ke1 = client_login_start(PASSWORD)
    _, ke2 = server_login_start(
        registered.keys, registered.record, ke1, b"another credential", context=CONTEXT
    )

    with pytest.raises(OpaqueError):
        client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)


def test_other_server_keys_fail(registered: Registered) -> None:
    other_keys = generate_server_keys()[1]
    client_state, ke1 = client_login_start(PASSWORD)
    _, ke2 = server_login_start(other_keys, registered.record, ke1, CREDENTIAL_ID, context=CONTEXT)

    with pytest.raises(OpaqueError):
        client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)


def test_changed_record_fails(registered: Registered) -> None:
    for offset in (0, 32, 96, 128, REGISTRATION_RECORD_BYTES - 1):
        client_state, ke1 = client_login_start(PASSWORD)
        changed_record = flip(registered.record, offset)
        try:
            _, ke2 = server_login_start(
                registered.keys, changed_record, ke1, CREDENTIAL_ID, context=CONTEXT
            )
        except OpaqueError:
            continue  # the changed public key is no longer a valid element
        with pytest.raises(OpaqueError):
            client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)


# Truncated and extended messages


@pytest.mark.parametrize("delta", [-1, 1], ids=["truncated", "extended"])
def test_wrong_length_messages_fail(registered: Registered, delta: int) -> None:
    keys = registered.keys
    registration_state, request = client_registration_start(PASSWORD)
    response = server_registration_response(keys, request, CREDENTIAL_ID)
    client_state, server_state, ke2 = start_login(registered)
    ke1 = client_login_start(PASSWORD)[1]
    ke3, _, _ = client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)

    def resize(data: bytes) -> bytes:
        return data[:delta] if delta < 0 else data + b"\x00" * delta

    with pytest.raises(OpaqueError):
        server_registration_response(keys, resize(request), CREDENTIAL_ID)
    with pytest.raises(OpaqueError):
        client_registration_finish(registration_state, resize(response), ksf=IdentityKsf())
    with pytest.raises(OpaqueError):
        server_registration_finish(resize(registered.record))
    with pytest.raises(OpaqueError):
        server_login_start(keys, registered.record, resize(ke1), CREDENTIAL_ID, context=CONTEXT)
    with pytest.raises(OpaqueError):
        server_login_start(keys, resize(registered.record), ke1, CREDENTIAL_ID, context=CONTEXT)
    with pytest.raises(OpaqueError):
        client_login_finish(client_state, resize(ke2), ksf=IdentityKsf(), context=CONTEXT)
    with pytest.raises(OpaqueError):
        server_login_finish(server_state, resize(ke3))


def test_empty_messages_fail(registered: Registered) -> None:
    client_state, server_state, _ = start_login(registered)

    with pytest.raises(OpaqueError):
        server_registration_response(registered.keys, b"", CREDENTIAL_ID)
    with pytest.raises(OpaqueError):
        server_login_start(registered.keys, registered.record, b"", CREDENTIAL_ID, context=CONTEXT)
    with pytest.raises(OpaqueError):
        client_login_finish(client_state, b"", ksf=IdentityKsf(), context=CONTEXT)
    with pytest.raises(OpaqueError):
        server_login_finish(server_state, b"")


def test_message_sizes() -> None:
    assert REGISTRATION_REQUEST_BYTES == 32
    assert REGISTRATION_RESPONSE_BYTES == 64
    assert REGISTRATION_RECORD_BYTES == 192
    assert KE1_BYTES == 96
    assert KE2_BYTES == 320
    assert KE3_BYTES == 64


# Invalid group elements


@pytest.mark.parametrize("encoding", INVALID_ELEMENTS.values(), ids=INVALID_ELEMENTS.keys())
def test_deserialize_element_rejects(encoding: bytes) -> None:
    with pytest.raises(OpaqueError):
        ristretto255.deserialize_element(encoding)


@pytest.mark.parametrize("encoding", INVALID_ELEMENTS.values(), ids=INVALID_ELEMENTS.keys())
def test_server_rejects_invalid_blinded_element(registered: Registered, encoding: bytes) -> None:
    _, ke1 = client_login_start(PASSWORD)

    with pytest.raises(OpaqueError):
        server_registration_response(registered.keys, encoding, CREDENTIAL_ID)
    with pytest.raises(OpaqueError):
        server_login_start(
            registered.keys, registered.record, encoding + ke1[32:], CREDENTIAL_ID, context=CONTEXT
        )


@pytest.mark.parametrize("encoding", INVALID_ELEMENTS.values(), ids=INVALID_ELEMENTS.keys())
def test_server_rejects_invalid_client_keyshare(registered: Registered, encoding: bytes) -> None:
    _, ke1 = client_login_start(PASSWORD)

    with pytest.raises(OpaqueError):
        server_login_start(
            registered.keys, registered.record, ke1[:64] + encoding, CREDENTIAL_ID, context=CONTEXT
        )


@pytest.mark.parametrize("encoding", INVALID_ELEMENTS.values(), ids=INVALID_ELEMENTS.keys())
def test_server_rejects_invalid_record_public_key(registered: Registered, encoding: bytes) -> None:
    _, ke1 = client_login_start(PASSWORD)
    record = encoding + registered.record[32:]

    with pytest.raises(OpaqueError):
        server_registration_finish(record)
    with pytest.raises(OpaqueError):
        server_login_start(registered.keys, record, ke1, CREDENTIAL_ID, context=CONTEXT)


@pytest.mark.parametrize("encoding", INVALID_ELEMENTS.values(), ids=INVALID_ELEMENTS.keys())
def test_client_rejects_invalid_registration_response(keys: ServerKeys, encoding: bytes) -> None:
    state, request = client_registration_start(PASSWORD)
    response = server_registration_response(keys, request, CREDENTIAL_ID)

    with pytest.raises(OpaqueError):
        client_registration_finish(state, encoding + response[32:], ksf=IdentityKsf())
    with pytest.raises(OpaqueError):
        client_registration_finish(state, response[:32] + encoding, ksf=IdentityKsf())


@pytest.mark.parametrize("encoding", INVALID_ELEMENTS.values(), ids=INVALID_ELEMENTS.keys())
def test_client_rejects_invalid_ke2_elements(registered: Registered, encoding: bytes) -> None:
    client_state, _, ke2 = start_login(registered)
    keyshare_offset = KE2_FIELD_OFFSETS["server_public_keyshare"]
    invalid_evaluation = encoding + ke2[32:]
    invalid_keyshare = ke2[:keyshare_offset] + encoding + ke2[keyshare_offset + 32 :]

    with pytest.raises(OpaqueError):
        client_login_finish(client_state, invalid_evaluation, ksf=IdentityKsf(), context=CONTEXT)
    with pytest.raises(OpaqueError):
        client_login_finish(client_state, invalid_keyshare, ksf=IdentityKsf(), context=CONTEXT)


def test_generator_with_top_bit_set_rejected() -> None:
    generator = ristretto255.scalar_mult_base((1).to_bytes(32, "little"))
    malleated = generator[:31] + bytes([generator[31] | 0x80])

    assert ristretto255.deserialize_element(generator) == generator
    with pytest.raises(OpaqueError):
        ristretto255.deserialize_element(malleated)


def test_invalid_scalars_rejected() -> None:
    order = 2**252 + 27742317777372353535851937790883648493
    for scalar in (bytes(32), order.to_bytes(32, "little"), b"\xff" * 32, bytes(31)):
        with pytest.raises(OpaqueError):
            ristretto255.deserialize_nonzero_scalar(scalar)
    one_below_order = (order - 1).to_bytes(32, "little")
    assert ristretto255.deserialize_nonzero_scalar(one_below_order) == one_below_order


def test_random_scalar_is_canonical() -> None:
    for _ in range(100):
        scalar = ristretto255.random_scalar()
        assert ristretto255.deserialize_nonzero_scalar(scalar) == scalar


# Unknown credentials get a fake KE2


def test_fake_ke2_has_real_form(registered: Registered) -> None:
    client_state, ke1 = client_login_start(PASSWORD)
    server_state, fake_ke2 = server_login_start(
        registered.keys,
        None,
        ke1,
        b"unknown credential",
        context=CONTEXT,
        fake_client_public_key=generate_fake_client_public_key(),
    )

    assert len(fake_ke2) == KE2_BYTES
    ristretto255.deserialize_element(fake_ke2[:32])
    ristretto255.deserialize_element(fake_ke2[224:256])
    with pytest.raises(OpaqueError):
        client_login_finish(client_state, fake_ke2, ksf=IdentityKsf(), context=CONTEXT)
    with pytest.raises(OpaqueError):
        server_login_finish(server_state, bytes(KE3_BYTES))


def test_fake_ke2_without_stored_fake_key(registered: Registered) -> None:
    client_state, ke1 = client_login_start(PASSWORD)
    server_state, fake_ke2 = server_login_start(
        registered.keys, None, ke1, CREDENTIAL_ID, context=CONTEXT
    )

    assert len(fake_ke2) == KE2_BYTES
    assert not server_state.record_found
    with pytest.raises(OpaqueError):
        client_login_finish(client_state, fake_ke2, ksf=IdentityKsf(), context=CONTEXT)


def test_fake_ke2_uses_same_oprf_key(registered: Registered) -> None:
    """A fake KE2 evaluates the OPRF with the same key as a real one for that identifier."""
    _, ke1 = client_login_start(PASSWORD)
    _, real_ke2 = server_login_start(
        registered.keys, registered.record, ke1, CREDENTIAL_ID, context=CONTEXT
    )
    _, fake_ke2 = server_login_start(registered.keys, None, ke1, CREDENTIAL_ID, context=CONTEXT)

    assert fake_ke2[:32] == real_ke2[:32]
    assert fake_ke2[32:] != real_ke2[32:]


def test_fake_client_public_key_must_be_valid(registered: Registered) -> None:
    _, ke1 = client_login_start(PASSWORD)

    with pytest.raises(ValueError, match="fake_client_public_key"):
        server_login_start(
            registered.keys,
            None,
            ke1,
            CREDENTIAL_ID,
            context=CONTEXT,
            fake_client_public_key=IDENTITY_ELEMENT,
        )


# Server keys, error type and secrets in repr


def test_server_keys_reject_mismatched_public_key() -> None:
    oprf_seed, keys = generate_server_keys()
    other = generate_server_keys()[1]

    with pytest.raises(ValueError, match="does not match"):
        ServerKeys(software_expand(oprf_seed), keys.server_private_key, other.server_public_key)


def test_server_keys_reject_invalid_private_key() -> None:
    oprf_seed, keys = generate_server_keys()

    with pytest.raises(ValueError, match="canonical"):
        ServerKeys(software_expand(oprf_seed), bytes(32), keys.server_public_key)


def test_software_expand_is_one_hmac_block() -> None:
    """An HSM holding the seed as an HMAC-SHA512 key computes the same OPRF seed."""
    oprf_seed = bytes(range(64))
    info = CREDENTIAL_ID + b"OprfKey"
    expected = hmac.digest(oprf_seed, info + b"\x01", "sha512")[:32]

    assert software_expand(oprf_seed)(info) == expected


def test_software_expand_rejects_wrong_seed_size() -> None:
    with pytest.raises(ValueError, match="64"):
        software_expand(bytes(32))


def test_opaque_error_is_integrity_error() -> None:
    error = OpaqueError()

    assert isinstance(error, IntegrityError)
    assert isinstance(error, BackvaultError)
    assert error.message == "OPAQUE: decryption or authentication failed"
    assert error.exit_code == 13


def test_repr_hides_secrets(registered: Registered) -> None:
    registration_state, _ = client_registration_start(PASSWORD)
    client_state, server_state, _ = start_login(registered)

    for value in (registration_state, client_state, server_state, registered.keys):
        text = repr(value)
        assert PASSWORD.hex() not in text
        assert repr(PASSWORD) not in text
        assert registered.keys.server_private_key.hex() not in text
        assert server_state.session_key.hex() not in text
        assert repr(server_state.session_key) not in text


def test_oprf_input_length_limit() -> None:
    with pytest.raises(ValueError, match="65535"):
        oprf.blind(b"x" * 65536, ristretto255.random_scalar())


# Key-stretching functions


@pytest.mark.parametrize("ksf", [IdentityKsf(), Argon2idKsf(), FAST_ARGON2], ids=repr)
def test_ksf_parameters_round_trip(ksf: Ksf) -> None:
    rebuilt = ksf_from_parameters(ksf.parameters())

    assert rebuilt.parameters() == ksf.parameters()
    assert type(rebuilt) is type(ksf)


def test_argon2id_default_parameters() -> None:
    assert Argon2idKsf().parameters() == {
        "name": "argon2id",
        "memory_kib": 65536,
        "iterations": 3,
        "lanes": 4,
    }


def test_argon2id_stretch_output() -> None:
    stretched = FAST_ARGON2.stretch(bytes(64))

    assert len(stretched) == 64
    assert stretched == FAST_ARGON2.stretch(bytes(64))
    assert stretched != Argon2idKsf(memory_kib=2048, iterations=1).stretch(bytes(64))
    assert IdentityKsf().stretch(bytes(64)) == bytes(64)


@pytest.mark.parametrize(
    "parameters",
    [
        {"name": "scrypt"},
        {},
        {"name": "identity", "lanes": 4},
        {"name": "argon2id", "memory_kib": 1024, "iterations": 1},
        {"name": "argon2id", "memory_kib": 1024, "iterations": 1, "lanes": 1, "salt": "x"},
        {"name": "argon2id", "memory_kib": "1024", "iterations": 1, "lanes": 1},
        {"name": "argon2id", "memory_kib": 1024, "iterations": True, "lanes": 1},
        {"name": "argon2id", "memory_kib": 1024, "iterations": 0, "lanes": 1},
        {"name": "argon2id", "memory_kib": 16, "iterations": 1, "lanes": 4},
        {"name": "argon2id", "memory_kib": 2**23, "iterations": 1, "lanes": 4},
        {"name": "argon2id", "memory_kib": 1024, "iterations": 1, "lanes": 0},
    ],
)
def test_ksf_from_parameters_rejects(parameters: dict[str, int | str]) -> None:
    with pytest.raises(ValueError):
        ksf_from_parameters(parameters)

"""The published test vectors: RFC 9380 expand_message_xmd, RFC 9497 OPRF and RFC 9807 OPAQUE.

Every input, intermediate and output value of the ristretto255 vectors is reproduced. The
OPRF and OPAQUE vectors live in ``vectors/`` (see its README for their source).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backvault.opaque import (
    IdentityKsf,
    OpaqueError,
    ServerKeys,
    oprf,
    ristretto255,
    software_expand,
)
from backvault.opaque.ake import derive_keys, diffie_hellman, preamble
from backvault.opaque.credentials import derive_oprf_key
from backvault.opaque.envelope import (
    derive_diffie_hellman_key_pair,
    derive_envelope_keys,
    derive_masking_key,
    derive_randomized_password,
)
from backvault.opaque.hash_to_curve import expand_message_xmd_sha512
from backvault.opaque.kdf import hash_sha512, mac
from backvault.opaque.messages import KE1, KE2, RegistrationRecord
from backvault.opaque.protocol import (
    ServerLoginRandomness,
    _client_login_start,
    _client_registration_finish,
    _client_registration_start,
    _server_login_start,
    client_login_finish,
    server_login_finish,
    server_registration_response,
)

VECTORS = Path(__file__).parent / "vectors"
OPRF_SUITE = json.loads((VECTORS / "oprf-ristretto255-sha512.json").read_text())[0]
OPAQUE_VECTORS = json.loads((VECTORS / "opaque-3dh-ristretto255.json").read_text())
REAL_VECTORS = [vector for vector in OPAQUE_VECTORS if vector["config"]["Fake"] == "False"]
FAKE_VECTORS = [vector for vector in OPAQUE_VECTORS if vector["config"]["Fake"] == "True"]

# expand_message_xmd vectors with SHA-512, three of those in the CFRG repository
# cfrg/draft-irtf-cfrg-hash-to-curve, file poc/vectors/expand_message_xmd_SHA512_38.json.
# The two 128-byte outputs run the chaining loop that 64-byte outputs skip.
XMD_DST = b"QUUX-V01-CS02-with-expander-SHA256-256"
XMD_VECTORS = [
    (b"", 0x20, "6be348498074153e18bfab31671086f16e99210872c8b20abd9653f66fae2ecb"),
    (
        b"abc",
        0x80,
        "2cf47ce8df0be6b5c8be888b7d152e30edcbed4675acd6a08513e63c703016907bafee150152dbf8"
        "07029931c7e4ee68f43ef55971826adc03fd9ca5ad81805db38af17999058de0529119201de5b486"
        "676f152e8269f4c576cf9cb83b02a9eb6c22a879975732162d7c191ce083172fa7db82929e842c0c"
        "6743499e087aefe4",
    ),
    (
        b"abcdef0123456789",
        0x80,
        "9f7fc29164d005eb312e1a6b2ee35c5f658b97cadd0af12ab9b8053bb90ebae2d4b7a712e51349b1"
        "cff74266799f60b1581e14e783ab209184b68d69ec5b5bf42889803ccbe4205fb1a078fb509ac6a1"
        "44116716e6dc6b88b52a91a4882c8f2fb6b6774f23bde01dc7f86704d8a6d445cd95e16584721fc2"
        "560dc051ae0e432a",
    ),
]


def unhex(values: dict[str, str], name: str) -> bytes:
    return bytes.fromhex(values[name])


def optional(values: dict[str, str], name: str) -> bytes | None:
    return bytes.fromhex(values[name]) if name in values else None


def server_keys(inputs: dict[str, str]) -> ServerKeys:
    return ServerKeys(
        oprf_seed_expand=software_expand(unhex(inputs, "oprf_seed")),
        server_private_key=unhex(inputs, "server_private_key"),
        server_public_key=unhex(inputs, "server_public_key"),
    )


@pytest.mark.parametrize(("message", "length", "expected"), XMD_VECTORS)
def test_expand_message_xmd_sha512(message: bytes, length: int, expected: str) -> None:
    assert expand_message_xmd_sha512(message, XMD_DST, length).hex() == expected


def test_oprf_context_and_dst() -> None:
    assert oprf.HASH_TO_GROUP_DST.hex() == OPRF_SUITE["groupDST"]
    assert OPRF_SUITE["identifier"] == "ristretto255-SHA512"
    assert OPRF_SUITE["mode"] == oprf.MODE_OPRF


def test_oprf_derive_key_pair() -> None:
    seed = unhex(OPRF_SUITE, "seed")
    private_key, public_key = oprf.derive_key_pair(seed, unhex(OPRF_SUITE, "keyInfo"))

    assert private_key.hex() == OPRF_SUITE["skSm"]
    assert public_key == ristretto255.scalar_mult_base(private_key)


@pytest.mark.parametrize("vector", OPRF_SUITE["vectors"], ids=["vector1", "vector2"])
def test_oprf_vector(vector: dict[str, Any]) -> None:
    assert vector["Batch"] == 1
    private_key = unhex(OPRF_SUITE, "skSm")
    oprf_input = unhex(vector, "Input")
    blind = unhex(vector, "Blind")

    blinded_element = oprf.blind(oprf_input, blind)
    assert blinded_element.hex() == vector["BlindedElement"]

    evaluated_element = oprf.blind_evaluate(private_key, blinded_element)
    assert evaluated_element.hex() == vector["EvaluationElement"]

    output = oprf.finalize(oprf_input, blind, evaluated_element)
    assert output.hex() == vector["Output"]
    assert oprf.evaluate(private_key, oprf_input).hex() == vector["Output"]


def vector_id(vector: dict[str, Any]) -> str:
    identities = "identities" if "client_identity" in vector["inputs"] else "no-identities"
    return f"{vector['config']['Group']}-{identities}"


@pytest.mark.parametrize("vector", REAL_VECTORS, ids=vector_id)
def test_opaque_real_vector_outputs(vector: dict[str, Any]) -> None:
    """Run registration and login with the vector's randomness and compare every message."""
    inputs, outputs = vector["inputs"], vector["outputs"]
    context = unhex(vector["config"], "Context")
    password = unhex(inputs, "password")
    credential_identifier = unhex(inputs, "credential_identifier")
    server_identity = optional(inputs, "server_identity")
    client_identity = optional(inputs, "client_identity")
    keys = server_keys(inputs)

    registration_state, request = _client_registration_start(
        password, unhex(inputs, "blind_registration")
    )
    assert request.hex() == outputs["registration_request"]

    response = server_registration_response(keys, request, credential_identifier)
    assert response.hex() == outputs["registration_response"]

    record, registration_export_key = _client_registration_finish(
        registration_state,
        response,
        ksf=IdentityKsf(),
        server_identity=server_identity,
        client_identity=client_identity,
        envelope_nonce=unhex(inputs, "envelope_nonce"),
    )
    assert record.hex() == outputs["registration_upload"]
    assert registration_export_key.hex() == outputs["export_key"]

    login_state, ke1 = _client_login_start(
        password,
        blind=unhex(inputs, "blind_login"),
        client_nonce=unhex(inputs, "client_nonce"),
        client_keyshare_seed=unhex(inputs, "client_keyshare_seed"),
    )
    assert ke1.hex() == outputs["KE1"]

    randomness = ServerLoginRandomness(
        masking_nonce=unhex(inputs, "masking_nonce"),
        server_nonce=unhex(inputs, "server_nonce"),
        server_keyshare_seed=unhex(inputs, "server_keyshare_seed"),
        fake_masking_key=bytes(64),
    )
    server_state, ke2 = _server_login_start(
        keys,
        record,
        ke1,
        credential_identifier,
        context=context,
        server_identity=server_identity,
        client_identity=client_identity,
        fake_client_public_key=None,
        randomness=randomness,
    )
    assert ke2.hex() == outputs["KE2"]

    ke3, client_session_key, login_export_key = client_login_finish(
        login_state,
        ke2,
        ksf=IdentityKsf(),
        context=context,
        server_identity=server_identity,
        client_identity=client_identity,
    )
    assert ke3.hex() == outputs["KE3"]
    assert client_session_key.hex() == outputs["session_key"]
    assert login_export_key.hex() == outputs["export_key"]

    server_session_key = server_login_finish(server_state, ke3)
    assert server_session_key.hex() == outputs["session_key"]


@pytest.mark.parametrize("vector", REAL_VECTORS, ids=vector_id)
def test_opaque_real_vector_intermediates(vector: dict[str, Any]) -> None:
    """Recompute each intermediate value step by step from the RFC's functions."""
    inputs, intermediates, outputs = vector["inputs"], vector["intermediates"], vector["outputs"]
    context = unhex(vector["config"], "Context")
    password = unhex(inputs, "password")
    client_public_key = unhex(intermediates, "client_public_key")
    server_public_key = unhex(inputs, "server_public_key")

    oprf_key = derive_oprf_key(
        software_expand(unhex(inputs, "oprf_seed")), unhex(inputs, "credential_identifier")
    )
    assert oprf_key.hex() == intermediates["oprf_key"]

    evaluated_element = bytes.fromhex(outputs["registration_response"])[:32]
    oprf_output = oprf.finalize(password, unhex(inputs, "blind_registration"), evaluated_element)
    randomized_password = derive_randomized_password(oprf_output, IdentityKsf())
    assert randomized_password.hex() == intermediates["randomized_password"]
    assert derive_masking_key(randomized_password).hex() == intermediates["masking_key"]

    envelope_keys = derive_envelope_keys(randomized_password, unhex(inputs, "envelope_nonce"))
    assert envelope_keys.auth_key.hex() == intermediates["auth_key"]
    _, derived_client_public_key = derive_diffie_hellman_key_pair(envelope_keys.private_key_seed)
    assert derived_client_public_key == client_public_key

    record = RegistrationRecord.parse(bytes.fromhex(outputs["registration_upload"]))
    assert record.client_public_key == client_public_key
    assert record.masking_key.hex() == intermediates["masking_key"]
    assert record.envelope.hex() == intermediates["envelope"]

    ke1 = KE1.parse(bytes.fromhex(outputs["KE1"]))
    ke2 = KE2.parse(bytes.fromhex(outputs["KE2"]))
    server_private_keyshare, server_public_keyshare = derive_diffie_hellman_key_pair(
        unhex(inputs, "server_keyshare_seed")
    )
    assert server_public_keyshare == ke2.server_public_keyshare
    ikm = (
        diffie_hellman(server_private_keyshare, ke1.client_public_keyshare)
        + diffie_hellman(unhex(inputs, "server_private_key"), ke1.client_public_keyshare)
        + diffie_hellman(server_private_keyshare, client_public_key)
    )
    transcript = preamble(
        context,
        optional(inputs, "client_identity") or client_public_key,
        ke1,
        optional(inputs, "server_identity") or server_public_key,
        ke2.credential_response,
        ke2.server_nonce,
        ke2.server_public_keyshare,
    )
    keys = derive_keys(ikm, transcript)
    assert keys.handshake_secret.hex() == intermediates["handshake_secret"]
    assert keys.server_mac_key.hex() == intermediates["server_mac_key"]
    assert keys.client_mac_key.hex() == intermediates["client_mac_key"]
    assert keys.session_key.hex() == outputs["session_key"]
    assert mac(keys.server_mac_key, hash_sha512(transcript)) == ke2.server_mac


@pytest.mark.parametrize("vector", FAKE_VECTORS, ids=vector_id)
def test_opaque_fake_vector(vector: dict[str, Any]) -> None:
    """Respond to the vector's KE1 for an unknown credential with the fake record inputs."""
    inputs = vector["inputs"]
    client_public_key = unhex(inputs, "client_public_key")
    client_private_key = unhex(inputs, "client_private_key")
    assert ristretto255.scalar_mult_base(client_private_key) == client_public_key

    randomness = ServerLoginRandomness(
        masking_nonce=unhex(inputs, "masking_nonce"),
        server_nonce=unhex(inputs, "server_nonce"),
        server_keyshare_seed=unhex(inputs, "server_keyshare_seed"),
        fake_masking_key=unhex(inputs, "masking_key"),
    )
    server_state, ke2 = _server_login_start(
        server_keys(inputs),
        None,
        unhex(inputs, "KE1"),
        unhex(inputs, "credential_identifier"),
        context=unhex(vector["config"], "Context"),
        server_identity=optional(inputs, "server_identity"),
        client_identity=optional(inputs, "client_identity"),
        fake_client_public_key=client_public_key,
        randomness=randomness,
    )
    assert ke2.hex() == vector["outputs"]["KE2"]
    assert not server_state.record_found
    with pytest.raises(OpaqueError):
        server_login_finish(server_state, server_state.expected_client_mac)

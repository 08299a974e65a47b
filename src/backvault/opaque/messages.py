"""Wire formats of the OPAQUE messages (RFC 9807, sections 4.1.1, 5.1, 6.1 and 6.3.1).

Every message has a fixed size for ristretto255-SHA512, so parsing is slicing after one
exact length check. A message of any other length raises :class:`OpaqueError`.
Group elements are validated where they are used, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from backvault.opaque.errors import OpaqueError
from backvault.opaque.kdf import NH, NM
from backvault.opaque.ristretto255 import ELEMENT_BYTES

NN = 32  # nonce size
NSEED = 32  # seed size
NOE = ELEMENT_BYTES  # serialized OPRF element
NPK = ELEMENT_BYTES  # serialized AKE public key
ENVELOPE_BYTES = NN + NM
MASKED_RESPONSE_BYTES = NPK + ENVELOPE_BYTES

REGISTRATION_REQUEST_BYTES = NOE
REGISTRATION_RESPONSE_BYTES = NOE + NPK
REGISTRATION_RECORD_BYTES = NPK + NH + ENVELOPE_BYTES
CREDENTIAL_REQUEST_BYTES = NOE
AUTH_REQUEST_BYTES = NN + NPK
KE1_BYTES = CREDENTIAL_REQUEST_BYTES + AUTH_REQUEST_BYTES
CREDENTIAL_RESPONSE_BYTES = NOE + NN + MASKED_RESPONSE_BYTES
AUTH_RESPONSE_BYTES = NN + NPK + NM
KE2_BYTES = CREDENTIAL_RESPONSE_BYTES + AUTH_RESPONSE_BYTES
KE3_BYTES = NM


def _check_length(data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise OpaqueError()


@dataclass(frozen=True)
class RegistrationResponse:
    evaluated_message: bytes
    server_public_key: bytes

    @classmethod
    def parse(cls, data: bytes) -> RegistrationResponse:
        _check_length(data, REGISTRATION_RESPONSE_BYTES)
        return cls(data[:NOE], data[NOE:])

    def serialize(self) -> bytes:
        return self.evaluated_message + self.server_public_key


@dataclass(frozen=True, repr=False)
class RegistrationRecord:
    """The record the server stores: client public key, masking key and envelope."""

    client_public_key: bytes
    masking_key: bytes
    envelope: bytes

    @classmethod
    def parse(cls, data: bytes) -> RegistrationRecord:
        _check_length(data, REGISTRATION_RECORD_BYTES)
        return cls(data[:NPK], data[NPK : NPK + NH], data[NPK + NH :])

    def serialize(self) -> bytes:
        return self.client_public_key + self.masking_key + self.envelope

    def __repr__(self) -> str:
        return f"RegistrationRecord(client_public_key={self.client_public_key.hex()}, ...)"


@dataclass(frozen=True)
class KE1:
    """CredentialRequest (the blinded element) followed by AuthRequest."""

    blinded_message: bytes
    client_nonce: bytes
    client_public_keyshare: bytes

    @classmethod
    def parse(cls, data: bytes) -> KE1:
        _check_length(data, KE1_BYTES)
        return cls(data[:NOE], data[NOE : NOE + NN], data[NOE + NN :])

    def serialize(self) -> bytes:
        return self.blinded_message + self.client_nonce + self.client_public_keyshare


@dataclass(frozen=True)
class CredentialResponse:
    evaluated_message: bytes
    masking_nonce: bytes
    masked_response: bytes

    def serialize(self) -> bytes:
        return self.evaluated_message + self.masking_nonce + self.masked_response


@dataclass(frozen=True)
class KE2:
    """CredentialResponse followed by AuthResponse."""

    credential_response: CredentialResponse
    server_nonce: bytes
    server_public_keyshare: bytes
    server_mac: bytes

    @classmethod
    def parse(cls, data: bytes) -> KE2:
        _check_length(data, KE2_BYTES)
        masked_start = NOE + NN
        auth_start = CREDENTIAL_RESPONSE_BYTES
        credential_response = CredentialResponse(
            evaluated_message=data[:NOE],
            masking_nonce=data[NOE:masked_start],
            masked_response=data[masked_start:auth_start],
        )
        return cls(
            credential_response=credential_response,
            server_nonce=data[auth_start : auth_start + NN],
            server_public_keyshare=data[auth_start + NN : auth_start + NN + NPK],
            server_mac=data[auth_start + NN + NPK :],
        )

    def serialize(self) -> bytes:
        return (
            self.credential_response.serialize()
            + self.server_nonce
            + self.server_public_keyshare
            + self.server_mac
        )


def parse_registration_request(data: bytes) -> bytes:
    """Return the blinded element of a RegistrationRequest."""
    _check_length(data, REGISTRATION_REQUEST_BYTES)
    return data


def parse_ke3(data: bytes) -> bytes:
    """Return the client MAC of a KE3."""
    _check_length(data, KE3_BYTES)
    return data

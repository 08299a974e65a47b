"""A software CTAP2 authenticator, so the FIDO2 tests talk real CTAP2 without hardware.

It implements what backvault uses of CTAP 2.1 (FIDO Alliance, "Client to Authenticator
Protocol", Proposed Standard of 2021-06-15): authenticatorGetInfo, authenticatorMakeCredential
(ES256, packed self attestation), authenticatorGetAssertion, authenticatorClientPIN
(getPINRetries, getKeyAgreement, getPinToken, getPinUvAuthTokenUsingUvWithPermissions,
getPinUvAuthTokenUsingPinWithPermissions) with PIN/UV auth protocols 1 and 2, and the
hmac-secret extension. CBOR goes through cbor2 and every cryptographic step is written here
with ``cryptography``, not taken from python-fido2, so a test that passes shows that
backvault's requests are valid CTAP2 rather than that python-fido2 agrees with itself.

Simplifications: user presence and built-in user verification always succeed.
Credentials are non-discoverable and kept in a table in memory, so the credential id is
a random handle. There is no setPIN or changePIN, because the PIN is set when the object
is made.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from threading import Event
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID

ERR = CtapError.ERR

# authenticatorAPI command bytes (CTAP 2.1, Authenticator API).
MAKE_CREDENTIAL = 0x01
GET_ASSERTION = 0x02
GET_INFO = 0x04
CLIENT_PIN = 0x06

# authenticatorClientPIN subcommands (CTAP 2.1, authenticatorClientPIN).
GET_PIN_RETRIES = 0x01
GET_KEY_AGREEMENT = 0x02
GET_PIN_TOKEN = 0x05
GET_TOKEN_USING_UV = 0x06
GET_TOKEN_USING_PIN = 0x09

# pinUvAuthToken permissions (CTAP 2.1, authenticatorClientPIN).
PERMISSION_MAKE_CREDENTIAL = 0x01
PERMISSION_GET_ASSERTION = 0x02

# Authenticator data flags (WebAuthn, Authenticator Data).
FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40
FLAG_ED = 0x80

ES256 = -7
COSE_KEY_ECDH_ES_HKDF_256 = -25  # the algorithm id getKeyAgreement sends, by CTAP 2.1
AAGUID = b"soft-ctap2-test!"  # 16 bytes that name this authenticator model
HMAC_SECRET = "hmac-secret"
MAX_PIN_RETRIES = 8
MAX_CONSECUTIVE_PIN_MISMATCHES = 3  # then PIN_AUTH_BLOCKED until a power cycle
MAX_CREDENTIAL_ID_LENGTH = 64
MAX_MESSAGE_SIZE = 1200


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _aes_cbc(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(iv))


# PIN/UV auth protocols -----------------------------------------------------------------


class PinUvProtocolOne:
    """PIN/UV auth protocol 1, the authenticator's side (CTAP 2.1, PIN/UV Auth Protocol One)."""

    version = 1

    def kdf(self, z: bytes) -> bytes:
        return sha256(z)

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        encryptor = _aes_cbc(key, bytes(16)).encryptor()
        return encryptor.update(plaintext) + encryptor.finalize()

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes:
        if len(ciphertext) % 16:
            raise CtapError(ERR.INVALID_LENGTH)
        decryptor = _aes_cbc(key, bytes(16)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        return hmac_sha256(key, message)[:16]

    def verify(self, key: bytes, message: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(self.authenticate(key, message), signature)


class PinUvProtocolTwo(PinUvProtocolOne):
    """PIN/UV auth protocol 2 (CTAP 2.1, PIN/UV Auth Protocol Two): HKDF keys, random IVs.

    The shared secret is 64 bytes, an HMAC key and then an AES key. A pinUvAuthToken is
    used whole as an HMAC key.
    """

    version = 2

    def kdf(self, z: bytes) -> bytes:
        return self._hkdf(z, b"CTAP2 HMAC key") + self._hkdf(z, b"CTAP2 AES key")

    @staticmethod
    def _hkdf(z: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes(32), info=info).derive(z)

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        iv = os.urandom(16)
        encryptor = _aes_cbc(key[32:], iv).encryptor()
        return iv + encryptor.update(plaintext) + encryptor.finalize()

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes:
        if len(ciphertext) < 32 or len(ciphertext) % 16:
            raise CtapError(ERR.INVALID_LENGTH)
        decryptor = _aes_cbc(key[32:], ciphertext[:16]).decryptor()
        return decryptor.update(ciphertext[16:]) + decryptor.finalize()

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        return hmac_sha256(key[:32], message)


PROTOCOLS: dict[int, PinUvProtocolOne] = {1: PinUvProtocolOne(), 2: PinUvProtocolTwo()}


# State -----------------------------------------------------------------------------------


@dataclass
class Credential:
    """One credential. The two CredRandom values exist only when hmac-secret was asked for."""

    credential_id: bytes
    rp_id: str
    user_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    cred_random_with_uv: bytes | None
    cred_random_without_uv: bytes | None
    sign_count: int = 0


@dataclass
class PinUvAuthToken:
    value: bytes
    protocol: int
    permissions: int
    rp_id: str | None


def _cose_public_key(public_key: ec.EllipticCurvePublicKey, algorithm: int) -> dict[int, Any]:
    numbers = public_key.public_numbers()
    return {
        1: 2,  # kty: EC2
        3: algorithm,
        -1: 1,  # crv: P-256
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }


def _required(request: dict[int, Any], key: int, kind: type) -> Any:
    value = request.get(key)
    if value is None:
        raise CtapError(ERR.MISSING_PARAMETER)
    if not isinstance(value, kind):
        raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
    return value


class SoftCtap2Authenticator(CtapDevice):
    """A CTAP2 authenticator that runs in the test process.

    ``hmac_secret=False`` builds one without the hmac-secret extension. ``pin`` sets a PIN.
    ``built_in_uv=False`` leaves out built-in user verification, so a PIN is required.
    ``pin_uv_auth_token=False`` makes a CTAP 2.0 authenticator, which verifies its user
    through the ``uv`` option or a legacy getPinToken. ``touches`` counts the times the
    authenticator collected user presence. Setting ``user_presence_error`` to a CTAP
    status makes every later request that needs a touch fail with it, as when the user
    lets the key time out or denies the request.
    """

    def __init__(
        self,
        *,
        hmac_secret: bool = True,
        pin: str | None = None,
        built_in_uv: bool = True,
        pin_uv_auth_token: bool = True,
        pin_uv_protocols: tuple[int, ...] = (2, 1),
        pin_retries: int = MAX_PIN_RETRIES,
    ) -> None:
        self.hmac_secret = hmac_secret
        self.pin = pin
        self.built_in_uv = built_in_uv
        self.pin_uv_auth_token = pin_uv_auth_token
        self.pin_uv_protocols = pin_uv_protocols
        self.pin_retries = pin_retries
        self.consecutive_pin_mismatches = 0
        self.credentials: dict[bytes, Credential] = {}
        self.touches = 0
        self.user_presence_error: int | None = None
        self.closed = False
        self._key_agreement = ec.generate_private_key(ec.SECP256R1())
        self._token: PinUvAuthToken | None = None
        self._handlers: dict[int, Callable[[dict[int, Any], Callable[[STATUS], None]], Any]] = {
            GET_INFO: self._get_info,
            MAKE_CREDENTIAL: self._make_credential,
            GET_ASSERTION: self._get_assertion,
            CLIENT_PIN: self._client_pin,
        }

    # CtapDevice --------------------------------------------------------------------------

    @property
    def capabilities(self) -> int:
        return CAPABILITY.CBOR

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        """Run one CTAPHID_CBOR request: a command byte and a CBOR map of parameters.

        The response is a status byte, followed by the CBOR-encoded response map on success.
        """
        if cmd != CTAPHID.CBOR:
            raise CtapError(ERR.INVALID_COMMAND)
        if not data:
            return bytes([ERR.INVALID_LENGTH])
        handler = self._handlers.get(data[0])
        if handler is None:
            return bytes([ERR.INVALID_COMMAND])
        try:
            request = cbor2.loads(data[1:]) if len(data) > 1 else {}
        except cbor2.CBORDecodeError:
            return bytes([ERR.INVALID_CBOR])
        if not isinstance(request, dict):
            return bytes([ERR.CBOR_UNEXPECTED_TYPE])
        try:
            response = handler(request, on_keepalive or (lambda status: None))
        except CtapError as error:
            return bytes([error.code])
        # CTAP2 canonical CBOR orders map keys as the canonical CBOR of RFC 7049 does.
        return b"\x00" + cbor2.dumps(response, canonical=True)

    def close(self) -> None:
        # Credentials and the PIN outlive a close, as on a real key that is plugged in again.
        self.closed = True

    @classmethod
    def list_devices(cls) -> Iterator[SoftCtap2Authenticator]:
        return iter(())

    # authenticatorGetInfo ----------------------------------------------------------------

    def _get_info(self, request: dict[int, Any], on_keepalive: Callable[[STATUS], None]) -> Any:
        options: dict[str, bool] = {"rk": False, "up": True, "clientPin": self.pin is not None}
        if self.built_in_uv:
            options["uv"] = True
        if self.pin_uv_auth_token:
            options["pinUvAuthToken"] = True
        versions = ["FIDO_2_0", "FIDO_2_1"] if self.pin_uv_auth_token else ["FIDO_2_0"]
        return {
            0x01: versions,
            0x02: [HMAC_SECRET] if self.hmac_secret else [],
            0x03: AAGUID,
            0x04: options,
            0x05: MAX_MESSAGE_SIZE,
            0x06: list(self.pin_uv_protocols),
            0x07: 8,  # maxCredentialCountInList
            0x08: MAX_CREDENTIAL_ID_LENGTH,
            0x0A: [{"type": "public-key", "alg": ES256}],
        }

    # authenticatorMakeCredential -------------------------------------------------------

    def _make_credential(
        self, request: dict[int, Any], on_keepalive: Callable[[STATUS], None]
    ) -> Any:
        client_data_hash: bytes = _required(request, 0x01, bytes)
        rp: dict[str, Any] = _required(request, 0x02, dict)
        user: dict[str, Any] = _required(request, 0x03, dict)
        parameters: list[dict[str, Any]] = _required(request, 0x04, list)
        extensions: dict[str, Any] = request.get(0x06) or {}
        options: dict[str, Any] = request.get(0x07) or {}
        rp_id, user_id = rp.get("id"), user.get("id")
        if not isinstance(rp_id, str) or not isinstance(user_id, bytes):
            raise CtapError(ERR.INVALID_PARAMETER)
        if not any(p.get("type") == "public-key" and p.get("alg") == ES256 for p in parameters):
            raise CtapError(ERR.UNSUPPORTED_ALGORITHM)
        if options.get("rk"):
            raise CtapError(ERR.UNSUPPORTED_OPTION)

        user_verified = self._verify_user(
            request.get(0x08), request.get(0x09), client_data_hash,
            PERMISSION_MAKE_CREDENTIAL, rp_id, uv_option=bool(options.get("uv")),
        )
        if not user_verified and (self.pin is not None or self.built_in_uv):
            # Without makeCredUvNotRqd, an authenticator that can verify its user must.
            raise CtapError(ERR.PUAT_REQUIRED)
        for excluded in request.get(0x05) or []:
            if self._find_credential(excluded.get("id"), rp_id) is not None:
                self._collect_user_presence(on_keepalive)
                raise CtapError(ERR.CREDENTIAL_EXCLUDED)
        self._collect_user_presence(on_keepalive)
        self._token_used()

        with_hmac_secret = self.hmac_secret and extensions.get(HMAC_SECRET) is True
        credential = Credential(
            credential_id=secrets.token_bytes(32),
            rp_id=rp_id,
            user_id=user_id,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            cred_random_with_uv=secrets.token_bytes(32) if with_hmac_secret else None,
            cred_random_without_uv=secrets.token_bytes(32) if with_hmac_secret else None,
        )
        self.credentials[credential.credential_id] = credential

        extension_outputs = {HMAC_SECRET: True} if with_hmac_secret else {}
        auth_data = self._authenticator_data(
            credential, user_present=True, user_verified=user_verified,
            extension_outputs=extension_outputs, attested=True,
        )
        # Packed self attestation: the new credential signs its own authenticator data.
        signature = credential.private_key.sign(
            auth_data + client_data_hash, ec.ECDSA(hashes.SHA256())
        )
        return {0x01: "packed", 0x02: auth_data, 0x03: {"alg": ES256, "sig": signature}}

    # authenticatorGetAssertion ---------------------------------------------------------

    def _get_assertion(
        self, request: dict[int, Any], on_keepalive: Callable[[STATUS], None]
    ) -> Any:
        rp_id: str = _required(request, 0x01, str)
        client_data_hash: bytes = _required(request, 0x02, bytes)
        allow_list: list[dict[str, Any]] = request.get(0x03) or []
        extensions: dict[str, Any] = request.get(0x04) or {}
        options: dict[str, Any] = request.get(0x05) or {}
        if "rk" in options:
            raise CtapError(ERR.INVALID_OPTION)
        user_present = options.get("up", True) is not False

        user_verified = self._verify_user(
            request.get(0x06), request.get(0x07), client_data_hash,
            PERMISSION_GET_ASSERTION, rp_id, uv_option=bool(options.get("uv")),
        )
        credential = next(
            (
                found
                for descriptor in allow_list
                if (found := self._find_credential(descriptor.get("id"), rp_id)) is not None
            ),
            None,
        )
        if credential is None:
            raise CtapError(ERR.NO_CREDENTIALS)
        if user_present:
            self._collect_user_presence(on_keepalive)
            self._token_used()

        extension_outputs: dict[str, Any] = {}
        hmac_secret_input = extensions.get(HMAC_SECRET)
        if hmac_secret_input is not None and credential.cred_random_with_uv is not None:
            extension_outputs[HMAC_SECRET] = self._hmac_secret(
                hmac_secret_input, credential, user_verified
            )

        credential.sign_count += 1
        auth_data = self._authenticator_data(
            credential, user_present=user_present, user_verified=user_verified,
            extension_outputs=extension_outputs, attested=False,
        )
        signature = credential.private_key.sign(
            auth_data + client_data_hash, ec.ECDSA(hashes.SHA256())
        )
        return {
            0x01: {"type": "public-key", "id": credential.credential_id},
            0x02: auth_data,
            0x03: signature,
        }

    def _find_credential(self, credential_id: object, rp_id: str) -> Credential | None:
        if not isinstance(credential_id, bytes):
            return None
        credential = self.credentials.get(credential_id)
        return credential if credential is not None and credential.rp_id == rp_id else None

    def _authenticator_data(
        self,
        credential: Credential,
        *,
        user_present: bool,
        user_verified: bool,
        extension_outputs: dict[str, Any],
        attested: bool,
    ) -> bytes:
        flags = 0
        if user_present:
            flags |= FLAG_UP
        if user_verified:
            flags |= FLAG_UV
        body = b""
        if attested:
            flags |= FLAG_AT
            public_key = _cose_public_key(credential.private_key.public_key(), ES256)
            body += (
                AAGUID
                + len(credential.credential_id).to_bytes(2, "big")
                + credential.credential_id
                + cbor2.dumps(public_key, canonical=True)
            )
        if extension_outputs:
            flags |= FLAG_ED
            body += cbor2.dumps(extension_outputs, canonical=True)
        rp_id_hash = sha256(credential.rp_id.encode())
        return rp_id_hash + bytes([flags]) + credential.sign_count.to_bytes(4, "big") + body

    # hmac-secret (CTAP 2.1 section 12.5) -------------------------------------------------

    def _hmac_secret(
        self, hmac_secret_input: object, credential: Credential, user_verified: bool
    ) -> bytes:
        """Return HMAC-SHA-256(CredRandom, salt) for one or two salts, encrypted.

        The input is a map: 1 keyAgreement, 2 saltEnc, 3 saltAuth, 4 pinUvAuthProtocol
        (1 when absent). CredRandomWithUV serves requests with user verification,
        CredRandomWithoutUV the others, so the two never give the same output.
        """
        if not isinstance(hmac_secret_input, dict):
            raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
        platform_key: dict[int, Any] = _required(hmac_secret_input, 1, dict)
        salt_enc: bytes = _required(hmac_secret_input, 2, bytes)
        salt_auth: bytes = _required(hmac_secret_input, 3, bytes)
        protocol = self._protocol(hmac_secret_input.get(4, 1))

        shared_secret = self._shared_secret(protocol, platform_key)
        if not protocol.verify(shared_secret, salt_enc, salt_auth):
            raise CtapError(ERR.PIN_AUTH_INVALID)
        salts = protocol.decrypt(shared_secret, salt_enc)
        if len(salts) not in (32, 64):
            raise CtapError(ERR.INVALID_LENGTH)

        cred_random = (
            credential.cred_random_with_uv if user_verified else credential.cred_random_without_uv
        )
        assert cred_random is not None
        outputs = b"".join(
            hmac_sha256(cred_random, salts[start : start + 32])
            for start in range(0, len(salts), 32)
        )
        return protocol.encrypt(shared_secret, outputs)

    # authenticatorClientPIN ------------------------------------------------------------

    def _client_pin(self, request: dict[int, Any], on_keepalive: Callable[[STATUS], None]) -> Any:
        protocol = self._protocol(_required(request, 0x01, int))
        subcommand: int = _required(request, 0x02, int)
        if subcommand == GET_PIN_RETRIES:
            return {0x03: self.pin_retries}
        if subcommand == GET_KEY_AGREEMENT:
            public_key = self._key_agreement.public_key()
            return {0x01: _cose_public_key(public_key, COSE_KEY_ECDH_ES_HKDF_256)}
        if subcommand == GET_PIN_TOKEN:
            permissions = PERMISSION_MAKE_CREDENTIAL | PERMISSION_GET_ASSERTION
            return self._token_using_pin(protocol, request, permissions, None)
        if subcommand == GET_TOKEN_USING_PIN and self.pin_uv_auth_token:
            permissions, rp_id = self._requested_permissions(request)
            return self._token_using_pin(protocol, request, permissions, rp_id)
        if subcommand == GET_TOKEN_USING_UV and self.pin_uv_auth_token:
            permissions, rp_id = self._requested_permissions(request)
            if not self.built_in_uv:
                raise CtapError(ERR.NOT_ALLOWED)
            shared_secret = self._shared_secret(protocol, _required(request, 0x03, dict))
            self._collect_user_presence(on_keepalive)  # the touch that built-in UV needs
            return self._issue_token(protocol, shared_secret, permissions, rp_id)
        raise CtapError(ERR.INVALID_SUBCOMMAND)

    def _requested_permissions(self, request: dict[int, Any]) -> tuple[int, str | None]:
        permissions: int = _required(request, 0x09, int)
        if permissions == 0:
            raise CtapError(ERR.INVALID_PARAMETER)
        rp_id = request.get(0x0A)
        if rp_id is not None and not isinstance(rp_id, str):
            raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
        return permissions, rp_id

    def _token_using_pin(
        self,
        protocol: PinUvProtocolOne,
        request: dict[int, Any],
        permissions: int,
        rp_id: str | None,
    ) -> Any:
        if self.pin is None:
            raise CtapError(ERR.PIN_NOT_SET)
        if self.pin_retries == 0:
            raise CtapError(ERR.PIN_BLOCKED)
        if self.consecutive_pin_mismatches >= MAX_CONSECUTIVE_PIN_MISMATCHES:
            raise CtapError(ERR.PIN_AUTH_BLOCKED)
        shared_secret = self._shared_secret(protocol, _required(request, 0x03, dict))
        pin_hash_enc: bytes = _required(request, 0x06, bytes)

        self.pin_retries -= 1
        pin_hash = protocol.decrypt(shared_secret, pin_hash_enc)
        if not hmac.compare_digest(pin_hash, sha256(self.pin.encode())[:16]):
            # A mismatch makes a new key agreement key, so a platform cannot replay.
            self._key_agreement = ec.generate_private_key(ec.SECP256R1())
            self.consecutive_pin_mismatches += 1
            if self.pin_retries == 0:
                raise CtapError(ERR.PIN_BLOCKED)
            if self.consecutive_pin_mismatches >= MAX_CONSECUTIVE_PIN_MISMATCHES:
                raise CtapError(ERR.PIN_AUTH_BLOCKED)
            raise CtapError(ERR.PIN_INVALID)
        self.pin_retries = MAX_PIN_RETRIES
        self.consecutive_pin_mismatches = 0
        return self._issue_token(protocol, shared_secret, permissions, rp_id)

    def _issue_token(
        self,
        protocol: PinUvProtocolOne,
        shared_secret: bytes,
        permissions: int,
        rp_id: str | None,
    ) -> Any:
        # Every new token replaces the last one, which stops working.
        self._token = PinUvAuthToken(secrets.token_bytes(32), protocol.version, permissions, rp_id)
        return {0x02: protocol.encrypt(shared_secret, self._token.value)}

    # User verification and presence ------------------------------------------------------

    def _verify_user(
        self,
        pin_uv_auth_param: object,
        protocol_version: object,
        client_data_hash: bytes,
        permission: int,
        rp_id: str,
        *,
        uv_option: bool,
    ) -> bool:
        """Check the pinUvAuthParam or the ``uv`` option; return whether the user is verified."""
        if pin_uv_auth_param is not None:
            if protocol_version is None:
                raise CtapError(ERR.MISSING_PARAMETER)
            protocol = self._protocol(protocol_version)
            if not isinstance(pin_uv_auth_param, bytes):
                raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
            token = self._token
            if token is None or token.protocol != protocol.version:
                raise CtapError(ERR.PIN_AUTH_INVALID)
            if not protocol.verify(token.value, client_data_hash, pin_uv_auth_param):
                raise CtapError(ERR.PIN_AUTH_INVALID)
            if not token.permissions & permission:
                raise CtapError(ERR.PIN_AUTH_INVALID)
            if token.rp_id is not None and token.rp_id != rp_id:
                raise CtapError(ERR.PIN_AUTH_INVALID)
            return True
        if uv_option:
            if not self.built_in_uv:
                raise CtapError(ERR.INVALID_OPTION)
            return True
        return False

    def _collect_user_presence(self, on_keepalive: Callable[[STATUS], None]) -> None:
        on_keepalive(STATUS.UPNEEDED)
        if self.user_presence_error is not None:
            raise CtapError(self.user_presence_error)
        self.touches += 1

    def _token_used(self) -> None:
        # After user presence, a token keeps no permission but largeBlobWrite, which this
        # authenticator does not have, so the platform needs a new token for the next request.
        if self._token is not None:
            self._token.permissions = 0

    # Key agreement -------------------------------------------------------------------------

    def _protocol(self, version: object) -> PinUvProtocolOne:
        if not isinstance(version, int) or version not in self.pin_uv_protocols:
            raise CtapError(ERR.INVALID_PARAMETER)
        return PROTOCOLS[version]

    def _shared_secret(self, protocol: PinUvProtocolOne, platform_key: dict[int, Any]) -> bytes:
        """ECDH with the platform's COSE key, then the protocol's KDF of the x coordinate."""
        x, y = platform_key.get(-2), platform_key.get(-3)
        if platform_key.get(1) != 2 or platform_key.get(-1) != 1:
            raise CtapError(ERR.INVALID_PARAMETER)
        if not isinstance(x, bytes) or not isinstance(y, bytes):
            raise CtapError(ERR.INVALID_PARAMETER)
        try:
            public_key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError:
            raise CtapError(ERR.INVALID_PARAMETER) from None
        return protocol.kdf(self._key_agreement.exchange(ec.ECDH(), public_key))

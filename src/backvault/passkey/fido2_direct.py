"""Passkeys on a FIDO2 security key, spoken to over CTAP2 without a browser.

backvault is the CTAP2 platform here, through python-fido2's ``Ctap2`` and ``ClientPin``.
Enrolment makes a non-discoverable credential with the hmac-secret extension, so it
takes none of the key's limited storage. The credential id lives in the key slot instead.
Each evaluation is one getAssertion with an hmac-secret salt. User verification is
required in both: built-in verification (a fingerprint, say) when the key has it, the
key's PIN otherwise, so a stolen key alone unlocks nothing.

The salt sent to the key is ``SHA-256("WebAuthn PRF" || 0x00 || prf_salt)``, the mapping
from a PRF input to an hmac-secret salt that the prf extension of WebAuthn Level 3 defines
(python-fido2 2.2.1 applies the same one in ``fido2.ctap2.extensions``). So a
credential gives the same 32 bytes here as a browser's PRF extension returns for the
same ``prf_salt``.

The PIN comes from the file named by ``BACKVAULT_FIDO2_PIN_FILE`` or from a prompt at a
terminal. It is sent to the key only encrypted (the PIN/UV auth protocol of CTAP 2.1),
and never stored or logged.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import secrets
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from fido2 import hid
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.ctap2.base import Ctap2, Info
from fido2.ctap2.extensions import (
    AuthenticationExtensionProcessor,
    Ctap2Extension,
    HMACGetSecretInput,
    HMACGetSecretOutput,
    HmacSecretExtension,
    RegistrationExtensionProcessor,
)
from fido2.ctap2.pin import ClientPin, PinProtocol, PinProtocolV1, PinProtocolV2
from fido2.hid import CAPABILITY, ConnectionFailure
from fido2.hid.base import HidDescriptor
from fido2.webauthn import (
    AuthenticatorData,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRequestOptions,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)

from backvault.errors import PasskeyError, UsageError
from backvault.passkey.slot import PRF_OUTPUT_SIZE, PRF_SALT_SIZE

DEFAULT_RP_ID = "backvault"
RP_NAME = "backvault"
ENV_PIN_FILE = "BACKVAULT_FIDO2_PIN_FILE"
PRF_SALT_PREFIX = b"WebAuthn PRF\x00"  # WebAuthn Level 3, the prf extension
# CTAP 2.1 limits: at least 4 Unicode code points, at most 63 bytes of UTF-8.
MIN_PIN_LENGTH = 4  # characters
MAX_PIN_BYTES = 63  # bytes
COSE_ES256 = -7
COSE_EDDSA = -8
USER_ID_SIZE = 16  # bytes
CLIENT_DATA_HASH_SIZE = 32  # bytes
NO_SLOT_ADDED = "No key slot was added."
TOUCH_PROMPT = "Touch your security key."

Notify = Callable[[str], None]
CredentialChoice = tuple[bytes, bytes]  # (credential_id, prf_salt)


def hmac_secret_salt(prf_salt: bytes) -> bytes:
    """Map a WebAuthn PRF input to the hmac-secret salt a browser would send for it."""
    return hashlib.sha256(PRF_SALT_PREFIX + prf_salt).digest()


def print_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Finding a device ------------------------------------------------------------------------


def find_fido2_device(path: str | None) -> CtapDevice:
    """Open the security key at the hidraw ``path``, or the first FIDO2 key when None.

    The caller closes the device.
    """
    if path is not None:
        return _open_hid_path(path)
    # python-fido2 leaves list_descriptors without type hints.
    descriptors: list[HidDescriptor] = hid.list_descriptors()  # type: ignore[no-untyped-call]
    for descriptor in descriptors:
        try:
            device = hid.open_device(descriptor.path)
        except (OSError, ValueError, ConnectionFailure):
            continue  # not ours to use, or gone since it was listed: try the next one
        if device.capabilities & CAPABILITY.CBOR:
            return device
        device.close()
    raise PasskeyError(
        "no FIDO2 security key found",
        hint="Plug in the security key and run the command again, or give its device with "
        "--fido2-path /dev/hidrawN. On Linux your user needs read and write access to "
        "the key's /dev/hidraw* device, which the udev rules of libfido2 or of the key's "
        "maker grant.",
    )


def _open_hid_path(path: str) -> CtapDevice:
    hint = (
        "Give the hidraw device of a FIDO2 security key, such as /dev/hidraw0, or leave "
        "out the path to use the first security key found."
    )
    try:
        device = hid.open_device(path)
    except FileNotFoundError:
        raise UsageError(f"FIDO2 device {path} does not exist", hint=hint) from None
    except PermissionError:
        raise UsageError(
            f"no permission to open FIDO2 device {path}",
            hint="Your user needs read and write access to it. On Linux, install the udev "
            "rules of libfido2 or of the key's maker, then plug the key in again.",
        ) from None
    except OSError as error:
        raise UsageError(
            f"cannot use {path} as a FIDO2 device: {error.strerror or error}", hint=hint
        ) from None
    except (ValueError, ConnectionFailure) as error:
        raise UsageError(f"{path} is not a FIDO security key: {error}", hint=hint) from None
    if not device.capabilities & CAPABILITY.CBOR:
        device.close()
        raise UsageError(
            f"the security key at {path} supports only U2F (CTAP1), not FIDO2",
            hint="Passkey slots need a FIDO2 security key with the hmac-secret extension.",
        )
    return device


# Enrolment and evaluation ----------------------------------------------------------------


def enrol_fido2(
    device: CtapDevice,
    *,
    rp_id: str = DEFAULT_RP_ID,
    name: str,
    prf_salt: bytes,
    notify: Notify = print_notice,
) -> tuple[bytes, bytes]:
    """Make a credential with hmac-secret on ``device``; return its id and PRF output.

    The output comes from one getAssertion after the credential is made. A key without
    the hmac-secret extension is rejected with PasskeyError before anything is made.
    """
    _check_prf_salt(prf_salt)
    with _device_errors():
        session = _Session(device, rp_id, notify)
        if HmacSecretExtension.NAME not in session.info.extensions:
            raise _no_hmac_secret_error()
        credential_id = _make_credential(session, name)
        return _evaluate(session, [(credential_id, prf_salt)])


def evaluate_fido2(
    device: CtapDevice,
    *,
    rp_id: str = DEFAULT_RP_ID,
    credentials: Sequence[CredentialChoice],
    notify: Notify = print_notice,
) -> tuple[bytes, bytes]:
    """Evaluate the PRF of whichever of ``credentials`` the key holds.

    ``credentials`` pairs each credential id with its PRF input. Returns the id of the
    credential used and its 32-byte PRF output.
    """
    if not credentials:
        raise PasskeyError(
            "the repository has no FIDO2 passkey slot",
            hint="Add one with 'backvault key add-passkey --fido2-device', or unlock with "
            "the recovery key.",
        )
    for _, prf_salt in credentials:
        _check_prf_salt(prf_salt)
    with _device_errors():
        session = _Session(device, rp_id, notify)
        if HmacSecretExtension.NAME not in session.info.extensions:
            raise _no_hmac_secret_for_unlock_error()
        return _evaluate(session, credentials)


def _check_prf_salt(prf_salt: bytes) -> None:
    if len(prf_salt) != PRF_SALT_SIZE:
        raise ValueError(f"a PRF input has {PRF_SALT_SIZE} bytes, not {len(prf_salt)}")


def _no_hmac_secret_error() -> PasskeyError:
    return PasskeyError(
        "this security key cannot protect backups: it does not support the hmac-secret "
        "extension (the FIDO2 form of the WebAuthn PRF extension), which backvault needs "
        "to derive a key from the passkey",
        hint=f"{NO_SLOT_ADDED} Use a FIDO2 security key that lists hmac-secret among its "
        "extensions ('fido2-token -I DEVICE' shows them).",
    )


def _no_hmac_secret_for_unlock_error() -> PasskeyError:
    return PasskeyError(
        "this security key does not support the hmac-secret extension, so no passkey of a "
        "backvault repository can be on it",
        hint="Use the security key the passkey was added with, or unlock with the recovery "
        "key or another key slot.",
    )


def _make_credential(session: _Session, name: str) -> bytes:
    rp = PublicKeyCredentialRpEntity(id=session.rp_id, name=RP_NAME)
    user = PublicKeyCredentialUserEntity(
        id=secrets.token_bytes(USER_ID_SIZE), name=name, display_name=name
    )
    key_types = [
        PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=algorithm)
        for algorithm in (COSE_ES256, COSE_EDDSA)
    ]
    options = PublicKeyCredentialCreationOptions(
        rp=rp,
        user=user,
        challenge=secrets.token_bytes(CLIENT_DATA_HASH_SIZE),
        pub_key_cred_params=key_types,
        extensions={"hmacCreateSecret": True},
    )
    processor: RegistrationExtensionProcessor | None = _hmac_secret_extension().make_credential(
        session.ctap, options, session.protocol
    )
    if processor is None:
        raise _no_hmac_secret_error()

    verification = session.verify_user(ClientPin.PERMISSION.MAKE_CREDENTIAL)
    # Without a browser there is no WebAuthn client data, so a random hash replaces its hash.
    client_data_hash = secrets.token_bytes(CLIENT_DATA_HASH_SIZE)
    pin_uv_param, pin_uv_protocol = verification.authenticate(session.protocol, client_data_hash)
    response = session.ctap.make_credential(
        client_data_hash,
        {"id": session.rp_id, "name": RP_NAME},
        {"id": user.id, "name": name, "displayName": name},
        [{"type": "public-key", "alg": algorithm} for algorithm in (COSE_ES256, COSE_EDDSA)],
        extensions=processor.prepare_inputs(verification.token),
        options=verification.options(),
        pin_uv_param=pin_uv_param,
        pin_uv_protocol=pin_uv_protocol,
        on_keepalive=session.on_keepalive,
    )
    outputs = processor.prepare_outputs(response, verification.token) or {}
    if outputs.get("hmacCreateSecret") is not True:
        raise _no_hmac_secret_error()
    _check_authenticator_data(response.auth_data, session.rp_id)
    credential_data = response.auth_data.credential_data
    if credential_data is None:
        raise PasskeyError(
            "the security key returned no credential for the new passkey",
            hint=f"{NO_SLOT_ADDED} Run the command again; if it fails again, use another key.",
        )
    return bytes(credential_data.credential_id)


def _evaluate(session: _Session, credentials: Sequence[CredentialChoice]) -> tuple[bytes, bytes]:
    verification = session.verify_user(ClientPin.PERMISSION.GET_ASSERTION)
    credential_id, prf_salt = _find_enrolled_credential(session, credentials, verification)
    descriptor = PublicKeyCredentialDescriptor(
        type=PublicKeyCredentialType.PUBLIC_KEY, id=credential_id
    )
    options = PublicKeyCredentialRequestOptions(
        challenge=secrets.token_bytes(CLIENT_DATA_HASH_SIZE),
        rp_id=session.rp_id,
        allow_credentials=[descriptor],
        user_verification=UserVerificationRequirement.REQUIRED,
        extensions={"hmacGetSecret": HMACGetSecretInput(salt1=hmac_secret_salt(prf_salt))},
    )
    # Making the processor runs getKeyAgreement; prepare_inputs encrypts and authenticates
    # the salt with the shared secret, and prepare_outputs decrypts the output.
    processor: AuthenticationExtensionProcessor | None = (
        _hmac_secret_extension().get_assertion(session.ctap, options, session.protocol)
    )
    if processor is None:
        raise _no_hmac_secret_for_unlock_error()

    client_data_hash = secrets.token_bytes(CLIENT_DATA_HASH_SIZE)
    pin_uv_param, pin_uv_protocol = verification.authenticate(session.protocol, client_data_hash)
    response = session.ctap.get_assertion(
        session.rp_id,
        client_data_hash,
        [{"type": "public-key", "id": credential_id}],
        extensions=processor.prepare_inputs(descriptor, verification.token),
        options=verification.options(),
        pin_uv_param=pin_uv_param,
        pin_uv_protocol=pin_uv_protocol,
        on_keepalive=session.on_keepalive,
    )
    _check_authenticator_data(response.auth_data, session.rp_id)
    outputs = processor.prepare_outputs(response, verification.token) or {}
    secret = outputs.get("hmacGetSecret")
    if not isinstance(secret, HMACGetSecretOutput) or len(secret.output1) != PRF_OUTPUT_SIZE:
        raise PasskeyError(
            "the security key returned no hmac-secret output for the passkey",
            hint="The credential was made without hmac-secret, so it cannot unlock this "
            "repository. Unlock with another key slot.",
        )
    return credential_id, bytes(secret.output1)


def _find_enrolled_credential(
    session: _Session,
    credentials: Sequence[CredentialChoice],
    verification: _Verification,
) -> CredentialChoice:
    """Return the first of ``credentials`` the key holds, asking it without user presence.

    One hmac-secret request carries one salt, and each credential has its own, so the
    credential must be known before the real getAssertion. A request with ``up: false``
    collects no touch and, by CTAP 2.1, leaves the PIN/UV token valid for the next request.
    """
    max_length = session.info.max_cred_id_length
    for credential_id, prf_salt in credentials:
        if max_length and len(credential_id) > max_length:
            continue  # longer than this key makes, so not one of its credentials
        client_data_hash = bytes(CLIENT_DATA_HASH_SIZE)
        pin_uv_param, pin_uv_protocol = verification.authenticate(
            session.protocol, client_data_hash
        )
        try:
            session.ctap.get_assertion(
                session.rp_id,
                client_data_hash,
                [{"type": "public-key", "id": credential_id}],
                options={"up": False},
                pin_uv_param=pin_uv_param,
                pin_uv_protocol=pin_uv_protocol,
            )
        except CtapError as error:
            if error.code == CtapError.ERR.NO_CREDENTIALS:
                continue
            raise
        return credential_id, prf_salt
    raise _no_credential_error(len(credentials))


def _no_credential_error(count: int) -> PasskeyError:
    which = "the repository's FIDO2 passkey" if count == 1 else (
        f"any of the repository's {count} FIDO2 passkeys"
    )
    return PasskeyError(
        f"this security key does not hold {which}",
        hint="Use the security key the passkey was added with, or unlock with the recovery "
        "key or another key slot.",
    )


def _check_authenticator_data(auth_data: AuthenticatorData, rp_id: str) -> None:
    if auth_data.rp_id_hash != hashlib.sha256(rp_id.encode("utf-8")).digest():
        raise PasskeyError(
            f"the security key returned a response for another relying party than {rp_id!r}",
            hint="The key does not follow CTAP2; use another security key.",
        )
    if not auth_data.is_user_verified():
        raise PasskeyError(
            "the security key did not verify its user",
            hint="backvault requires the key's PIN or built-in user verification; check the "
            "key's settings and run the command again.",
        )


def _hmac_secret_extension() -> Ctap2Extension:
    # allow_hmac_secret lets the extension take raw hmac-secret salts, so the PRF mapping
    # is applied by hmac_secret_salt, where it can be read and tested. The subclass has no
    # type hints, so it is typed as its base class.
    extension: Ctap2Extension = HmacSecretExtension(  # type: ignore[no-untyped-call]
        allow_hmac_secret=True
    )
    return extension


# User verification -----------------------------------------------------------------------


@dataclass
class _Verification:
    """The proof of user verification for one request.

    With a PIN/UV auth token the request carries pinUvAuthParam, an HMAC of the client
    data hash under the token. A CTAP 2.0 key with built-in verification and no token
    support gets the ``uv`` option instead, and verifies during the request itself.
    """

    token: bytes | None
    built_in: bool = False

    def authenticate(
        self, protocol: PinProtocol, client_data_hash: bytes
    ) -> tuple[bytes | None, int | None]:
        if self.token is None:
            return None, None
        return protocol.authenticate(self.token, client_data_hash), protocol.VERSION

    def options(self) -> dict[str, bool] | None:
        return {"uv": True} if self.built_in else None


@dataclass
class _Session:
    """One conversation with a security key. It reads the PIN at most once."""

    device: CtapDevice
    rp_id: str
    notify: Notify
    ctap: Ctap2 = field(init=False)
    _pin: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.device.capabilities & CAPABILITY.CBOR:
            raise PasskeyError(
                "the security key supports only U2F (CTAP1), not FIDO2",
                hint="Passkey slots need a FIDO2 security key with the hmac-secret extension.",
            )
        self.ctap = Ctap2(self.device)

    @property
    def info(self) -> Info:
        return self.ctap.info

    @cached_property
    def protocol(self) -> PinProtocol:
        # Chosen on first use, so that a key without hmac-secret is reported as such first.
        return _pin_uv_protocol(self.info)

    def on_keepalive(self, status: int) -> None:
        if status == STATUS.UPNEEDED:
            self.notify(TOUCH_PROMPT)

    def verify_user(self, permission: ClientPin.PERMISSION) -> _Verification:
        """Get a PIN/UV auth token for ``permission``, by built-in verification or the PIN.

        CTAP 2.1 takes every permission from a token once it has been used with user
        presence, so each request that needs a touch gets a token of its own.
        """
        options = self.info.options
        if options.get("uv"):
            if options.get("pinUvAuthToken") is not True:
                return _Verification(token=None, built_in=True)
            try:
                return _Verification(token=self._uv_token(permission))
            except CtapError as error:
                if error.code != CtapError.ERR.UV_BLOCKED or not options.get("clientPin"):
                    raise
                self.notify("Built-in user verification is blocked, so the PIN is needed instead.")
        if options.get("clientPin"):
            return _Verification(token=self._pin_token(permission))
        raise _cannot_verify_user_error(self.info)

    def _uv_token(self, permission: ClientPin.PERMISSION) -> bytes:
        client_pin = ClientPin(self.ctap, self.protocol)
        return client_pin.get_uv_token(permission, self.rp_id, on_keepalive=self.on_keepalive)

    def _pin_token(self, permission: ClientPin.PERMISSION) -> bytes:
        pin, source = (self._pin, "") if self._pin is not None else read_pin()
        client_pin = ClientPin(self.ctap, self.protocol)
        try:
            token = client_pin.get_pin_token(pin, permission, self.rp_id)
        except CtapError as error:
            if error.code != CtapError.ERR.PIN_INVALID:
                raise
            retries, _ = client_pin.get_pin_retries()
            raise PasskeyError(
                f"wrong PIN for the security key; {retries} attempts left before the key "
                "blocks its PIN",
                hint=f"Check {source} and run the command again." if source else None,
            ) from None
        self._pin = pin
        return token


def _pin_uv_protocol(info: Info) -> PinProtocol:
    """Pick the newest PIN/UV auth protocol the key supports; hmac-secret needs one."""
    if PinProtocolV2.VERSION in info.pin_uv_protocols:
        return PinProtocolV2()
    if PinProtocolV1.VERSION in info.pin_uv_protocols:
        return PinProtocolV1()
    raise PasskeyError(
        "this security key cannot protect backups: it supports no PIN/UV auth protocol "
        f"that backvault knows (it lists {info.pin_uv_protocols or 'none'}), and the "
        "hmac-secret extension needs one to encrypt its salt and output",
        hint="Use a FIDO2 security key that supports PIN/UV auth protocol 1 or 2.",
    )


def _cannot_verify_user_error(info: Info) -> PasskeyError:
    if "clientPin" in info.options or "uv" in info.options:
        return PasskeyError(
            "the security key has no PIN set and no fingerprint or other built-in user "
            "verification set up",
            hint="backvault requires user verification, so that a stolen key alone "
            "unlocks nothing. Set a PIN with the tool of the key's maker or with "
            "'fido2-token -S DEVICE', then run the command again.",
        )
    return PasskeyError(
        "this security key cannot protect backups: it can verify its user neither by a "
        "PIN nor by a built-in method such as a fingerprint",
        hint="Use a FIDO2 security key that supports a PIN.",
    )


# The PIN ---------------------------------------------------------------------------------


def read_pin() -> tuple[str, str]:
    """Return the PIN and a phrase naming where it came from, for messages.

    The PIN comes from the file named by BACKVAULT_FIDO2_PIN_FILE, which loses one
    trailing line break, or from a prompt when standard input is a terminal. A PIN that
    cannot be valid is rejected here, before it costs one of the key's PIN attempts.
    """
    file_name = os.environ.get(ENV_PIN_FILE)
    if file_name:
        text = _strip_line_break(_read_pin_file(Path(file_name)))
        source = f"the PIN in {file_name} ({ENV_PIN_FILE})"
    elif sys.stdin.isatty():
        text = getpass.getpass("PIN of the security key: ")
        source = "the PIN you typed"
    else:
        raise UsageError(
            "the security key needs its PIN, but no PIN was given",
            hint=f"Set {ENV_PIN_FILE} to a file that contains the PIN, or run the command "
            "in a terminal to be asked for it.",
        )
    # The same PIN typed on two systems must give the same bytes.
    pin = unicodedata.normalize("NFC", text)
    if len(pin) < MIN_PIN_LENGTH:
        raise UsageError(
            f"{source} has {len(pin)} characters; a security key PIN has at least "
            f"{MIN_PIN_LENGTH}",
            hint="Give the key's PIN. Nothing was sent to the key.",
        )
    if len(pin.encode("utf-8")) > MAX_PIN_BYTES:
        raise UsageError(
            f"{source} is {len(pin.encode('utf-8'))} bytes long; a security key PIN has "
            f"at most {MAX_PIN_BYTES}",
            hint=f"Check that {ENV_PIN_FILE} names the PIN file. Nothing was sent to the key.",
        )
    return pin, source


def _strip_line_break(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _read_pin_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"PIN file {path} does not exist", hint=f"Check the path in {ENV_PIN_FILE}."
        ) from None
    except UnicodeDecodeError:
        raise UsageError(
            f"PIN file {path} is not valid UTF-8", hint="Save the PIN as UTF-8 text."
        ) from None
    except OSError as error:
        raise UsageError(
            f"cannot read PIN file {path}: {error.strerror}",
            hint=f"Check the path in {ENV_PIN_FILE}; it must be a readable file.",
        ) from error


# Errors ----------------------------------------------------------------------------------


@contextmanager
def _device_errors() -> Iterator[None]:
    """Translate errors of the key and of its connection into PasskeyError."""
    try:
        yield
    except CtapError as error:
        raise _ctap_error(error) from error
    except (OSError, ConnectionFailure) as error:
        raise PasskeyError(
            f"the connection to the security key failed: {error}",
            hint="Check that the key is plugged in, then run the command again.",
        ) from error


_TRY_AGAIN = "Run the command again and confirm on the security key when it asks."
_CTAP_MESSAGES: dict[int, tuple[str, str]] = {
    CtapError.ERR.NO_CREDENTIALS: (
        "this security key does not hold the repository's FIDO2 passkey",
        "Use the security key the passkey was added with, or unlock with the recovery key "
        "or another key slot.",
    ),
    CtapError.ERR.PIN_BLOCKED: (
        "the security key's PIN is blocked after too many wrong PINs",
        "Only a reset unblocks the key, and a reset deletes its passkeys. Unlock this "
        "repository with the recovery key.",
    ),
    CtapError.ERR.PIN_AUTH_BLOCKED: (
        "the security key takes no more PINs until it is unplugged, after three wrong "
        "PINs in a row",
        "Unplug the security key, plug it in again, and run the command with the right PIN.",
    ),
    CtapError.ERR.PIN_NOT_SET: (
        "the security key has no PIN set",
        "Set a PIN with the tool of the key's maker or with 'fido2-token -S DEVICE'.",
    ),
    CtapError.ERR.PIN_POLICY_VIOLATION: (
        "the security key rejected the PIN because it breaks the key's PIN policy",
        "Check the PIN and run the command again.",
    ),
    CtapError.ERR.UV_BLOCKED: (
        "the security key's built-in user verification is blocked after too many failures",
        "Unlock the key's built-in verification with its PIN, using the tool of its maker.",
    ),
    CtapError.ERR.UV_INVALID: (
        "the security key did not recognise the fingerprint or other verification",
        _TRY_AGAIN,
    ),
    CtapError.ERR.OPERATION_DENIED: ("the request was denied on the security key", _TRY_AGAIN),
    CtapError.ERR.KEEPALIVE_CANCEL: ("the request was cancelled on the security key", _TRY_AGAIN),
    CtapError.ERR.USER_ACTION_TIMEOUT: (
        "the security key timed out waiting for a touch",
        _TRY_AGAIN,
    ),
    CtapError.ERR.ACTION_TIMEOUT: ("the security key timed out waiting for a touch", _TRY_AGAIN),
    CtapError.ERR.TIMEOUT: ("the request to the security key timed out", _TRY_AGAIN),
    CtapError.ERR.UNSUPPORTED_ALGORITHM: (
        "the security key supports neither ES256 nor EdDSA credentials",
        "Use another FIDO2 security key.",
    ),
}


def _ctap_error(error: CtapError) -> PasskeyError:
    known = _CTAP_MESSAGES.get(error.code)
    if known is not None:
        message, hint = known
        return PasskeyError(message, hint=hint)
    return PasskeyError(
        f"the security key failed the request: {error.code.name} (CTAP status "
        f"0x{int(error.code):02X})",
        hint="Run the command again; if it fails again, unlock with the recovery key.",
    )

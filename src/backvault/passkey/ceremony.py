"""The WebAuthn relying party of the passkey pages: ceremonies, options and verification.

A ceremony is one registration or one authentication that a passkey page runs in the
browser. The client starts it with the account's token and gets a ceremony id, which is
the page's only credential: the page fetches the options with it and posts the result
with it. So a ceremony id is stored only as its SHA-256 hash (32 random bytes make a
salt or stretching useless), belongs to one account, expires after
:data:`CEREMONY_LIFETIME` seconds and is used up by the first finish, whether that
finish verifies or not.

The options carry the PRF salts that the page puts in the ``prf`` extension. The PRF
output itself never reaches the server: a finish whose ``clientExtensionResults`` still
contains ``prf.results`` is rejected. Verification is py_webauthn's, with user verification
required. This module needs the server's extra packages (py_webauthn, SQLAlchemy).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import options_to_json_dict, parse_authentication_credential_json
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from backvault.server.metadata import Account, Metadata, PasskeyCeremony, PasskeyCredential

CEREMONY_LIFETIME = 300  # seconds from the start of a ceremony to its last possible finish
CEREMONY_ID_BYTES = 32
CHALLENGE_BYTES = 32
USER_HANDLE_BYTES = 32
PRF_SALT_BYTES = 32
MAX_CREDENTIAL_ID_BYTES = 1023  # the WebAuthn limit on credential ids
MAX_CREDENTIALS = 32  # credentials offered in one authentication
MAX_NAME_LENGTH = 200  # characters; the length of the passkey_credentials.name column
BROWSER_TIMEOUT_MS = 120_000  # the browser's prompt timeout, which browsers treat as a hint
RELYING_PARTY_NAME = "backvault"
# Preferred first; authenticators pick the first they support.
SUPPORTED_ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]

CeremonyKind = Literal["register", "authenticate"]

BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class PasskeyVerificationError(Exception):
    """A finish was rejected: its credential did not verify, or the body was not allowed.

    The message is plain text for the page that posted the finish.
    """


class CeremonyNotFoundError(Exception):
    """No open ceremony has this id: it is unknown, already used or expired."""


class PasskeyNotFoundError(Exception):
    """The account has no passkey with a requested credential id."""


class InvalidPasskeyRequestError(ValueError):
    """A value in a request to start a ceremony is invalid; the message names it."""


@dataclass(frozen=True)
class CredentialRequest:
    """A credential offered in an authentication, with the PRF salt of its key slot."""

    credential_id: bytes
    prf_salt: bytes


@dataclass(frozen=True)
class FinishedCeremony:
    kind: CeremonyKind
    account_id: int
    credential_id: bytes


def encode_base64url(data: bytes) -> str:
    """Encode as base64url without padding, the form of binary values in WebAuthn JSON."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64url(value: object, name: str) -> bytes:
    """Decode unpadded base64url; raise InvalidPasskeyRequestError naming ``name`` if invalid."""
    if not isinstance(value, str) or BASE64URL.fullmatch(value) is None or len(value) % 4 == 1:
        raise InvalidPasskeyRequestError(f"{name} is not valid base64url without padding")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidPasskeyRequestError(
            f"{name} is not valid base64url without padding"
        ) from None


def hash_ceremony_id(ceremony_id: str) -> str:
    return hashlib.sha256(ceremony_id.encode("utf-8")).hexdigest()


class RelyingParty:
    """Starts and finishes the passkey ceremonies of every account on one server."""

    def __init__(
        self, metadata: Metadata, *, rp_id: str, origin: str,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.metadata = metadata
        self.rp_id = rp_id
        self.origin = origin
        self._clock = clock  # nanoseconds since the epoch; tests move it forward

    # Starting ---------------------------------------------------------------------------

    def start_registration(self, account: Account, name: str, prf_salt: bytes) -> str:
        """Start registering a passkey called ``name``; return the new ceremony id."""
        name = _checked_name(name)
        _check_prf_salt(prf_salt, "prf_salt")
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=RELYING_PARTY_NAME,
            user_name=account.name,
            user_display_name=f"{account.name}: {name}",
            # A new user handle for each passkey: a second passkey of the account on the
            # same authenticator must not replace the first one's discoverable credential.
            user_id=secrets.token_bytes(USER_HANDLE_BYTES),
            challenge=challenge,
            timeout=BROWSER_TIMEOUT_MS,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            supported_pub_key_algs=SUPPORTED_ALGORITHMS,
        )
        page_options = options_to_json_dict(options)
        page_options["prf_salt"] = encode_base64url(prf_salt)
        return self._store("register", account, challenge, name, page_options)

    def start_authentication(
        self, account: Account, credentials: list[CredentialRequest]
    ) -> str:
        """Start an authentication with one of ``credentials``; return the ceremony id.

        Raises PasskeyNotFoundError if one of them is not a passkey of the account.
        """
        if not 0 < len(credentials) <= MAX_CREDENTIALS:
            raise InvalidPasskeyRequestError(
                f"credentials must list 1 to {MAX_CREDENTIALS} passkeys, not {len(credentials)}"
            )
        for index, credential in enumerate(credentials):
            _check_prf_salt(credential.prf_salt, f"credentials[{index}].prf_salt")
            found = self.metadata.find_passkey_credential(account.id, credential.credential_id)
            if found is None:
                raise PasskeyNotFoundError(
                    f"this account has no passkey {encode_base64url(credential.credential_id)}"
                )
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            timeout=BROWSER_TIMEOUT_MS,
            allow_credentials=[
                PublicKeyCredentialDescriptor(id=credential.credential_id)
                for credential in credentials
            ],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        page_options = options_to_json_dict(options)
        page_options["prf_salts"] = {
            encode_base64url(credential.credential_id): encode_base64url(credential.prf_salt)
            for credential in credentials
        }
        return self._store("authenticate", account, challenge, "", page_options)

    def _store(
        self, kind: CeremonyKind, account: Account, challenge: bytes, name: str,
        page_options: dict[str, Any],
    ) -> str:
        ceremony_id = secrets.token_urlsafe(CEREMONY_ID_BYTES)
        now_ns = self._clock()
        ceremony = PasskeyCeremony(
            account_id=account.id, kind=kind, challenge=challenge, name=name,
            page_options=json.dumps(page_options),
            expires_ns=now_ns + CEREMONY_LIFETIME * 1_000_000_000,
        )
        self.metadata.add_passkey_ceremony(hash_ceremony_id(ceremony_id), ceremony, now_ns)
        return ceremony_id

    # The page's side ---------------------------------------------------------------------

    def page_options(self, ceremony_id: str) -> dict[str, Any]:
        """Return ``{"kind", "options"}`` for the page of an open ceremony.

        Raises CeremonyNotFoundError if the ceremony is unknown, used or expired.
        """
        ceremony = self.metadata.find_passkey_ceremony(
            hash_ceremony_id(ceremony_id), self._clock()
        )
        if ceremony is None:
            raise CeremonyNotFoundError(ceremony_id)
        return {"kind": ceremony.kind, "options": json.loads(ceremony.page_options)}

    def finish(self, ceremony_id: str, credential: object) -> FinishedCeremony:
        """Use up the ceremony and verify ``credential``, the page's PublicKeyCredential JSON.

        A registration stores the new passkey, an authentication updates the stored sign
        count and last use. Raises CeremonyNotFoundError if the ceremony is not open and
        PasskeyVerificationError for any credential that is not accepted.
        """
        ceremony = self.metadata.claim_passkey_ceremony(
            hash_ceremony_id(ceremony_id), self._clock()
        )
        if ceremony is None:
            raise CeremonyNotFoundError(ceremony_id)
        if not isinstance(credential, dict):
            raise PasskeyVerificationError("the credential is not a JSON object")
        reject_prf_results(credential)
        if ceremony.kind == "register":
            credential_id = self._finish_registration(ceremony, credential)
            self.metadata.note_ceremony_credential(hash_ceremony_id(ceremony_id), credential_id)
            return FinishedCeremony("register", ceremony.account_id, credential_id)
        credential_id = self._finish_authentication(ceremony, credential)
        return FinishedCeremony("authenticate", ceremony.account_id, credential_id)

    def undo_registration(self, ceremony_id: str) -> None:
        """Delete the passkey that a finished, unexpired registration ceremony stored.

        The page calls this when the command that started the ceremony no longer takes
        its result (stopped with Ctrl-C, or timed out), so that no passkey without a key
        slot is left on the server. Raises CeremonyNotFoundError if there is nothing to
        undo.
        """
        taken = self.metadata.take_ceremony_credential(
            hash_ceremony_id(ceremony_id), self._clock()
        )
        if taken is None:
            raise CeremonyNotFoundError(ceremony_id)
        account_id, credential_id = taken
        self.metadata.delete_passkey_credential(account_id, credential_id)

    def _finish_registration(
        self, ceremony: PasskeyCeremony, credential: dict[str, Any]
    ) -> bytes:
        # The browser reports PRF support only here; the check at the page is repeated so
        # that no credential without PRF is ever stored.
        if not _prf_enabled(credential):
            raise PasskeyVerificationError(
                "this passkey does not support the PRF extension, so it cannot protect "
                "backups; it was not saved"
            )
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=ceremony.challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
                supported_pub_key_algs=SUPPORTED_ALGORITHMS,
            )
        except (WebAuthnException, ValueError) as error:
            raise PasskeyVerificationError(f"the new passkey did not verify: {error}") from None

        stored = self.metadata.add_passkey_credential(PasskeyCredential(
            credential_id=verified.credential_id, account_id=ceremony.account_id,
            public_key=verified.credential_public_key, sign_count=verified.sign_count,
            name=ceremony.name, prf=True, created_ns=self._clock(), last_used_ns=None,
        ))
        if not stored:
            raise PasskeyVerificationError("this passkey is already registered on the server")
        return verified.credential_id

    def _finish_authentication(
        self, ceremony: PasskeyCeremony, credential: dict[str, Any]
    ) -> bytes:
        try:
            parsed = parse_authentication_credential_json(credential)
        except (WebAuthnException, ValueError) as error:
            raise PasskeyVerificationError(f"the passkey's response is invalid: {error}") from None

        offered = json.loads(ceremony.page_options)["prf_salts"]
        stored = self.metadata.find_passkey_credential(ceremony.account_id, parsed.raw_id)
        if encode_base64url(parsed.raw_id) not in offered or stored is None:
            raise PasskeyVerificationError(
                "the browser returned a passkey that this request did not offer"
            )
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=ceremony.challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=stored.public_key,
                credential_current_sign_count=stored.sign_count,
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError) as error:
            raise PasskeyVerificationError(f"the passkey did not verify: {error}") from None

        if not self.metadata.record_passkey_use(
            ceremony.account_id, stored.credential_id, verified.new_sign_count, self._clock()
        ):
            raise PasskeyVerificationError("the passkey was deleted on the server meanwhile")
        return stored.credential_id


def reject_prf_results(credential: dict[str, Any]) -> None:
    """Raise PasskeyVerificationError if ``credential`` contains PRF results.

    A PRF result is the secret that unlocks a key slot, so it must never reach the
    server; the pages remove it before they post.
    """
    extensions = credential.get("clientExtensionResults")
    if extensions is None:
        return
    if not isinstance(extensions, dict):
        raise PasskeyVerificationError("clientExtensionResults is not a JSON object")
    prf = extensions.get("prf")
    if isinstance(prf, dict) and "results" in prf:
        raise PasskeyVerificationError(
            "the request contains PRF results, which must never be sent to the server"
        )


def _prf_enabled(credential: dict[str, Any]) -> bool:
    extensions = credential.get("clientExtensionResults")
    prf = extensions.get("prf") if isinstance(extensions, dict) else None
    return isinstance(prf, dict) and prf.get("enabled") is True


def _checked_name(name: str) -> str:
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidPasskeyRequestError(
            f"invalid passkey name {name[:MAX_NAME_LENGTH]!r}: use 1 to {MAX_NAME_LENGTH} "
            "printable characters"
        )
    return name


def _check_prf_salt(salt: bytes, name: str) -> None:
    if len(salt) != PRF_SALT_BYTES:
        raise InvalidPasskeyRequestError(
            f"{name} must be {PRF_SALT_BYTES} bytes, not {len(salt)}"
        )

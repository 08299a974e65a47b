"""Passkey key slots on the command line: ``key add-passkey``, unlocking with a passkey,
and the passkey details that ``key list`` and ``key remove`` need.

A passkey is reached in one of two ways:

- In a browser (the default). A backvault server is the WebAuthn relying party and serves
  the enrol and unlock pages. The command starts a ceremony on the server with the
  account's token (``BACKVAULT_TOKEN`` or ``backvault login``), listens on 127.0.0.1 for
  the page's result (:mod:`backvault.passkey.handoff`), prints the page's address and
  opens it in a browser unless ``--no-browser`` is given.
- With ``--fido2-device`` (``--fido2-path PATH`` names the key), over CTAP2 to a USB
  security key, with no browser and no server (:mod:`backvault.passkey.fido2_direct`).

Every command that opens a repository unlocks it with a passkey when ``--passkey`` or
``--fido2-device`` is given, or ``BACKVAULT_PASSKEY=1`` is set, unless
``--recovery-key-file`` names a recovery key. ``key add-passkey`` unlocks with the
recovery key or the password first, or with another passkey through ``--passkey``.

The HTTP, hand-off and FIDO2 modules are imported inside the functions that use them, so
commands that need no passkey start without loading them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from backvault import api
from backvault.cli.credentials import load_recovery_key, recovery_key_source
from backvault.cli.output import format_time, print_json
from backvault.cli.password_commands import password_unlock_requested, unlock_with_password
from backvault.crypto.slots import KeySlot
from backvault.errors import (
    BackvaultError,
    IntegrityError,
    PasskeyError,
    UsageError,
    WrongKeyError,
)
from backvault.passkey.slot import (
    KIND_PASSKEY,
    MAX_CREDENTIAL_ID_SIZE,
    METHOD_FIDO2,
    METHOD_WEBAUTHN,
    PRF_OUTPUT_SIZE,
    PasskeySlotInfo,
    check_new_passkey_slot,
    create_passkey_slot,
    new_prf_salt,
    open_passkey_slot,
    passkey_slot_info,
)
from backvault.repository.repository import Repository

if TYPE_CHECKING:
    from fido2.ctap import CtapDevice

    from backvault.passkey.client import Ceremony, PasskeyServerClient

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

ENV_PASSKEY = "BACKVAULT_PASSKEY"
DEFAULT_PASSKEY_NAME = "passkey"
MAX_NAME_LENGTH = 200  # characters; the server stores names up to this length
FIDO2_RP_ID = "backvault"  # the relying party id of passkeys made with --fido2-device
MAX_OFFERED_CREDENTIALS = 32  # passkeys one unlock may offer; the server's limit
MAX_HANDOFF_WAIT = 300.0  # seconds to wait for the browser, at most a ceremony's life
BROWSER_PLATFORMS = ("darwin", "win32")  # where a desktop browser can be assumed


def add_unlock_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that unlock a repository with a passkey."""
    parser.add_argument(
        "--passkey", action="store_true",
        help=f"unlock with a passkey in a browser (default: on when ${ENV_PASSKEY} is 1)",
    )
    parser.add_argument(
        "--fido2-device", action="store_true",
        help="use a passkey on a FIDO2 security key over USB, with no browser (the first "
        "security key found, or the one --fido2-path names)",
    )
    parser.add_argument(
        "--fido2-path", metavar="PATH",
        help="hidraw device of the security key, such as /dev/hidraw3; implies --fido2-device",
    )
    parser.add_argument(
        "--no-browser", action="store_true",
        help="print the address of the passkey page instead of opening a browser",
    )


def register(key_commands: SubParsers, common: argparse.ArgumentParser) -> None:
    """Add ``add-passkey`` to ``backvault key``."""
    add = key_commands.add_parser(
        "add-passkey", parents=[common], help="protect the repository with a passkey too",
        description="Create a passkey with the PRF extension and add a key slot that it "
        "opens. By default a backvault server's page runs the passkey ceremony in a "
        "browser; with --fido2-device a USB security key is used directly. The repository "
        "is unlocked first with the recovery key, the password, or (with --passkey) "
        "another passkey.",
    )
    add.add_argument(
        "--name", metavar="NAME",
        help=f"name of the passkey, shown by 'key list' (default: {DEFAULT_PASSKEY_NAME})",
    )
    add.add_argument(
        "--server", metavar="URL",
        help="backvault server whose pages run the ceremony, such as https://HOST:PORT "
        "(default: the server of a repository on a backvault server; required for other "
        "repositories unless --fido2-device is given)",
    )
    add.set_defaults(handler=command_key_add_passkey)


# Unlocking ------------------------------------------------------------------------------


def passkey_requested_by_environment() -> bool:
    value = os.environ.get(ENV_PASSKEY, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise UsageError(
        f"invalid value {ENV_PASSKEY}={value!r}",
        hint=f"Set {ENV_PASSKEY}=1 to unlock with a passkey, or unset it.",
    )


def fido2_device_choice(args: argparse.Namespace) -> str | None:
    """Return the security key's path, "" for the first one found, or None for no key."""
    path: str | None = getattr(args, "fido2_path", None)
    if path:
        return path
    return "" if getattr(args, "fido2_device", False) else None


def passkey_unlock_requested(args: argparse.Namespace) -> bool:
    """Decide whether a command opens the repository with a passkey.

    Yes for ``--passkey``, ``--fido2-device`` or ``BACKVAULT_PASSKEY=1``, unless
    ``--recovery-key-file`` is given: an option on the command line wins over the
    environment.
    """
    if getattr(args, "recovery_key_file", None):
        return False
    if getattr(args, "passkey", False) or fido2_device_choice(args) is not None:
        return True
    return passkey_requested_by_environment()


def unlock_with_passkey(repository: Repository, args: argparse.Namespace) -> None:
    """Unlock ``repository`` through one of its passkey slots."""
    slots = passkey_slots(repository)
    device_path = fido2_device_choice(args)
    if device_path is not None:
        _unlock_with_fido2(repository, slots, device_path or None)
    else:
        _unlock_in_browser(repository, slots, no_browser=getattr(args, "no_browser", False))


def passkey_slots(repository: Repository) -> list[tuple[KeySlot, PasskeySlotInfo]]:
    """Return the passkey slots with their checked parameters; raise if there are none."""
    found: list[tuple[KeySlot, PasskeySlotInfo]] = []
    damage: list[IntegrityError] = []
    for slot in repository.key_slots():
        if slot.kind != KIND_PASSKEY:
            continue
        try:
            found.append((slot, passkey_slot_info(slot)))
        except IntegrityError as error:
            damage.append(error)
    if not found and damage:
        raise damage[0]
    if not found:
        raise UsageError(
            "the repository has no passkey slot",
            hint=f"Open it with the recovery key or the password (without --passkey, "
            f"--fido2-device and {ENV_PASSKEY}), or add a passkey with "
            "'backvault key add-passkey'.",
        )
    return found


def _unlock_in_browser(
    repository: Repository, slots: list[tuple[KeySlot, PasskeySlotInfo]], *, no_browser: bool
) -> None:
    from backvault.passkey.client import PasskeyServerClient, encode_base64url

    in_browser = [(slot, info) for slot, info in slots if info.method == METHOD_WEBAUTHN]
    if not in_browser:
        raise UsageError(
            "the passkeys of this repository are on security keys, which the browser does "
            "not reach here",
            hint="Unlock with --fido2-device and the security key plugged in.",
        )
    server = _choose_server(in_browser, repository.backend.location)
    on_server = [(slot, info) for slot, info in in_browser if info.server == server]
    with PasskeyServerClient(server) as client:
        known = {str(entry.get("id")) for entry in client.list_passkeys()}
        offered = [
            (slot, info) for slot, info in on_server
            if encode_base64url(info.credential_id) in known
        ]
        if not offered:
            raise PasskeyError(
                f"the backvault server {server} no longer has the passkeys of this "
                "repository's key slots",
                hint="Open the repository with the recovery key, remove those slots with "
                "'backvault key remove', and add a passkey again.",
            )
        # The newest passkeys are the likeliest to be at hand.
        offered = offered[-MAX_OFFERED_CREDENTIALS:]
        ceremony = client.start_authentication(
            [(info.credential_id, info.prf_salt) for _, info in offered]
        )
        result = run_browser_handoff(
            ceremony, action="unlock the repository", no_browser=no_browser, unlocking=True
        )
    answer = decode_handoff_result(result, "authenticate")
    for slot, info in offered:
        if info.credential_id == answer.credential_id:
            _open_with_prf_output(repository, slot, answer.prf_output)
            return
    raise PasskeyError(
        "the browser returned a passkey that no key slot of this repository uses",
        hint="Run the command again and choose the passkey you added to this repository.",
    )


def _choose_server(slots: list[tuple[KeySlot, PasskeySlotInfo]], location: str) -> str:
    """Return the server to unlock through: the repository's own if it has passkeys there.

    NOTE: with passkeys on several servers, only one server is asked: the repository's
    own, or else the server of the oldest passkey slot.
    """
    servers = [info.server for _, info in slots]
    if location.startswith(("http://", "https://")):
        own = default_server(location)
        if own in servers:
            return own
    return servers[0]


def _unlock_with_fido2(
    repository: Repository, slots: list[tuple[KeySlot, PasskeySlotInfo]], device_path: str | None
) -> None:
    """Unlock with a security key, asked once for the credentials of one relying party.

    Slots made with --fido2-device come first. A browser passkey made on a security key
    works here too, because both ways send the same hmac-secret salt, so its slots are
    tried when there are no fido2 slots. The key is asked only once, because a wrong PIN
    typed for each try would use up the key's PIN retries.
    """
    from backvault.passkey.fido2_direct import evaluate_fido2, find_fido2_device

    fido2_slots = [(slot, info) for slot, info in slots if info.method == METHOD_FIDO2]
    candidates = fido2_slots or slots
    rp_id = candidates[0][1].rp_id
    chosen = [(slot, info) for slot, info in candidates if info.rp_id == rp_id]

    device = find_fido2_device(device_path)
    try:
        credential_id, prf_output = evaluate_fido2(
            device, rp_id=rp_id, credentials=[(info.credential_id, info.prf_salt)
                                              for _, info in chosen],
        )
    finally:
        device.close()
    for slot, info in chosen:
        if info.credential_id == credential_id:
            _open_with_prf_output(repository, slot, prf_output)
            return
    raise PasskeyError(
        "the security key returned a credential that no key slot of this repository uses",
        hint="Plug in the security key you added to this repository.",
    )


def _open_with_prf_output(repository: Repository, slot: KeySlot, prf_output: bytes) -> None:
    try:
        master_key = open_passkey_slot(slot, prf_output, repository.repository_id)
    except IntegrityError:
        raise WrongKeyError(
            f"the PRF output of passkey {slot.label!r} does not open key slot {slot.name}",
            hint="The slot may be damaged. Open the repository with the recovery key and "
            "run 'backvault check'.",
        ) from None
    repository.unlock_with_master_key(master_key)


# The browser hand-off -------------------------------------------------------------------


@dataclass(frozen=True)
class PasskeyAnswer:
    """A page's successful result: the credential used and its PRF outputs."""

    credential_id: bytes
    prf_output: bytes
    prf_output_at_creation: bytes | None  # register only, when the authenticator gave one


def run_browser_handoff(
    ceremony: Ceremony, *, action: str, no_browser: bool, unlocking: bool = False
) -> dict[str, Any]:
    """Show the ceremony's page to the user and return what the page posts back."""
    from backvault.passkey.handoff import Handoff, origin_of

    try:
        origin = origin_of(ceremony.page)
    except ValueError:
        raise BackvaultError(
            f"the backvault server returned an invalid page address {ceremony.page!r}",
            hint="Check the server's --passkey-origin setting.",
        ) from None
    timeout = min(ceremony.expires_in, MAX_HANDOFF_WAIT)
    with Handoff(origin, timeout=timeout, unlocking=unlocking) as handoff:
        url = page_address(ceremony.page, ceremony.ceremony_id, handoff.port, handoff.state)
        print(f"Open this address in a browser to {action}: {url}", file=sys.stderr, flush=True)
        if not no_browser:
            _open_browser(url)
        print(
            f"Waiting for the browser (at most {timeout / 60:.0f} minutes; press Ctrl+C to "
            "stop)...", file=sys.stderr, flush=True,
        )
        return handoff.wait()


def page_address(page: str, ceremony_id: str, port: int, state: str) -> str:
    """Put the ceremony, the loopback port and the state in the fragment of ``page``.

    A fragment never reaches the server, so the state stays between the page and the CLI.
    """
    base = page.partition("#")[0]
    return base + "#" + urlencode({"ceremony": ceremony_id, "port": str(port), "state": state})


def _open_browser(url: str) -> None:
    # Without a desktop, Python's webbrowser would start a text browser such as lynx in
    # this terminal, which cannot run passkeys.
    has_desktop = sys.platform in BROWSER_PLATFORMS or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    opened = False
    if has_desktop:
        import webbrowser

        try:
            opened = webbrowser.open(url, new=2)
        except webbrowser.Error:
            opened = False
    if not opened:
        print(
            "No browser was started here: open the address above in a browser on this "
            "computer.", file=sys.stderr, flush=True,
        )


def decode_handoff_result(result: dict[str, Any], kind: str) -> PasskeyAnswer:
    """Check and decode a page's result; raise HandoffError if it is not a valid one."""
    from backvault.passkey.client import decode_base64url
    from backvault.passkey.handoff import ERROR_TEXT, HandoffError

    if result.get("kind") != kind:
        raise HandoffError(
            f"the passkey page sent a result of kind {result.get('kind')!r}, not {kind!r}",
            hint="Open the address that this command printed, not an older one.",
        )
    if kind == "register" and result.get("prf") is None:
        message, hint = ERROR_TEXT["no-prf"]
        raise HandoffError(message, hint=hint, code="no-prf")
    try:
        credential_id = decode_base64url(result.get("credential_id"))
        prf_output = decode_base64url(result.get("prf"))
        at_creation = result.get("prf_create")
        prf_at_creation = None if at_creation is None else decode_base64url(at_creation)
    except ValueError:
        raise _invalid_result("a value is not base64url") from None
    if not 0 < len(credential_id) <= MAX_CREDENTIAL_ID_SIZE:
        raise _invalid_result(f"the credential id has {len(credential_id)} bytes")
    for output in (prf_output, prf_at_creation):
        if output is not None and len(output) != PRF_OUTPUT_SIZE:
            raise _invalid_result(f"a PRF output has {len(output)} bytes, not {PRF_OUTPUT_SIZE}")
    return PasskeyAnswer(credential_id, prf_output, prf_at_creation)


def _invalid_result(problem: str) -> BackvaultError:
    from backvault.passkey.handoff import HandoffError

    return HandoffError(
        f"the passkey page sent an invalid result: {problem}",
        hint="Check that the server runs the same backvault version, and run the command "
        "again.",
    )


def _credential_id_of(result: dict[str, Any]) -> bytes | None:
    """Return the credential id a page posted, or None if it is missing or invalid."""
    from backvault.passkey.client import decode_base64url

    try:
        return decode_base64url(result.get("credential_id")) or None
    except ValueError:
        return None


# key add-passkey ------------------------------------------------------------------------


def command_key_add_passkey(args: argparse.Namespace) -> int:
    # commands imports this module, so it is imported here rather than at the top.
    from backvault.cli.commands import repository_location
    from backvault.passkey.client import PasskeyServerClient

    location = repository_location(args)
    name = _checked_name(args.name)
    repository = api.open_repository(location)
    device_path = fido2_device_choice(args)
    if device_path is not None:
        if args.server:
            raise UsageError(
                "--server and --fido2-device do not go together: a security key is used "
                "directly, with no server",
                hint="Leave out --server, or leave out --fido2-device to use a browser.",
            )
        _unlock_for_enrolment(args, repository)
        slot = _enrol_fido2(repository, device_path or None, name)
    else:
        server = args.server or default_server(location)
        # The client finds the account's token now, before anything is unlocked.
        with PasskeyServerClient(server) as client:
            _unlock_for_enrolment(args, repository)
            slot = _enrol_in_browser(
                repository, client, server, name, no_browser=args.no_browser
            )
    _print_added(args, slot)
    return 0


def default_server(location: str) -> str:
    """Return the server of a repository on a backvault server, as a server address."""
    from backvault.storage.http import split_address

    if not location.startswith(("http://", "https://")):
        raise UsageError(
            "this repository is not on a backvault server, so no server for the passkey "
            "pages is implied",
            hint="Name the server that runs the passkey pages with --server "
            "https://HOST:PORT, or use a security key with --fido2-device.",
        )
    origin, prefix, _ = split_address(location)
    return origin + prefix


def _checked_name(name: str | None) -> str:
    if name is None:
        return DEFAULT_PASSKEY_NAME
    stripped = name.strip()
    if not 0 < len(stripped) <= MAX_NAME_LENGTH or not stripped.isprintable():
        raise UsageError(
            f"invalid passkey name {name[:MAX_NAME_LENGTH]!r}",
            hint=f"Give --name 1 to {MAX_NAME_LENGTH} printable characters.",
        )
    return stripped


def _unlock_for_enrolment(args: argparse.Namespace, repository: Repository) -> None:
    """Unlock with the recovery key, the password, or with --passkey another passkey."""
    if recovery_key_source(args.recovery_key_file) is None:
        if args.passkey or passkey_requested_by_environment():
            _unlock_in_browser(repository, passkey_slots(repository), no_browser=args.no_browser)
            return
        if password_unlock_requested(args.recovery_key_file, repository):
            unlock_with_password(repository)
            return
    repository.unlock_with_recovery_key(load_recovery_key(args.recovery_key_file))


def _enrol_in_browser(
    repository: Repository, client: PasskeyServerClient, server: str, name: str, *,
    no_browser: bool,
) -> KeySlot:
    """Create a passkey through the server's enrol page and store its slot.

    The page has created the server's credential when it posts a result. If anything fails
    after that, the credential is deleted again: without a slot it opens nothing.
    """
    from backvault.passkey.handoff import HandoffError

    prf_salt = new_prf_salt()
    ceremony = client.start_registration(name, prf_salt)
    rp_id = client.ceremony_rp_id(ceremony.ceremony_id)
    try:
        result = run_browser_handoff(
            ceremony, action="create the passkey", no_browser=no_browser
        )
    except HandoffError as error:
        # A page that failed after the server stored the passkey names it in its post.
        stored_id = _credential_id_of(error.posted or {})
        if stored_id is not None:
            _delete_server_passkey(client, stored_id)
        raise

    credential_id = _credential_id_of(result)
    try:
        answer = decode_handoff_result(result, "register")
        # NOTE: when the authenticator gives no PRF output at creation, the slot is made
        # and checked with the same output, so the check covers the stored form only.
        slot = create_passkey_slot(
            answer.prf_output_at_creation or answer.prf_output, repository.master_key,
            repository.repository_id, method=METHOD_WEBAUTHN, rp_id=rp_id, server=server,
            credential_id=answer.credential_id, prf_salt=prf_salt, name=name,
        )
        _check_and_store(repository, slot, answer.prf_output)
    except BaseException:
        if credential_id is not None:
            _delete_server_passkey(client, credential_id)
        raise
    return slot


def _enrol_fido2(repository: Repository, device_path: str | None, name: str) -> KeySlot:
    """Create a credential on a security key and store its slot.

    The key is asked for the PRF output twice, once in enrolment and once more to check
    the new slot, so the user touches it (or types its PIN) more than once.
    """
    from backvault.passkey.fido2_direct import enrol_fido2, evaluate_fido2, find_fido2_device

    prf_salt = new_prf_salt()
    device: CtapDevice = find_fido2_device(device_path)
    try:
        credential_id, prf_output = enrol_fido2(
            device, rp_id=FIDO2_RP_ID, name=name, prf_salt=prf_salt
        )
        slot = create_passkey_slot(
            prf_output, repository.master_key, repository.repository_id, method=METHOD_FIDO2,
            rp_id=FIDO2_RP_ID, server="", credential_id=credential_id, prf_salt=prf_salt,
            name=name,
        )
        _, second_output = evaluate_fido2(
            device, rp_id=FIDO2_RP_ID, credentials=[(credential_id, prf_salt)]
        )
    finally:
        device.close()
    _check_and_store(repository, slot, second_output)
    return slot


def _check_and_store(repository: Repository, slot: KeySlot, second_output: bytes) -> None:
    """Store ``slot`` only after its stored form opened with a second PRF output."""
    try:
        check_new_passkey_slot(
            slot, second_output, repository.master_key, repository.repository_id
        )
    except IntegrityError:
        raise PasskeyError(
            f"the passkey {slot.label!r} gave a different output when asked again, so a key "
            "slot made from it would not open the repository",
            hint="No key slot was added. Run the command again; if it fails again, this "
            "authenticator cannot protect backups.",
        ) from None
    repository.add_key_slot(slot)


def _delete_server_passkey(client: PasskeyServerClient, credential_id: bytes) -> None:
    try:
        client.delete_passkey(credential_id)
    except BackvaultError as error:
        print(
            f"warning: the new passkey could not be deleted from the server {client.url}: "
            f"{error.message}. It opens nothing without its key slot; delete it there later.",
            file=sys.stderr,
        )


def _print_added(args: argparse.Namespace, slot: KeySlot) -> None:
    from backvault.passkey.client import encode_base64url

    info = passkey_slot_info(slot)
    if args.json:
        print_json({
            "slot": slot.name, "kind": slot.kind, "name": info.name, "method": info.method,
            "rp_id": info.rp_id, "server": info.server or None,
            "credential_id": encode_base64url(info.credential_id),
        })
        return
    where = f"through {info.server}" if info.method == METHOD_WEBAUTHN else "on a security key"
    print(f"added passkey key slot {slot.name} ({info.name!r}, {info.method} {where})")
    print("keep the recovery key too: it is the way back if the passkey is lost")


# key list and key remove ----------------------------------------------------------------


def passkey_listing(slots: list[KeySlot]) -> dict[str, dict[str, Any]]:
    """Describe the passkey slots among ``slots`` for ``key list``, keyed by slot name.

    Each entry has ``method``, ``last_used`` (ISO 8601 or None) and
    ``last_used_recorded``. A webauthn passkey's last use comes from its server's passkey
    list, read once per server. A security key keeps no record of its use, so fido2
    entries have none. If a server cannot be reached, a warning is printed and the last
    use is left unknown.
    """
    listing: dict[str, dict[str, Any]] = {}
    server_lists: dict[str, dict[str, dict[str, Any]] | None] = {}
    for slot in slots:
        if slot.kind != KIND_PASSKEY:
            continue
        try:
            info = passkey_slot_info(slot)
        except IntegrityError:
            listing[slot.name] = {"method": None, "last_used": None,
                                  "last_used_recorded": False, "state": "damaged"}
            continue
        entry: dict[str, Any] = {
            "method": info.method, "last_used": None,
            "last_used_recorded": info.method == METHOD_WEBAUTHN,
        }
        if info.method == METHOD_WEBAUTHN:
            entry["server"] = info.server
            if info.server not in server_lists:
                server_lists[info.server] = _read_server_passkeys(info.server)
            entry.update(_server_state(server_lists[info.server], info.credential_id))
        listing[slot.name] = entry
    return listing


def _read_server_passkeys(server: str) -> dict[str, dict[str, Any]] | None:
    from backvault.passkey.client import PasskeyServerClient

    try:
        with PasskeyServerClient(server) as client:
            return {str(entry.get("id")): entry for entry in client.list_passkeys()}
    except BackvaultError as error:
        print(f"warning: cannot read the passkeys of {server}, so their last use is not "
              f"shown: {error.message}", file=sys.stderr)
        return None


def _server_state(
    passkeys: dict[str, dict[str, Any]] | None, credential_id: bytes
) -> dict[str, Any]:
    from backvault.passkey.client import encode_base64url

    if passkeys is None:
        return {"state": "unknown"}
    entry = passkeys.get(encode_base64url(credential_id))
    if entry is None:
        return {"state": "deleted on the server"}
    last_used = entry.get("last_used")
    return {"state": "ok", "last_used": last_used if isinstance(last_used, str) else None}


def describe_passkey(entry: dict[str, Any]) -> str:
    """Return the text ``key list`` shows after a passkey slot's label."""
    method = entry.get("method")
    if method is None:
        return "damaged"
    if method == METHOD_FIDO2:
        return "fido2, last use not recorded (a security key keeps no record)"
    state = entry.get("state")
    if state == "unknown":
        return "webauthn, last use unknown (server not reached)"
    if state != "ok":
        return f"webauthn, {state}"
    last_used = entry.get("last_used")
    return f"webauthn, last used {_format_iso_time(last_used)}" if last_used else \
        "webauthn, never used"


def _format_iso_time(value: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return format_time(int(moment.timestamp()) * 1_000_000_000)


def remove_server_passkey(slot: KeySlot) -> str | None:
    """Delete the server's credential of a webauthn passkey slot; return the server.

    Returns None for a fido2 slot: its credential lives only on the security key, and
    opens nothing once the slot is gone. A credential the server no longer has counts
    as deleted.
    """
    from backvault.passkey.client import PasskeyServerClient

    info = passkey_slot_info(slot)
    if info.method != METHOD_WEBAUTHN:
        return None
    with PasskeyServerClient(info.server) as client:
        client.delete_passkey(info.credential_id)
    return info.server

"""Password key slots on the command line: ``key add-password``, ``key change-password``,
``key remove``, and unlocking a repository with its password.

The new password of ``add-password`` and ``change-password`` comes from
``BACKVAULT_PASSWORD_FILE``, ``BACKVAULT_PASSWORD_COMMAND`` or a prompt. These two
commands unlock the repository with the recovery key (``--recovery-key-file``,
``BACKVAULT_RECOVERY_KEY_FILE`` or ``_COMMAND``) or, at a terminal, with the current
password typed at a prompt.

The OPAQUE, vault client and HTTP modules are imported inside the functions that use
them, so commands on the recovery key start without loading them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from backvault import api
from backvault.cli.credentials import (
    ENV_PASSWORD_FILE,
    can_prompt,
    load_password,
    load_recovery_key,
    password_source,
    recovery_key_source,
)
from backvault.cli.output import print_json
from backvault.crypto.slots import KIND_RECOVERY, KeySlot
from backvault.errors import BackvaultError, UsageError, WrongPasswordError
from backvault.repository.repository import Repository

if TYPE_CHECKING:
    from backvault.opaque import Ksf
    from backvault.vault.client import HttpVaultClient

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

ENV_PASSWORD_SLOT = "BACKVAULT_PASSWORD_SLOT"
KIND_PASSWORD = "password"  # backvault.crypto.password_slot.KIND_PASSWORD
# Argon2id defaults of backvault.crypto.password_slot.DEFAULT_KSF, shown in the help.
DEFAULT_ARGON2_MEMORY = 64 * 1024  # KiB
DEFAULT_ARGON2_ITERATIONS = 3
DEFAULT_ARGON2_LANES = 4
PROMPT_ATTEMPTS = 3  # passwords typed at a prompt before the command gives up
MIN_SLOT_PREFIX = 4  # hex digits of a slot id that name it on the command line


def register(key_commands: SubParsers, common: argparse.ArgumentParser) -> None:
    """Add ``add-password``, ``change-password`` and ``remove`` to ``backvault key``."""
    add = key_commands.add_parser(
        "add-password", parents=[common], help="protect the repository with a password too",
        description="Register a new password with a key vault and add a key slot that it "
        f"opens. The password is read from ${ENV_PASSWORD_FILE}, "
        "$BACKVAULT_PASSWORD_COMMAND or a prompt.",
    )
    add.add_argument(
        "--vault", metavar="URL",
        help="key vault address, such as https://HOST:PORT (default: the server of a "
        "repository on a backvault server; required for other repositories)",
    )
    _add_slot_options(add)
    add.set_defaults(handler=command_key_add_password)

    change = key_commands.add_parser(
        "change-password", parents=[common], help="replace the password of a password slot",
        description="Register a new password, replace the password slot with a new one "
        "and delete the old vault record.",
    )
    change.add_argument(
        "slot", nargs="?", metavar="SLOT",
        help="id (or a unique prefix) of the password slot; needed if there are several",
    )
    change.add_argument("--vault", metavar="URL", help="move to this key vault (default: keep)")
    _add_slot_options(change)
    change.set_defaults(handler=command_key_change_password)

    remove = key_commands.add_parser(
        "remove", parents=[common],
        help="remove a key slot (and its vault record or server passkey)",
        description="Remove a key slot. A password slot's vault record is deleted too, "
        "and so is the server's passkey of a passkey slot made in a browser. "
        "The last slot cannot be removed, and the recovery key slot only with --force.",
    )
    remove.add_argument("slot", metavar="SLOT", help="id (or a unique prefix) of the slot")
    remove.add_argument(
        "--force", action="store_true", help="allow removing the recovery key slot"
    )
    remove.set_defaults(handler=command_key_remove)


def _add_slot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", metavar="TEXT", help="note stored with the slot")
    parser.add_argument(
        "--guess-limit", type=int, metavar="N",
        help="wrong passwords the vault accepts before it destroys the record (default and "
        "maximum: the vault's limit, usually 10)",
    )
    parser.add_argument(
        "--argon2-memory", type=int, metavar="KIB",
        help=f"Argon2id memory in KiB (default: {DEFAULT_ARGON2_MEMORY}, or the replaced "
        "slot's value for change-password). Lower values make "
        "the password cheaper to guess for anyone who steals the vault's keys and records; "
        "meant for tests",
    )
    parser.add_argument(
        "--argon2-iterations", type=int, metavar="N",
        help=f"Argon2id passes (default: {DEFAULT_ARGON2_ITERATIONS})",
    )
    parser.add_argument(
        "--argon2-lanes", type=int, metavar="N",
        help=f"Argon2id lanes (default: {DEFAULT_ARGON2_LANES})",
    )


# Unlocking ------------------------------------------------------------------------------


def password_unlock_requested(recovery_key_file: str | None, repository: Repository) -> bool:
    """Decide whether a command opens ``repository`` with its password.

    Yes when no recovery key is given and either BACKVAULT_PASSWORD_FILE (or _COMMAND)
    is set, or a terminal can prompt and the repository has a password slot.
    """
    if recovery_key_source(recovery_key_file) is not None:
        return False
    if password_source() is not None:
        return True
    return can_prompt() and any(slot.kind == KIND_PASSWORD for slot in repository.key_slots())


def unlock_with_password(
    repository: Repository, *, prompt: str = "Password: ", prompt_only: bool = False
) -> None:
    """Unlock ``repository`` through its password slot and key vault.

    At a prompt a wrong password may be typed again, up to PROMPT_ATTEMPTS times; each
    wrong one is a guess that the vault counts.
    """
    from backvault.crypto.password_slot import open_password_slot, password_slot_info
    from backvault.vault.client import HttpVaultClient

    slot = choose_password_slot(repository, None)
    info = password_slot_info(slot)
    attempts = PROMPT_ATTEMPTS if password_source() is None else 1
    with HttpVaultClient(info.vault_url) as client:
        for attempt in range(1, attempts + 1):
            _warn_before_last_guess(client, slot, info.record_id)
            password = load_password(prompt=prompt, prompt_only=prompt_only)
            try:
                master_key = open_password_slot(
                    slot, password, repository.repository_id, client
                )
            except WrongPasswordError as error:
                if attempt == attempts or error.guesses_left == 0:
                    raise
                print(f"error: {error.message}", file=sys.stderr)
                continue
            repository.unlock_with_master_key(master_key)
            return


def _warn_before_last_guess(client: HttpVaultClient, slot: KeySlot, record_id: str) -> None:
    """Say so before a login whose failure would destroy the record, or stop if it is gone.

    The record list is read with the account's token. A failure to read it only skips
    the warning, because the login itself reports the guesses left.
    """
    from backvault.crypto.password_slot import destroyed_record_error

    try:
        records = {str(entry.get("record_id")): entry for entry in client.list_records()}
    except BackvaultError:
        return
    entry = records.get(record_id)
    if entry is None:
        return
    if entry.get("state") == "destroyed":
        raise destroyed_record_error(f"key slot {slot.name}")
    if entry.get("guesses_left") == 1:
        print(
            f"warning: one guess is left for key slot {slot.name}. A wrong password now "
            "destroys the vault record, and then only the recovery key opens this "
            "repository.",
            file=sys.stderr,
        )


def choose_password_slot(repository: Repository, reference: str | None) -> KeySlot:
    """Return the password slot named by ``reference``, by $BACKVAULT_PASSWORD_SLOT, or
    the only one."""
    slots = [slot for slot in repository.key_slots() if slot.kind == KIND_PASSWORD]
    reference = reference or os.environ.get(ENV_PASSWORD_SLOT)
    if reference:
        return find_slot(slots, reference, kind="password slot")
    if not slots:
        raise UsageError(
            "the repository has no password slot",
            hint="Open it with the recovery key (unset BACKVAULT_PASSWORD_FILE), or add a "
            "password with 'backvault key add-password'.",
        )
    if len(slots) > 1:
        names = ", ".join(slot.name for slot in slots)
        raise UsageError(
            f"the repository has {len(slots)} password slots: {names}",
            hint=f"Set {ENV_PASSWORD_SLOT} to the id of the one to use.",
        )
    return slots[0]


def find_slot(slots: list[KeySlot], reference: str, *, kind: str = "key slot") -> KeySlot:
    """Return the slot whose id is ``reference`` or starts with it (at least 4 digits)."""
    reference = reference.lower()
    matches = [slot for slot in slots if slot.name == reference]
    if not matches and len(reference) >= MIN_SLOT_PREFIX:
        matches = [slot for slot in slots if slot.name.startswith(reference)]
    if not matches:
        raise UsageError(
            f"no {kind} matches {reference!r}",
            hint="List the slots with 'backvault key list'; give the id or at least "
            f"{MIN_SLOT_PREFIX} of its first digits.",
        )
    if len(matches) > 1:
        raise UsageError(
            f"{reference!r} matches {len(matches)} key slots", hint="Give more digits of the id."
        )
    return matches[0]


def _unlock_for_key_change(args: argparse.Namespace, repository: Repository) -> None:
    """Unlock with the recovery key, or at a terminal with the current password."""
    has_password_slot = any(slot.kind == KIND_PASSWORD for slot in repository.key_slots())
    if recovery_key_source(args.recovery_key_file) is None and can_prompt() and has_password_slot:
        unlock_with_password(repository, prompt="Current password: ", prompt_only=True)
        return
    repository.unlock_with_recovery_key(load_recovery_key(args.recovery_key_file))


# Commands -------------------------------------------------------------------------------


def command_key_add_password(args: argparse.Namespace) -> int:
    # commands imports this module, so it is imported here rather than at the top.
    from backvault.cli.commands import repository_location

    location = repository_location(args)
    vault_url = args.vault or default_vault_url(location)
    ksf = _ksf_from_options(args)
    repository = api.open_repository(location)
    _unlock_for_key_change(args, repository)

    password = load_password(prompt="New password: ", new=True)
    slot = _add_password_slot(
        repository, password, vault_url=vault_url, ksf=ksf, label=args.label or "password",
        guess_limit=args.guess_limit,
    )
    _print_added(args, slot, vault_url)
    return 0


def command_key_change_password(args: argparse.Namespace) -> int:
    from backvault.cli.commands import repository_location
    from backvault.crypto.password_slot import password_slot_info

    repository = api.open_repository(repository_location(args))
    old_slot = choose_password_slot(repository, args.slot)
    old_info = password_slot_info(old_slot)
    vault_url = args.vault or old_info.vault_url
    ksf = _ksf_from_options(args, replaced=old_info.ksf)
    _unlock_for_key_change(args, repository)

    password = load_password(prompt="New password: ", new=True)
    guess_limit = args.guess_limit
    if guess_limit is None and vault_url == old_info.vault_url:
        guess_limit = _record_guess_limit(old_info.vault_url, old_info.record_id)
    new_slot = _add_password_slot(
        repository, password, vault_url=vault_url, ksf=ksf,
        label=args.label or old_slot.label, guess_limit=guess_limit,
    )
    repository.remove_key_slot(old_slot.name)
    old_record_deleted = _delete_vault_record(old_info.vault_url, old_info.record_id)

    if args.json:
        print_json({
            "slot": new_slot.name, "replaced": old_slot.name, "vault": vault_url,
            "record_id": new_slot.parameters["record_id"],
            "old_record_deleted": old_record_deleted,
        })
        return 0
    print(f"password changed: key slot {new_slot.name} replaces {old_slot.name}")
    if not old_record_deleted:
        print(
            f"warning: the old vault record {old_info.record_id} could not be deleted; it no "
            "longer opens anything, because its slot is gone",
            file=sys.stderr,
        )
    return 0


def command_key_remove(args: argparse.Namespace) -> int:
    from backvault.cli.commands import repository_location, unlock
    from backvault.cli.passkey_commands import remove_server_passkey
    from backvault.crypto.password_slot import password_slot_info
    from backvault.vault.client import HttpVaultClient

    # The slots can be listed before unlocking, so a removal that would be refused is
    # refused before the user types a password or confirms a passkey.
    repository = api.open_repository(repository_location(args))
    slots = repository.key_slots()
    slot = find_slot(slots, args.slot)
    if len(slots) == 1:
        raise UsageError(
            f"key slot {slot.name} is the last one; removing it would lock you out",
            hint="Add another protection first.",
        )
    if slot.kind == KIND_RECOVERY and not args.force:
        raise UsageError(
            f"key slot {slot.name} is the recovery key, the way back when a password is "
            "forgotten, its vault record is erased, or a passkey is lost",
            hint="Keep it. To remove it anyway, run the command again with --force.",
        )
    unlock(repository, args)

    record_id = None
    if slot.kind == KIND_PASSWORD:
        info = password_slot_info(slot)
        record_id = info.record_id
        # The record goes first: if that fails, the slot stays and the command can be
        # run again, rather than leaving a record that nothing points to.
        with HttpVaultClient(info.vault_url) as client:
            client.delete_record(info.record_id)
    # A passkey's server credential goes first too, for the same reason.
    passkey_server = remove_server_passkey(slot) if slot.kind == "passkey" else None
    repository.remove_key_slot(slot.name)

    if args.json:
        print_json({
            "removed": slot.name, "kind": slot.kind, "vault_record_deleted": record_id,
            "passkey_deleted_on": passkey_server,
        })
        return 0
    suffix = f" and deleted vault record {record_id}" if record_id else ""
    if passkey_server:
        suffix = f" and deleted its passkey on {passkey_server}"
    print(f"removed {slot.kind} key slot {slot.name}{suffix}")
    return 0


# Helpers --------------------------------------------------------------------------------


def default_vault_url(location: str) -> str:
    """Return the server of a repository on a backvault server, as a vault address."""
    from backvault.storage.http import split_address

    if not location.startswith(("http://", "https://")):
        raise UsageError(
            "this repository is not on a backvault server, so no key vault is implied",
            hint="Name the vault with --vault https://HOST:PORT.",
        )
    origin, prefix, _ = split_address(location)
    return origin + prefix


def _option_or(value: int | None, default: int) -> int:
    return default if value is None else value


def _ksf_from_options(args: argparse.Namespace, replaced: Ksf | None = None) -> Ksf:
    """Return the key-stretching function the options ask for.

    Without any Argon2 option, a changed password keeps the replaced slot's parameters,
    so a change never weakens (or silently slows) the stretching chosen before.
    """
    from backvault.opaque import Argon2idKsf

    options = (args.argon2_memory, args.argon2_iterations, args.argon2_lanes)
    if replaced is not None and all(option is None for option in options):
        return replaced
    try:
        return Argon2idKsf(
            memory_kib=_option_or(args.argon2_memory, DEFAULT_ARGON2_MEMORY),
            iterations=_option_or(args.argon2_iterations, DEFAULT_ARGON2_ITERATIONS),
            lanes=_option_or(args.argon2_lanes, DEFAULT_ARGON2_LANES),
        )
    except ValueError as error:
        raise UsageError(str(error), hint="Check --argon2-memory, --argon2-iterations and "
                         "--argon2-lanes.") from None


def _add_password_slot(
    repository: Repository, password: bytes, *, vault_url: str, ksf: Ksf, label: str,
    guess_limit: int | None,
) -> KeySlot:
    """Register the password with the vault, then store the slot in the repository."""
    from backvault.crypto.password_slot import create_password_slot
    from backvault.vault.client import HttpVaultClient

    with HttpVaultClient(vault_url) as client:
        slot = create_password_slot(
            password, repository.master_key, repository.repository_id, vault_url=vault_url,
            transport=client, ksf=ksf, label=label, guess_limit=guess_limit,
        )
        try:
            repository.add_key_slot(slot)
        except BaseException:
            # Without its slot the record opens nothing; do not leave it behind.
            client.delete_record(str(slot.parameters["record_id"]))
            raise
    return slot


def _record_guess_limit(vault_url: str, record_id: str) -> int | None:
    """Return the guess limit of a vault record, so a new password keeps a chosen limit.

    None (the vault's default) when the vault no longer lists the record.
    """
    from backvault.vault.client import HttpVaultClient

    with HttpVaultClient(vault_url) as client:
        for record in client.list_records():
            if record.get("record_id") == record_id and isinstance(record.get("guess_limit"), int):
                return int(record["guess_limit"])
    return None


def _delete_vault_record(vault_url: str, record_id: str) -> bool:
    from backvault.vault.client import HttpVaultClient

    try:
        with HttpVaultClient(vault_url) as client:
            client.delete_record(record_id)
    except BackvaultError:
        return False
    return True


def _print_added(args: argparse.Namespace, slot: KeySlot, vault_url: str) -> None:
    parameters: dict[str, Any] = slot.parameters
    if args.json:
        print_json({
            "slot": slot.name, "kind": slot.kind, "label": slot.label, "vault": vault_url,
            "record_id": parameters["record_id"], "ksf": parameters["ksf"],
        })
        return
    print(f"added password key slot {slot.name} (vault {vault_url}, record "
          f"{parameters['record_id']})")
    print("keep the recovery key too: it is the way back if the password is forgotten or "
          "the vault destroys the record after too many wrong passwords")


# Listing --------------------------------------------------------------------------------


def password_listing(slots: list[KeySlot]) -> dict[str, dict[str, Any]]:
    """Describe the password slots among ``slots`` for ``key list``, keyed by slot name.

    Each entry has the ``vault``, the ``record_id`` and the record's ``record_state``
    (``active``, ``destroyed``, ``missing`` when the vault does not list it, or
    ``unknown`` when the vault cannot be reached), with ``guesses_left`` for an active
    record. Each vault is asked once.
    """
    from backvault.crypto.password_slot import password_slot_info

    listing: dict[str, dict[str, Any]] = {}
    vault_lists: dict[str, dict[str, dict[str, Any]] | None] = {}
    for slot in slots:
        if slot.kind != KIND_PASSWORD:
            continue
        try:
            info = password_slot_info(slot)
        except BackvaultError:
            listing[slot.name] = {"record_state": "damaged"}
            continue
        if info.vault_url not in vault_lists:
            vault_lists[info.vault_url] = _read_vault_records(info.vault_url)
        records = vault_lists[info.vault_url]
        entry: dict[str, Any] = {"vault": info.vault_url, "record_id": info.record_id}
        if records is None:
            entry["record_state"] = "unknown"
        elif info.record_id not in records:
            entry["record_state"] = "missing"
        else:
            record = records[info.record_id]
            entry["record_state"] = record.get("state")
            entry["guesses_left"] = record.get("guesses_left")
        listing[slot.name] = entry
    return listing


def _read_vault_records(vault_url: str) -> dict[str, dict[str, Any]] | None:
    from backvault.vault.client import HttpVaultClient

    try:
        with HttpVaultClient(vault_url) as client:
            return {str(record.get("record_id")): record for record in client.list_records()}
    except BackvaultError as error:
        print(
            f"warning: cannot read the records of the vault {vault_url}, so their state is "
            f"not shown: {error.message}",
            file=sys.stderr,
        )
        return None


def describe_password_slot(entry: dict[str, Any]) -> str:
    """Return the text ``key list`` shows after a password slot's label."""
    state = entry.get("record_state")
    vault = entry.get("vault", "")
    if state == "active":
        left = entry.get("guesses_left")
        plural = "guess" if left == 1 else "guesses"
        return f"vault {vault}, {left} wrong {plural} allowed"
    if state == "destroyed":
        return f"vault {vault}, record destroyed after too many wrong passwords"
    if state == "missing":
        return f"vault {vault}, record gone from the vault"
    if state == "unknown":
        return f"vault {vault}, state unknown (vault not reached)"
    return "damaged"

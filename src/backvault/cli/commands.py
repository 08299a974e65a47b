"""One function per subcommand: read the parsed options, call the API, print."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from pathlib import Path

from backvault import api
from backvault.cli.credentials import load_recovery_key
from backvault.cli.output import (
    ProgressLine,
    format_bytes,
    format_time,
    path_fields,
    print_json,
    print_path_line,
)
from backvault.cli.passkey_commands import (
    describe_passkey,
    passkey_listing,
    passkey_unlock_requested,
    unlock_with_passkey,
)
from backvault.cli.password_commands import (
    describe_password_slot,
    password_listing,
    password_unlock_requested,
    unlock_with_password,
)
from backvault.cli.recovery_display import render_qr_terminal, write_recovery_sheet
from backvault.crypto.recovery import RecoveryKey, check_confirmation, confirmation_challenge
from backvault.errors import (
    DataDamagedError,
    PartialBackupError,
    UsageError,
    WrongKeyError,
)
from backvault.repository.repository import Repository
from backvault.repository.snapshot import Snapshot
from backvault.repository.tree import Node

ENV_REPOSITORY = "BACKVAULT_REPOSITORY"
FILE_TYPE_BITS = {
    "file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO,
    "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK, "socket": stat.S_IFSOCK,
}
CONFIRMATION_ATTEMPTS = 3

RECOVERY_WARNING = """\
This is your recovery key. It is the only way back to your backups if every other
protection (password, passkey) is lost. Write it down or print the recovery sheet, and
keep it somewhere safe and offline. Anyone who has it and the repository can read your
backups. backvault will not show it again unless you unlock the repository."""


def repository_location(args: argparse.Namespace) -> str:
    location: str | None = args.repo or os.environ.get(ENV_REPOSITORY)
    if not location:
        raise UsageError(
            "no repository given",
            hint=f"Pass --repo PATH or set {ENV_REPOSITORY}.",
        )
    return location


def open_unlocked(args: argparse.Namespace) -> Repository:
    """Open the repository and unlock it with a passkey, the recovery key or the password.

    A passkey is used for --passkey, --fido2-device or BACKVAULT_PASSKEY=1, unless
    --recovery-key-file is given. The password is used when no recovery key is given and
    BACKVAULT_PASSWORD_FILE (or _COMMAND) is set, or when the repository has a password
    slot and a terminal can prompt for the password.
    """
    repository = api.open_repository(repository_location(args))
    unlock(repository, args)
    return repository


def unlock(repository: Repository, args: argparse.Namespace) -> None:
    """Unlock an opened repository as :func:`open_unlocked` describes."""
    if passkey_unlock_requested(args):
        unlock_with_passkey(repository, args)
        return
    if password_unlock_requested(args.recovery_key_file, repository):
        unlock_with_password(repository)
        return
    recovery_key = load_recovery_key(args.recovery_key_file)
    repository.unlock_with_recovery_key(recovery_key)


# init -------------------------------------------------------------------------------


def command_init(args: argparse.Namespace) -> int:
    location = repository_location(args)
    if args.sheet:
        _check_sheet_path(Path(args.sheet))
    repository, recovery_key = api.init_repository(location)
    repository_id = repository.repository_id.hex()

    if args.sheet:
        write_recovery_sheet(
            recovery_key, Path(args.sheet), repository=location, repository_id=repository_id,
            created=time.strftime("%Y-%m-%d"),
        )

    if args.json:
        print_json({
            "repository": repository.backend.location, "repository_id": repository_id,
            "recovery_key": recovery_key.format(), "recovery_sheet": args.sheet,
        })
        return 0

    print(f"created repository {repository_id[:16]} at {location}\n")
    _show_recovery_key(recovery_key, qr=args.qr)
    if args.sheet:
        print(f"\nrecovery sheet written to {args.sheet} (print it, then delete the file)")
    if not args.no_confirm and sys.stdin.isatty():
        _confirm_recovery_key(recovery_key)
    return 0


def _check_sheet_path(path: Path) -> None:
    """Reject a sheet path that cannot be written, before the repository is created.

    Otherwise ``init`` would create a repository and then fail before showing its key.
    """
    if path.exists() or path.is_symlink():
        raise UsageError(
            f"recovery sheet {path} already exists", hint="Choose a new file name for --sheet."
        )
    directory = path.parent
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write the recovery sheet in {directory}: the directory is missing or "
            "not writable",
            hint="Give --sheet a path in an existing directory that you can write to.",
        )


def _show_recovery_key(recovery_key: RecoveryKey, *, qr: bool) -> None:
    print(RECOVERY_WARNING)
    print()
    print("    " + recovery_key.format())
    if qr:
        print()
        print(render_qr_terminal(recovery_key))


def _confirm_recovery_key(recovery_key: RecoveryKey) -> None:
    """Ask the user to type back two random groups, to prove the key was written down."""
    print("\nTo make sure you wrote it down, type back two groups of the key.")
    for attempt in range(1, CONFIRMATION_ATTEMPTS + 1):
        first, second = confirmation_challenge()
        typed_first = input(f"group {first}: ")
        typed_second = input(f"group {second}: ")
        if check_confirmation(recovery_key, first, typed_first) and check_confirmation(
            recovery_key, second, typed_second
        ):
            print("confirmed.")
            return
        if attempt < CONFIRMATION_ATTEMPTS:
            print("that does not match; look at the key above and try again.")
    raise UsageError(
        "the typed groups did not match the recovery key",
        hint="The repository was created. Check your copy of the key now with "
        "'backvault key verify'.",
    )


# backup -----------------------------------------------------------------------------


def command_backup(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    progress = ProgressLine(enabled=not args.json)
    started = time.monotonic()

    def show(state: api.BackupProgress) -> None:
        elapsed = max(time.monotonic() - started, 1e-3)
        progress.update(
            f"{state.files} files, {format_bytes(state.bytes_read)} read "
            f"({format_bytes(int(state.bytes_read / elapsed))}/s)"
        )

    try:
        result = api.backup(repository, list(args.paths), progress=show, use_parent=not args.force)
    finally:
        progress.close()

    _print_backup_result(args, result)
    if result.skipped:
        raise PartialBackupError(
            f"snapshot {result.snapshot.short_id} saved, but {len(result.skipped)} "
            "path(s) were skipped",
            snapshot_id=result.snapshot.snapshot_id,
            skipped=[path for path, _ in result.skipped],
        )
    return 0


def _print_backup_result(args: argparse.Namespace, result: api.BackupResult) -> None:
    snapshot = result.snapshot
    summary = snapshot.summary
    if args.json:
        print_json({
            "snapshot_id": snapshot.snapshot_id,
            "parent": snapshot.parent,
            "complete": result.complete,
            "summary": summary,
            "skipped": [{**path_fields("path", p), "error": why} for p, why in result.skipped],
            "changed_during_backup": [path_fields("path", p) for p in result.changed],
            "recovered_packs": result.recovered_packs,
        })
        return

    for path, reason in result.skipped:
        print_path_line(f"skipped ({reason}): ", path)
    for path in result.changed:
        print_path_line("changed while it was read: ", path)
    seconds = summary["duration_ns"] / 1e9
    print(
        f"snapshot {snapshot.short_id} saved: {summary['files']} files "
        f"({summary['files_unchanged']} unchanged), {summary['directories']} directories, "
        f"{format_bytes(summary['bytes_total'])} in total\n"
        f"added {format_bytes(summary['bytes_added'])}, "
        f"stored {format_bytes(summary['bytes_stored'])} after compression, in {seconds:.1f} s"
    )


# snapshots and ls -------------------------------------------------------------------


def _snapshot_json(snapshot: Snapshot) -> dict[str, object]:
    return {
        "id": snapshot.snapshot_id,
        "short_id": snapshot.short_id,
        "time_ns": snapshot.time_ns,
        "hostname": snapshot.hostname,
        "username": snapshot.username,
        "paths": [path_fields("path", path) for path in snapshot.paths],
        "parent": snapshot.parent,
        "complete": not snapshot.skipped,
        "skipped": [{**path_fields("path", p), "error": why} for p, why in snapshot.skipped],
        "summary": snapshot.summary,
    }


def command_snapshots(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    snapshots = api.snapshots(repository)
    if args.json:
        print_json([_snapshot_json(snapshot) for snapshot in snapshots])
    elif not snapshots and not repository.damaged_snapshots:
        print("no snapshots")
    else:
        _print_snapshot_lines(snapshots)
    _raise_damaged_snapshots(repository)
    return 0


def _raise_damaged_snapshots(repository: Repository) -> None:
    """Fail after the readable snapshots were listed, if some snapshot files are damaged."""
    damaged = repository.damaged_snapshots
    if not damaged:
        return
    more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
    raise DataDamagedError(
        damaged[0][1] + more,
        damaged=[name for name, _ in damaged],
        hint="The other snapshots are listed above. Run 'backvault check', and move a "
        "damaged file out of snapshots/ to stop this error.",
    )


def _print_snapshot_lines(snapshots: list[Snapshot]) -> None:
    for snapshot in snapshots:
        flag = "" if not snapshot.skipped else f"  (partial: {len(snapshot.skipped)} skipped)"
        paths = b" ".join(snapshot.paths)
        print_path_line(
            f"{snapshot.short_id}  {format_time(snapshot.time_ns)}  {snapshot.hostname}  "
            f"{format_bytes(snapshot.summary.get('bytes_total', 0)):>10}{flag}  ",
            paths,
        )
    print(f"{len(snapshots)} snapshot(s)")


def _node_json(path: bytes, node: Node) -> dict[str, object]:
    result: dict[str, object] = {
        **path_fields("path", path), "type": node.type, "mode": node.mode, "size": node.size,
        "uid": node.uid, "gid": node.gid, "user": node.user, "group": node.group,
        "mtime_ns": node.mtime,
    }
    if node.target is not None:
        result.update(path_fields("target", node.target))
    if node.changed:
        result["changed_during_backup"] = True
    return result


def command_ls(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    found = False
    for path, node in api.list_files(repository, args.snapshot, args.path):
        found = True
        if args.json:
            print_json(_node_json(path, node))
        elif args.long:
            suffix = b" -> " + node.target if node.target is not None else b""
            print_path_line(
                f"{_mode_string(node)} {node.user or node.uid:>8} {node.group or node.gid:>8} "
                f"{node.size:>12} {format_time(node.mtime)} ",
                path + suffix,
            )
        else:
            print_path_line("", path)
    if args.path and not found:
        raise UsageError(
            f"{args.path} is not in snapshot {args.snapshot}",
            hint="List the snapshot without a path to see what it holds.",
        )
    return 0


def _mode_string(node: Node) -> str:
    """Return the mode as ``ls -l`` shows it, setuid, setgid and sticky bits included."""
    return stat.filemode(FILE_TYPE_BITS.get(node.type, stat.S_IFREG) | node.mode)


# restore ----------------------------------------------------------------------------


def command_restore(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    progress = ProgressLine(enabled=not args.json)

    def show(state: api.RestoreProgress) -> None:
        progress.update(f"{state.files} files, {format_bytes(state.bytes_written)} written")

    try:
        result = api.restore(
            repository, args.snapshot, args.target, include=args.include, progress=show
        )
    finally:
        progress.close()

    if args.json:
        print_json({
            "files": result.files, "directories": result.directories,
            "bytes_written": result.bytes_written,
            "damaged": [{**path_fields("path", p), "error": why} for p, why in result.damaged],
            "warnings": [{**path_fields("path", p), "message": m} for p, m in result.warnings],
        })
    else:
        for path, message in result.warnings:
            print_path_line(f"warning ({message}): ", path)
        for path, message in result.damaged:
            print_path_line(f"damaged ({message}): ", path)
        print(
            f"restored {result.files} files and {result.directories} directories, "
            f"{format_bytes(result.bytes_written)}, to {args.target}"
        )
    if result.damaged:
        raise DataDamagedError(
            f"{len(result.damaged)} file(s) could not be restored intact",
            damaged=[os.fsdecode(path) for path, _ in result.damaged],
            hint="The damaged files are listed above; run 'backvault check --read-data'.",
        )
    return 0


# check ------------------------------------------------------------------------------


def command_check(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    progress = ProgressLine(enabled=not args.json)
    try:
        result = api.check(repository, read_data=args.read_data, progress=progress.update)
    finally:
        progress.close()

    if args.json:
        print_json({
            "ok": result.ok, "errors": result.errors, "notes": result.notes,
            "snapshots": result.snapshots, "trees": result.trees,
            "packs_read": result.packs_read, "blobs_read": result.blobs_read,
        })
    else:
        for note in result.notes:
            print(f"note: {note}")
        for error in result.errors:
            print(f"damaged: {error}")
        read = f", {result.packs_read} packs read" if args.read_data else ""
        print(f"checked {result.snapshots} snapshots and {result.trees} trees{read}")
    if not result.ok:
        raise DataDamagedError(
            f"the check found {len(result.errors)} error(s)",
            damaged=result.errors,
            hint="Restore what you can. The next backup stores again the data of missing "
            "packs; move a damaged pack out of data/ so that it is replaced too.",
        )
    if not args.json:
        print("no errors found")
    return 0


# key --------------------------------------------------------------------------------


def command_key_show(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    recovery_key = repository.recovery_key()
    if args.sheet:
        write_recovery_sheet(
            recovery_key, Path(args.sheet), repository=repository_location(args),
            repository_id=repository.repository_id.hex(), created=time.strftime("%Y-%m-%d"),
        )
    if args.json:
        print_json({"recovery_key": recovery_key.format(), "recovery_sheet": args.sheet})
        return 0
    _show_recovery_key(recovery_key, qr=args.qr)
    if args.sheet:
        print(f"\nrecovery sheet written to {args.sheet} (print it, then delete the file)")
    return 0


def command_key_verify(args: argparse.Namespace) -> int:
    repository = api.open_repository(repository_location(args))
    recovery_key = load_recovery_key(args.recovery_key_file, prompt="Type your recovery key: ")
    try:
        repository.unlock_with_recovery_key(recovery_key)
    except WrongKeyError:
        raise WrongKeyError(
            "that is a well-formed recovery key, but not the one of this repository",
            hint="Check that you have the sheet of this repository "
            f"(id {repository.repository_id.hex()[:16]}).",
        ) from None
    if args.json:
        print_json({"valid": True})
    else:
        print("the recovery key is correct")
    return 0


def command_key_list(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    slots = repository.key_slots()
    passkeys = passkey_listing(slots)
    passwords = password_listing(slots)
    if args.json:
        print_json([
            {
                "id": slot.name, "kind": slot.kind, "label": slot.label,
                "created_ns": slot.created_ns, **passkeys.get(slot.name, {}),
                **passwords.get(slot.name, {}),
            }
            for slot in slots
        ])
        return 0
    for slot in slots:
        passkey, password = passkeys.get(slot.name), passwords.get(slot.name)
        details = ""
        if passkey is not None:
            details = f"  ({describe_passkey(passkey)})"
        elif password is not None:
            details = f"  ({describe_password_slot(password)})"
        print(
            f"{slot.name}  {slot.kind:<10} {format_time(slot.created_ns)}  {slot.label}{details}"
        )
    return 0


def command_unlock(args: argparse.Namespace) -> int:
    repository = open_unlocked(args)
    removed = repository.remove_locks(all_hosts=args.remove_all)
    print(f"removed {removed} lock(s)")
    return 0

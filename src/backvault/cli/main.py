"""The ``backvault`` command: parse options, run a subcommand, map errors to exit codes.

Every error reaches the user as one ``error:`` line and, where there is one, a ``hint:``
line, never as a traceback (``BACKVAULT_DEBUG=1`` shows the traceback for bug reports).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from backvault import __version__
from backvault.cli import commands, passkey_commands, password_commands, server_commands
from backvault.cli.output import print_error
from backvault.errors import BackvaultError

EXIT_INTERRUPTED = 130
M_MMAP_THRESHOLD = -3  # mallopt parameter numbers in glibc's malloc.h
M_ARENA_MAX = -8

Handler = Callable[[argparse.Namespace], int]


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--repo", "-r", metavar="PATH",
        help="repository location (default: $BACKVAULT_REPOSITORY)",
    )
    common.add_argument(
        "--recovery-key-file", metavar="FILE",
        help="file that contains the recovery key (default: $BACKVAULT_RECOVERY_KEY_FILE)",
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    passkey_commands.add_unlock_options(common)
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="backvault",
        description="End-to-end encrypted, deduplicated backups.",
        epilog="The recovery key is read from $BACKVAULT_RECOVERY_KEY_FILE, from the output "
        "of $BACKVAULT_RECOVERY_KEY_COMMAND, or from a prompt.",
    )
    parser.add_argument("--version", action="version", version=f"backvault {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = subparsers.add_parser("init", parents=[common], help="create a repository")
    init.add_argument(
        "--no-confirm", action="store_true",
        help="do not ask to type back two groups of the recovery key (implied when "
        "standard input is not a terminal)",
    )
    init.add_argument("--qr", action="store_true", help="also show the key as a QR code")
    init.add_argument("--sheet", metavar="FILE", help="write a printable HTML recovery sheet")
    init.set_defaults(handler=commands.command_init)

    backup = subparsers.add_parser("backup", parents=[common], help="make a snapshot")
    backup.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to save")
    backup.add_argument(
        "--force", action="store_true",
        help="read every file, even those unchanged since the last snapshot",
    )
    backup.set_defaults(handler=commands.command_backup)

    snapshots = subparsers.add_parser("snapshots", parents=[common], help="list snapshots")
    snapshots.set_defaults(handler=commands.command_snapshots)

    ls = subparsers.add_parser("ls", parents=[common], help="list the files of a snapshot")
    ls.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, id prefix or 'latest'")
    ls.add_argument("path", nargs="?", metavar="PATH", help="list only this path and below")
    ls.add_argument("--long", "-l", action="store_true", help="show mode, owner, size, mtime")
    ls.set_defaults(handler=commands.command_ls)

    restore = subparsers.add_parser("restore", parents=[common], help="restore a snapshot")
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, id prefix or 'latest'")
    restore.add_argument("--target", "-t", required=True, metavar="DIR", help="where to restore")
    restore.add_argument(
        "--include", "-i", action="append", metavar="PATH",
        help="restore only this path of the snapshot (repeatable)",
    )
    restore.set_defaults(handler=commands.command_restore)

    check = subparsers.add_parser("check", parents=[common], help="verify the repository")
    check.add_argument(
        "--read-data", action="store_true", help="read and authenticate every stored byte"
    )
    check.set_defaults(handler=commands.command_check)

    unlock = subparsers.add_parser("unlock", parents=[common], help="remove stale locks")
    unlock.add_argument(
        "--remove-all", action="store_true", help="remove every lock, also of other hosts"
    )
    unlock.set_defaults(handler=commands.command_unlock)

    _add_key_commands(subparsers, common)
    server_commands.register(subparsers)
    return parser


def _add_key_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    key = subparsers.add_parser("key", help="manage the recovery key and key slots")
    key_commands = key.add_subparsers(dest="key_command", metavar="KEY_COMMAND", required=True)

    show = key_commands.add_parser("show", parents=[common], help="show the recovery key")
    show.add_argument("--qr", action="store_true", help="also show the key as a QR code")
    show.add_argument("--sheet", metavar="FILE", help="write a printable HTML recovery sheet")
    show.set_defaults(handler=commands.command_key_show)

    verify = key_commands.add_parser(
        "verify", parents=[common], help="type the recovery key to prove you still have it"
    )
    verify.set_defaults(handler=commands.command_key_verify)

    listing = key_commands.add_parser("list", parents=[common], help="list the key slots")
    listing.set_defaults(handler=commands.command_key_list)

    password_commands.register(key_commands, common)
    passkey_commands.register(key_commands, common)


def _limit_heap_growth() -> None:
    """Keep glibc from growing a heap per thread for the buffers of a backup.

    Chunks and packs are buffers of 0.5 to 16 MiB allocated by several threads. By
    default glibc gives each thread its own heap, each keeps freed buffers, and peak
    memory nearly doubled in our measurements (1.2 GB data set, 2 cores: 200 MB). One
    heap, and a fixed 4 MiB mmap threshold so that packs get their own mappings, gave
    115 MB. A threshold low enough to map every chunk saved 8 MB more but doubled the
    time spent in the kernel.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv: Sequence[str] | None = None) -> int:
    _limit_heap_growth()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BackvaultError as error:
        if os.environ.get("BACKVAULT_DEBUG"):
            traceback.print_exc()
        print_error(error.message, error.hint)
        return error.exit_code
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (``backvault ls | head``): not an error.
        sys.stderr.close()
        return 0
    except OSError as error:
        # A file-system or network error that no layer translated, such as a full disk.
        if os.environ.get("BACKVAULT_DEBUG"):
            traceback.print_exc()
        print_error(
            f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""),
            "Check the path and free space; set BACKVAULT_DEBUG=1 for details.",
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``backvault server`` commands (run the server, manage accounts) and ``backvault login``.

Account commands work on the metadata database directly, so the operator runs them on
the server's machine with the same ``--data-dir`` (and ``--database``) as the server.
The server modules are imported inside the handlers, so other commands start without
loading SQLAlchemy or FastAPI.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from backvault.cli.output import format_bytes, format_time, print_json
from backvault.errors import UsageError

if TYPE_CHECKING:
    from backvault.server.config import ServerConfig
    from backvault.server.metadata import Account, Metadata

    # Only for type checkers: the class is not subscriptable at run time.
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

Handler = Callable[[argparse.Namespace], int]

SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
SIZE_PATTERN = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)

# Settings shared by the server and the account commands, as (option, metavar, help).
STORE_OPTIONS = (
    ("--config", "FILE", "TOML file with server settings; options given here win"),
    ("--data-dir", "DIR", "directory of the metadata database and the stored objects"),
    ("--database", "URL", "metadata database: postgresql://USER:PASSWORD@HOST:PORT/DB "
     "(default: SQLite in the data directory)"),
    ("--storage", "URL", "store objects in S3 at s3://BUCKET/PREFIX instead of the data "
     "directory; endpoint and credentials come from the AWS_* variables"),
)
SERVE_OPTIONS = (
    ("--host", "ADDRESS", "address to listen on (default: 127.0.0.1)"),
    ("--port", "PORT", "TCP port to listen on (default: 8420)"),
    ("--tls-cert", "FILE", "PEM certificate chain; serve HTTPS with --tls-key"),
    ("--tls-key", "FILE", "PEM private key of the certificate"),
    ("--log-level", "LEVEL", "debug, info, warning or error (default: info)"),
    ("--max-object-size", "BYTES", "largest object accepted, in bytes (default: 64 MiB)"),
    ("--jwt-public-key", "FILE", "PEM public key (Ed25519, EC P-256 or RSA) of the identity "
     "provider whose JSON Web Tokens are accepted"),
    ("--jwt-issuer", "ISSUER", "required 'iss' claim of JSON Web Tokens"),
    ("--jwt-audience", "AUDIENCE", "required 'aud' claim of JSON Web Tokens (optional)"),
    ("--passkey-rp-id", "HOST", "WebAuthn relying party ID that passkeys are bound to: the "
     "host name browsers use for this server (default: localhost)"),
    ("--passkey-origin", "URL", "scheme, host and port at which browsers open the passkey "
     "pages (default: http://RP_ID:PORT, or https:// with --tls-cert)"),
    ("--services", "LIST", "the APIs to offer, separated by commas: blobs, vault, passkeys "
     "(default: all; --services vault runs the key vault alone)"),
)
INTEGER_SETTINGS = ("port", "max_object_size")


def parse_size(text: str) -> int:
    """Parse a byte count such as ``1000000``, ``500M`` or ``2GiB`` (binary units)."""
    match = SIZE_PATTERN.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use bytes, or K, M, G or T")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


def register(subparsers: SubParsers) -> None:
    """Add ``server`` and ``login`` to the ``backvault`` command."""
    server = subparsers.add_parser(
        "server", help="run the backvault server, or manage its accounts",
        description="Run the backvault server until it is stopped with Ctrl-C or SIGTERM.",
    )
    _add_options(server, STORE_OPTIONS + SERVE_OPTIONS, suppress=False)
    server.set_defaults(handler=command_server)
    server_commands = server.add_subparsers(dest="server_command", metavar="SERVER_COMMAND")
    _add_account_commands(server_commands)

    login = subparsers.add_parser(
        "login", help="save a token for a backvault server",
        description="Read a token from standard input (or a prompt), check it with the "
        "server and save it for the server's address.",
    )
    login.add_argument("url", metavar="URL", help="server address, such as https://HOST:PORT")
    login.add_argument("--json", action="store_true", help="print machine-readable JSON")
    login.set_defaults(handler=command_login)


def _add_options(
    parser: argparse.ArgumentParser, options: tuple[tuple[str, str, str], ...], *, suppress: bool
) -> None:
    # A subcommand's copy of an option must not reset the value given before the
    # subcommand, so its default is SUPPRESS (argparse then sets nothing).
    default = argparse.SUPPRESS if suppress else None
    for option, metavar, help_text in options:
        parser.add_argument(option, metavar=metavar, help=help_text, default=default)


def _add_account_commands(server_commands: SubParsers) -> None:
    account = server_commands.add_parser("account", help="manage accounts and their tokens")
    commands = account.add_subparsers(dest="account_command", metavar="ACCOUNT_COMMAND",
                                      required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        _add_options(parser, STORE_OPTIONS, suppress=True)
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
        parser.set_defaults(handler=handler)
        return parser

    create = add("create", command_account_create, "create an account and its first token")
    create.add_argument("name", metavar="NAME", help="account name")
    create.add_argument(
        "--append-only", action="store_true",
        help="refuse every delete except of lock objects, so a client cannot erase backups",
    )
    create.add_argument(
        "--quota", type=parse_size, metavar="BYTES",
        help="most bytes the account may store; K, M, G, T mean KiB, MiB, GiB, TiB "
        "(default: no limit)",
    )

    add("list", command_account_list, "list the accounts")
    for name, disabled in (("disable", True), ("enable", False)):
        parser = add(name, _set_disabled_handler(disabled), f"{name} an account")
        parser.add_argument("name", metavar="NAME", help="account name")
    delete = add("delete", command_account_delete,
                 "delete an account, its tokens, repositories and stored objects")
    delete.add_argument("name", metavar="NAME", help="account name")
    delete.add_argument("--yes", action="store_true", help="confirm that all its data goes")

    token = commands.add_parser("token", help="issue, list and revoke tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="TOKEN_COMMAND",
                                          required=True)
    for name, handler, help_text, argument in (
        ("issue", command_token_issue, "issue a new token for an account", "name"),
        ("list", command_token_list, "list the tokens of an account", "name"),
        ("revoke", command_token_revoke, "revoke a token by its id", "token_id"),
    ):
        parser = token_commands.add_parser(name, help=help_text)
        parser.add_argument(argument, metavar=argument.upper())
        _add_options(parser, STORE_OPTIONS, suppress=True)
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
        if name == "issue":
            parser.add_argument("--label", default="", help="note stored with the token")
        parser.set_defaults(handler=handler)


# Settings ---------------------------------------------------------------------------


def load_server_config(args: argparse.Namespace) -> ServerConfig:
    """Merge the config file with the options given; options win."""
    from backvault.server.config import build_config, read_config_file

    settings: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file:
        settings.update(read_config_file(config_file))
    for option, _, _ in STORE_OPTIONS + SERVE_OPTIONS:
        name = option.lstrip("-").replace("-", "_")
        value = getattr(args, name, None)
        if name == "config" or value is None:
            continue
        settings[name] = _integer(option, value) if name in INTEGER_SETTINGS else value
    return build_config(settings)


def _integer(option: str, value: str) -> int:
    try:
        return parse_size(value) if option == "--max-object-size" else int(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise UsageError(f"invalid value {value!r} for {option}: use a whole number") from None


@contextmanager
def open_store(args: argparse.Namespace) -> Iterator[Metadata]:
    """Open the server's metadata database, turning database errors into clear ones."""
    import sqlalchemy.exc

    from backvault.server.errors import ServerError
    from backvault.server.metadata import open_metadata

    config = load_server_config(args)
    try:
        metadata = open_metadata(config)
        try:
            yield metadata
        finally:
            metadata.close()
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise ServerError(
            f"the metadata database failed: {error.__class__.__name__}: {error.args[0]}",
            hint="Check --database (or --data-dir) and that the database server runs.",
        ) from error


# Handlers ---------------------------------------------------------------------------


def command_server(args: argparse.Namespace) -> int:
    from backvault.server.run import run_server

    run_server(load_server_config(args))
    return 0


def _account_json(account: Account) -> dict[str, Any]:
    return {
        "id": account.id, "name": account.name, "disabled": account.disabled,
        "append_only": account.append_only, "quota_bytes": account.quota_bytes,
        "used_bytes": account.used_bytes,
    }


def command_account_create(args: argparse.Namespace) -> int:
    with open_store(args) as metadata:
        account = metadata.create_account(
            args.name, append_only=args.append_only, quota_bytes=args.quota
        )
        token_info, token = metadata.issue_token(account.id, label="created with the account")
    if args.json:
        print_json({"account": _account_json(account), "token_id": token_info.id,
                    "token": token})
        return 0
    mode = ", append-only" if account.append_only else ""
    quota = f", quota {format_bytes(account.quota_bytes)}" if account.quota_bytes else ""
    print(f"created account {account.name} (id {account.id}{mode}{quota})")
    print(f"token id {token_info.id}; the token is shown only now, on the next line:")
    print(token)
    return 0


def command_account_list(args: argparse.Namespace) -> int:
    with open_store(args) as metadata:
        accounts = metadata.list_accounts()
    if args.json:
        print_json([_account_json(account) for account in accounts])
        return 0
    for account in accounts:
        flags = [flag for flag, on in (("disabled", account.disabled),
                                       ("append-only", account.append_only)) if on]
        quota = format_bytes(account.quota_bytes) if account.quota_bytes else "no quota"
        print(f"{account.id:>5}  {account.name:<24} {format_bytes(account.used_bytes):>10} "
              f"used, {quota}  {' '.join(flags)}")
    if not accounts:
        print("no accounts")
    return 0


def _set_disabled_handler(disabled: bool) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        with open_store(args) as metadata:
            account = metadata.set_disabled(args.name, disabled)
        if args.json:
            print_json(_account_json(account))
        else:
            print(f"account {account.name} {'disabled' if disabled else 'enabled'}")
        return 0

    return handler


def command_account_delete(args: argparse.Namespace) -> int:
    from backvault.server.blobs import BlobService

    if not args.yes:
        raise UsageError(
            f"deleting account {args.name!r} also deletes all its stored backups",
            hint="Add --yes to confirm.",
        )
    config = load_server_config(args)
    with open_store(args) as metadata:
        account = metadata.account_by_name(args.name)
        blobs = BlobService(metadata, blob_dir=config.blob_dir, storage=config.storage)
        deleted = 0
        for repository in metadata.list_repositories(account.id):
            deleted += blobs.delete_repository_objects(repository)
        metadata.delete_account(account.id)
    if args.json:
        print_json({"deleted": account.name, "objects_deleted": deleted})
    else:
        print(f"deleted account {account.name} and {deleted} stored objects")
    return 0


def command_token_issue(args: argparse.Namespace) -> int:
    with open_store(args) as metadata:
        account = metadata.account_by_name(args.name)
        token_info, token = metadata.issue_token(account.id, label=args.label)
    if args.json:
        print_json({"account": account.name, "token_id": token_info.id, "token": token})
        return 0
    print(f"token id {token_info.id} for account {account.name}; the token is shown only now, "
          "on the next line:")
    print(token)
    return 0


def command_token_list(args: argparse.Namespace) -> int:
    with open_store(args) as metadata:
        account = metadata.account_by_name(args.name)
        tokens = metadata.list_tokens(account.id)
    if args.json:
        print_json([{"id": token.id, "label": token.label, "created_ns": token.created_ns,
                     "revoked": token.revoked} for token in tokens])
        return 0
    for token in tokens:
        state = "revoked" if token.revoked else "valid"
        print(f"{token.id}  {format_time(token.created_ns)}  {state:<8} {token.label}")
    return 0


def command_token_revoke(args: argparse.Namespace) -> int:
    with open_store(args) as metadata:
        token = metadata.revoke_token(args.token_id)
    if args.json:
        print_json({"id": token.id, "revoked": True})
    else:
        print(f"token {token.id} revoked")
    return 0


def command_login(args: argparse.Namespace) -> int:
    from backvault.storage.http import fetch_account, save_token, split_address

    # The whole path of URL is the API prefix here: login takes a server, not a repository.
    origin, prefix, last = split_address(args.url)
    prefix = f"{prefix}/{last}" if last else prefix
    if sys.stdin.isatty():
        token = getpass.getpass(f"Token for {origin}: ").strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        raise UsageError("no token given", hint="Type the token, or pipe it to standard input.")

    account = fetch_account(origin, prefix, token)
    path = save_token(origin, token)
    if args.json:
        print_json({"server": origin, "account": account.get("name"), "token_file": str(path)})
    else:
        print(f"logged in to {origin} as {account.get('name')}; token saved in {path}")
    return 0

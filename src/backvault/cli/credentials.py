"""Sources of the secrets that unlock a repository on the command line.

The recovery key comes, in this order, from ``--recovery-key-file``, the file named by
``BACKVAULT_RECOVERY_KEY_FILE``, the standard output of ``BACKVAULT_RECOVERY_KEY_COMMAND``,
or a prompt when standard input is a terminal. A secret is never taken from a
command-line argument, because other users can read a process's arguments.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

from backvault.crypto.recovery import RecoveryKey
from backvault.errors import RecoveryKeyFormatError, UsageError

ENV_KEY_FILE = "BACKVAULT_RECOVERY_KEY_FILE"
ENV_KEY_COMMAND = "BACKVAULT_RECOVERY_KEY_COMMAND"
ENV_PASSWORD_FILE = "BACKVAULT_PASSWORD_FILE"
ENV_PASSWORD_COMMAND = "BACKVAULT_PASSWORD_COMMAND"
MIN_PASSWORD_LENGTH = 8  # characters; a new password needs this many, and so any password
# The OPRF input of RFC 9497 is length-prefixed with two bytes, so 65535 is a hard limit;
# no remembered password comes near this one.
MAX_PASSWORD_BYTES = 4096
PROMPT_ATTEMPTS = 3
COMMAND_TIMEOUT = 60  # seconds


def recovery_key_source(option_file: str | None) -> str | None:
    """Describe where the recovery key would come from, or None if only a prompt is left."""
    if option_file:
        return f"--recovery-key-file {option_file}"
    if os.environ.get(ENV_KEY_FILE):
        return ENV_KEY_FILE
    if os.environ.get(ENV_KEY_COMMAND):
        return ENV_KEY_COMMAND
    return None


def load_recovery_key(option_file: str | None, *, prompt: str = "Recovery key: ") -> RecoveryKey:
    file_name = option_file or os.environ.get(ENV_KEY_FILE)
    if file_name:
        return RecoveryKey.parse(_read_key_file(Path(file_name)))

    command = os.environ.get(ENV_KEY_COMMAND)
    if command:
        return RecoveryKey.parse(
            _run_secret_command(command, ENV_KEY_COMMAND, "prints the recovery key")
        )

    if sys.stdin.isatty():
        return prompt_recovery_key(prompt)

    raise UsageError(
        "no recovery key given",
        hint=f"Set {ENV_KEY_FILE} to a file that contains it, or {ENV_KEY_COMMAND} to a "
        "command that prints it, or run the command in a terminal to be asked for it.",
    )


def prompt_recovery_key(prompt: str) -> RecoveryKey:
    """Ask for the recovery key, again after a typo, at most PROMPT_ATTEMPTS times."""
    for attempt in range(1, PROMPT_ATTEMPTS + 1):
        typed = getpass.getpass(prompt)
        try:
            return RecoveryKey.parse(typed)
        except RecoveryKeyFormatError as error:
            if attempt == PROMPT_ATTEMPTS:
                raise
            print(f"error: {error.message}", file=sys.stderr)
    raise AssertionError("unreachable")


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UsageError(
            f"recovery key file {path} does not exist",
            hint=f"Check the path in {ENV_KEY_FILE} or --recovery-key-file.",
        ) from None
    except OSError as error:
        raise UsageError(
            f"cannot read recovery key file {path}: {error.strerror}",
            hint=f"Check the path in {ENV_KEY_FILE} or --recovery-key-file; it must be a "
            "readable file.",
        ) from error


def _run_secret_command(command: str, variable: str, expected: str) -> str:
    """Run the command in ``variable`` and return its standard output."""
    try:
        completed = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        raise UsageError(
            f"cannot run {variable} ({command!r}): {error}",
            hint=f"Check that the command exists and {expected}.",
        ) from error
    if completed.returncode != 0:
        raise UsageError(
            f"{variable} ({command!r}) failed with exit code {completed.returncode}",
            hint="Run the command by hand to see why.",
        )
    return completed.stdout


# Passwords ------------------------------------------------------------------------------


def password_source() -> str | None:
    """Name the variable the password would come from, or None if only a prompt is left."""
    if os.environ.get(ENV_PASSWORD_FILE):
        return ENV_PASSWORD_FILE
    if os.environ.get(ENV_PASSWORD_COMMAND):
        return ENV_PASSWORD_COMMAND
    return None


def can_prompt() -> bool:
    return sys.stdin.isatty()


def load_password(
    *, prompt: str = "Password: ", new: bool = False, prompt_only: bool = False
) -> bytes:
    """Return the password from BACKVAULT_PASSWORD_FILE, _COMMAND or a prompt, as UTF-8.

    A file or command output loses one trailing line break, nothing else. The text is
    put in Unicode normalization form NFC, so the same password typed on two systems
    gives the same bytes. A ``new`` password is asked twice at a prompt and must have
    at least MIN_PASSWORD_LENGTH characters. With ``prompt_only`` the password is only
    asked for at a terminal: changing a password reads the new one from the file, so
    the current one must not come from there too.

    A password that cannot be right (shorter than MIN_PASSWORD_LENGTH, or longer than
    MAX_PASSWORD_BYTES) is rejected here, before it costs the vault a guess.
    """
    file_name = None if prompt_only else os.environ.get(ENV_PASSWORD_FILE)
    command = None if prompt_only else os.environ.get(ENV_PASSWORD_COMMAND)
    if file_name:
        text = _strip_line_break(_read_password_file(Path(file_name)))
    elif command:
        text = _strip_line_break(
            _run_secret_command(command, ENV_PASSWORD_COMMAND, "prints the password")
        )
    elif can_prompt():
        text = _prompt_password(prompt, confirm=new)
    else:
        raise UsageError(
            "no password given",
            hint=f"Set {ENV_PASSWORD_FILE} to a file that contains it, or "
            f"{ENV_PASSWORD_COMMAND} to a command that prints it, or run the command in a "
            "terminal to be asked for it.",
        )
    text = unicodedata.normalize("NFC", text)
    if not text:
        raise UsageError("the password is empty", hint="Give a password of at least "
                         f"{MIN_PASSWORD_LENGTH} characters.")
    if len(text) < MIN_PASSWORD_LENGTH:
        which = "new password" if new else "password"
        raise UsageError(
            f"the {which} has {len(text)} characters; at least {MIN_PASSWORD_LENGTH} "
            "are needed",
            hint="Choose a longer password; a few words are easier to remember than symbols."
            if new
            else "No password slot accepts so short a password; check "
            f"{ENV_PASSWORD_FILE} or what you typed. Nothing was sent to the vault.",
        )
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise UsageError(
            f"the password is {len(encoded)} bytes long; at most {MAX_PASSWORD_BYTES} are "
            "accepted",
            hint=f"Check that {ENV_PASSWORD_FILE} names the password file, not another file.",
        )
    return encoded


def _prompt_password(prompt: str, *, confirm: bool) -> str:
    typed = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat the password: ") != typed:
        raise UsageError("the two passwords differ", hint="Run the command again.")
    return typed


def _strip_line_break(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _read_password_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"password file {path} does not exist", hint=f"Check the path in {ENV_PASSWORD_FILE}."
        ) from None
    except UnicodeDecodeError:
        raise UsageError(
            f"password file {path} is not valid UTF-8",
            hint="Save the password as UTF-8 text.",
        ) from None
    except OSError as error:
        raise UsageError(
            f"cannot read password file {path}: {error.strerror}",
            hint=f"Check the path in {ENV_PASSWORD_FILE}; it must be a readable file.",
        ) from error

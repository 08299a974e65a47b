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
from pathlib import Path

from backvault.crypto.recovery import RecoveryKey
from backvault.errors import RecoveryKeyFormatError, UsageError

ENV_KEY_FILE = "BACKVAULT_RECOVERY_KEY_FILE"
ENV_KEY_COMMAND = "BACKVAULT_RECOVERY_KEY_COMMAND"
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
        return RecoveryKey.parse(_run_key_command(command))

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


def _run_key_command(command: str) -> str:
    try:
        completed = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        raise UsageError(
            f"cannot run {ENV_KEY_COMMAND} ({command!r}): {error}",
            hint="Check that the command exists and prints the recovery key.",
        ) from error
    if completed.returncode != 0:
        raise UsageError(
            f"{ENV_KEY_COMMAND} ({command!r}) failed with exit code {completed.returncode}",
            hint="Run the command by hand to see why.",
        )
    return completed.stdout

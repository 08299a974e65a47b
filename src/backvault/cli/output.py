"""Printing: exact path bytes, JSON that keeps them, progress on a terminal.

File names are bytes and need not be valid UTF-8. Text output writes them as they are
when standard output is not a terminal, so scripts get the exact bytes. On a terminal,
control characters and invalid bytes are escaped so they cannot garble the screen. JSON
output gives every path as a string; when the bytes are not valid UTF-8, that string has
U+FFFD in place of the invalid bytes and a ``<field>_base64`` field beside it carries the
exact bytes.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any


def path_fields(field: str, value: bytes) -> dict[str, str]:
    try:
        return {field: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            field: value.decode("utf-8", errors="replace"),
            f"{field}_base64": base64.b64encode(value).decode("ascii"),
        }


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def terminal_safe(value: bytes) -> str:
    text = value.decode("utf-8", errors="backslashreplace")
    return "".join(
        character if character.isprintable() else character.encode("unicode_escape").decode()
        for character in text
    )


def print_path_line(prefix: str, path: bytes) -> None:
    """Print ``prefix`` and ``path`` on one line, with the path bytes kept exact."""
    if sys.stdout.isatty():
        print(prefix + terminal_safe(path))
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(prefix.encode() + path + b"\n")
    sys.stdout.buffer.flush()


def print_error(message: str, hint: str | None = None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_time(time_ns: int) -> str:
    seconds = time_ns // 1_000_000_000
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"@{seconds}"


class ProgressLine:
    """A progress bar with a status line on standard error, shown only on a terminal.

    The total is unknown while a backup walks the tree, so the bar pulses. Rich is
    imported only when the bar is shown, to keep the start of scripted runs fast.
    """

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        self._task: Any = None
        if not (enabled and sys.stderr.isatty()):
            return

        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

        self._progress = Progress(
            SpinnerColumn(), BarColumn(), TextColumn("{task.description}"),
            console=Console(file=sys.stderr), transient=True,
        )
        self._task = self._progress.add_task("", total=None)
        self._progress.start()

    def update(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text[:100])

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

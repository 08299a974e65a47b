"""Run a command with wall-clock, CPU and peak memory measurement, and compare trees."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# GNU time (Debian package "time") reports the peak RSS of the command it runs, in KiB.
GNU_TIME = "/usr/bin/time"
KIB = 1024
COMPARE_READ_BYTES = 1 << 20


@dataclass
class StepResult:
    """Measurements of one command run by the harness."""

    step: str
    command: list[str]
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    max_rss_bytes: int
    exit_code: int
    timed_out: bool
    stdout_path: str
    stderr_path: str


class MeasurementError(Exception):
    """Raised when GNU time is missing or its output cannot be read."""


def check_gnu_time() -> None:
    """Raise MeasurementError unless GNU time is installed at GNU_TIME."""
    try:
        completed = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True,
                                   timeout=30, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as error:
        raise MeasurementError(f"GNU time was not found at {GNU_TIME}; install it with "
                               "`apt-get install -y time` (Debian package time)") from error
    if "GNU" not in completed.stdout + completed.stderr:
        raise MeasurementError(f"{GNU_TIME} is not GNU time; install it with "
                               "`apt-get install -y time` (Debian package time)")


def read_peak_rss_kib(path: Path) -> int:
    # With a non-zero exit, GNU time writes "Command exited with non-zero status N" or
    # "Command terminated by signal N" before the formatted line.
    lines = path.read_text(encoding="utf-8", errors="replace").split()
    if not lines or not lines[-1].isdigit():
        raise MeasurementError(f"cannot read the peak RSS from GNU time output {path}")
    return int(lines[-1])


class CommandFailed(Exception):
    """Raised when a measured command exits non-zero or times out."""

    def __init__(self, result: StepResult, stderr_tail: str) -> None:
        reason = "timed out" if result.timed_out else f"exited with status {result.exit_code}"
        super().__init__(
            f"step {result.step!r} failed: {' '.join(result.command)} {reason} "
            f"(stderr: {result.stderr_path})\n{stderr_tail}"
        )
        self.result = result


def read_tail(path: Path, max_bytes: int = 4000) -> str:
    with path.open("rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(max(0, size - max_bytes))
        return file.read().decode("utf-8", errors="replace")


def run_measured(step: str, command: Sequence[str], env: Mapping[str, str], log_dir: Path,
                 timeout_seconds: float, cwd: Path | None = None) -> StepResult:
    """Run ``command`` to completion under GNU time and measure it.

    Wall time is taken around the process's whole life. CPU time comes from the rusage that
    ``os.wait4`` returns for GNU time, which includes the command it waited for. Peak RSS
    comes from GNU time instead. A child of this process inherits this process's peak RSS
    through fork and exec, so its ``ru_maxrss`` is at least the harness's own peak. GNU time
    forks the command from a process of about 1 MB.

    Output goes to ``<log_dir>/<step>.stdout`` and ``.stderr``. Raises CommandFailed on a
    non-zero exit or a timeout.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{step}.stdout"
    stderr_path = log_dir / f"{step}.stderr"
    rss_path = log_dir / f"{step}.time"
    timed_out = threading.Event()

    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            [GNU_TIME, "--format=%M", f"--output={rss_path}", *command],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            env=dict(env), cwd=cwd, start_new_session=True,
        )

        def kill_on_timeout() -> None:
            timed_out.set()
            kill_process_group(process.pid)

        timer = threading.Timer(timeout_seconds, kill_on_timeout)
        timer.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            kill_process_group(process.pid)
            process.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - started

    exit_code = os.waitstatus_to_exitcode(status)
    # The child was reaped by os.wait4, so Popen must not wait for it again.
    process.returncode = exit_code
    try:
        max_rss_bytes = read_peak_rss_kib(rss_path) * KIB
    except MeasurementError:
        if exit_code == 0 and not timed_out.is_set():
            raise
        # A killed GNU time writes nothing; the failure itself is reported below.
        max_rss_bytes = 0
    result = StepResult(
        step=step,
        command=list(command),
        wall_seconds=wall,
        user_seconds=usage.ru_utime,
        system_seconds=usage.ru_stime,
        max_rss_bytes=max_rss_bytes,
        exit_code=exit_code,
        timed_out=timed_out.is_set(),
        stdout_path=str(stdout_path),
        stderr_path=str(stderr_path),
    )
    if exit_code != 0 or result.timed_out:
        raise CommandFailed(result, read_tail(stderr_path))
    return result


def kill_process_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def tree_size_bytes(path: Path) -> int:
    """Return the sum of regular file sizes under ``path`` (apparent size, like ``du -b``)."""
    total = 0
    for root, _directories, files in os.walk(path):
        for name in files:
            file_stat = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(file_stat.st_mode):
                total += file_stat.st_size
    return total


def read_tree(path: Path) -> None:
    """Read every regular file under ``path`` once, so the data starts in the page cache."""
    for root, _directories, files in os.walk(path):
        for name in files:
            file_path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(file_path).st_mode):
                with open(file_path, "rb") as file:
                    while file.read(COMPARE_READ_BYTES):
                        pass


@dataclass
class TreeComparison:
    """Outcome of comparing a restored tree with its source."""

    entries: int
    bytes_compared: int
    differences: list[str]
    mode_differences: list[str]

    @property
    def identical(self) -> bool:
        return not self.differences


def list_tree(path: Path) -> dict[str, os.stat_result]:
    entries: dict[str, os.stat_result] = {}
    for root, directories, files in os.walk(path):
        for name in directories + files:
            full = os.path.join(root, name)
            entries[os.path.relpath(full, path)] = os.lstat(full)
    return entries


def files_equal(first: str, second: str) -> bool:
    with open(first, "rb") as a, open(second, "rb") as b:
        while True:
            block_a = a.read(COMPARE_READ_BYTES)
            block_b = b.read(COMPARE_READ_BYTES)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def compare_trees(source: Path, restored: Path) -> TreeComparison:
    """Compare paths, entry types, file contents byte for byte and symlink targets.

    Differences in permission bits are collected separately and do not make the trees
    differ, because the comparison looks for lost or corrupted data.
    """
    source_entries = list_tree(source)
    restored_entries = list_tree(restored)
    differences: list[str] = []
    mode_differences: list[str] = []

    for name in sorted(source_entries.keys() - restored_entries.keys()):
        differences.append(f"missing from restore: {name}")
    for name in sorted(restored_entries.keys() - source_entries.keys()):
        differences.append(f"not in source: {name}")

    compared = 0
    for name in sorted(source_entries.keys() & restored_entries.keys()):
        expected = source_entries[name]
        actual = restored_entries[name]
        if stat.S_IFMT(expected.st_mode) != stat.S_IFMT(actual.st_mode):
            differences.append(f"entry type differs: {name}")
            continue
        if stat.S_IMODE(expected.st_mode) != stat.S_IMODE(actual.st_mode):
            mode_differences.append(
                f"{name}: {stat.S_IMODE(expected.st_mode):o} != {stat.S_IMODE(actual.st_mode):o}"
            )
        if stat.S_ISLNK(expected.st_mode):
            if os.readlink(source / name) != os.readlink(restored / name):
                differences.append(f"symlink target differs: {name}")
        elif stat.S_ISREG(expected.st_mode):
            if expected.st_size != actual.st_size:
                differences.append(
                    f"size differs: {name} ({expected.st_size} != {actual.st_size} bytes)")
            elif not files_equal(str(source / name), str(restored / name)):
                differences.append(f"content differs: {name}")
            compared += expected.st_size

    return TreeComparison(entries=len(source_entries), bytes_compared=compared,
                          differences=differences, mode_differences=mode_differences)

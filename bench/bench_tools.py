"""Command lines of the backup tools under test: backvault, restic and borg."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_measure import StepResult, run_measured

# Passwords of throwaway benchmark repositories. They protect no real data.
RESTIC_PASSWORD = "backvault-benchmark-restic"
BORG_PASSPHRASE = "backvault-benchmark-borg"
BORG_COMPRESSION = "zstd,3"
RESTIC_MIN_VERSION = (0, 14)
# Inherited variables with these prefixes could point a tool at another repository or
# change its settings, so they are dropped from the child environment.
TOOL_VARIABLE_PREFIXES = ("RESTIC_", "BORG_", "BACKVAULT_")


class ToolMissing(Exception):
    """Raised when a tool's executable is missing or too old to run the benchmark."""


class ToolOutputError(Exception):
    """Raised when a tool's output cannot be parsed or its restore cannot be found."""


@dataclass
class RunContext:
    """Directories, environment and limits of one tool's benchmark run."""

    run_dir: Path
    repository: Path
    log_dir: Path
    timeout_seconds: float
    env: dict[str, str] = field(default_factory=dict)

    def run(self, step: str, command: list[str], cwd: Path | None = None,
            env: dict[str, str] | None = None) -> StepResult:
        return run_measured(step, command, self.env if env is None else env, self.log_dir,
                            self.timeout_seconds, cwd=cwd)


def base_environment(home: Path) -> dict[str, str]:
    """Return this process's environment with a private home and no tool variables.

    Each run gets its own HOME and XDG directories, so tool caches from earlier runs are
    not reused and their size can be measured.
    """
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(TOOL_VARIABLE_PREFIXES)}
    env["HOME"] = str(home)
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    return env


def load_json_output(result: StepResult) -> Any:
    try:
        return json.loads(Path(result.stdout_path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ToolOutputError(f"{' '.join(result.command)} printed invalid JSON ({error}); "
                              f"output is in {result.stdout_path}") from error


def first_output_line(command: list[str]) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60,
                               check=False, stdin=subprocess.DEVNULL)
    output = (completed.stdout or completed.stderr).strip()
    if completed.returncode != 0 or not output:
        raise ToolMissing(f"{' '.join(command)} failed with status {completed.returncode}: "
                          f"{completed.stderr.strip()[:500]}")
    return output.splitlines()[0]


class BackupTool(ABC):
    """One backup program and the commands for each benchmark step."""

    name: str
    settings: str

    @abstractmethod
    def executable(self) -> str:
        """Return the executable's path, or raise ToolMissing with install instructions."""

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def prepare_environment(self, context: RunContext) -> None: ...

    @abstractmethod
    def init(self, context: RunContext) -> StepResult: ...

    @abstractmethod
    def backup(self, context: RunContext, source: Path, number: int) -> StepResult: ...

    @abstractmethod
    def restore_latest(self, context: RunContext, target: Path) -> StepResult: ...

    @abstractmethod
    def check(self, context: RunContext) -> StepResult: ...

    def list_snapshots(self, context: RunContext) -> tuple[StepResult, int] | None:
        """Run the tool's snapshot listing and return it with the snapshot count, if any."""
        return None

    def restored_root(self, target: Path, source: Path) -> Path:
        """Return the directory in ``target`` that contains the restored copy of ``source``."""
        # restic and borg recreate the absolute source path below the target.
        root = target / source.relative_to(source.anchor)
        if not root.is_dir():
            raise ToolOutputError(f"{self.name} restore did not create {root}")
        return root


class Restic(BackupTool):
    name = "restic"
    settings = ("`restic init --repository-version 2` (compression mode `auto`, restic's "
                "default for version 2 repositories); `restic backup DIR`; "
                "`restic restore latest --target DIR`; `restic check --read-data`; "
                "other settings at their defaults")

    def executable(self) -> str:
        path = shutil.which("restic")
        if path is None:
            raise ToolMissing("restic was not found on PATH; install it with "
                              "`apt-get install -y restic` (Debian package restic)")
        return path

    def version(self) -> str:
        line = first_output_line([self.executable(), "version"])
        match = re.search(r"restic (\d+)\.(\d+)", line)
        if match is None:
            raise ToolMissing(f"cannot parse the restic version from {line!r}")
        if (int(match.group(1)), int(match.group(2))) < RESTIC_MIN_VERSION:
            raise ToolMissing(f"{line} is too old: `restic init --repository-version 2` needs "
                              "restic 0.14 or later")
        return line

    def prepare_environment(self, context: RunContext) -> None:
        context.env["RESTIC_PASSWORD"] = RESTIC_PASSWORD
        context.env["RESTIC_REPOSITORY"] = str(context.repository)

    def init(self, context: RunContext) -> StepResult:
        return context.run("init", [self.executable(), "init", "--repository-version", "2"])

    def backup(self, context: RunContext, source: Path, number: int) -> StepResult:
        return context.run(f"backup-{number}", [self.executable(), "backup", str(source)])

    def restore_latest(self, context: RunContext, target: Path) -> StepResult:
        return context.run("restore", [self.executable(), "restore", "latest",
                                       "--target", str(target)])

    def check(self, context: RunContext) -> StepResult:
        return context.run("check", [self.executable(), "check", "--read-data"])

    def list_snapshots(self, context: RunContext) -> tuple[StepResult, int] | None:
        result = context.run("snapshots", [self.executable(), "snapshots", "--json"])
        snapshots = load_json_output(result)
        if not isinstance(snapshots, list):
            raise ToolOutputError(f"`restic snapshots --json` printed no JSON list; see "
                                  f"{result.stdout_path}")
        return result, len(snapshots)


class Borg(BackupTool):
    name = "borg"
    settings = ("`borg init --encryption=repokey-blake2`; "
                f"`borg create --compression {BORG_COMPRESSION}` (borg's default is lz4; zstd "
                "is what restic compresses with); `borg extract` of the newest archive; "
                "`borg check --verify-data`; other settings at their defaults")

    def __init__(self) -> None:
        self.latest_archive: str | None = None

    def executable(self) -> str:
        path = shutil.which("borg")
        if path is None:
            raise ToolMissing("borg was not found on PATH; install it with "
                              "`apt-get install -y borgbackup` (Debian package borgbackup)")
        return path

    def version(self) -> str:
        return first_output_line([self.executable(), "--version"])

    def prepare_environment(self, context: RunContext) -> None:
        context.env["BORG_PASSPHRASE"] = BORG_PASSPHRASE
        context.env["BORG_REPO"] = str(context.repository)

    def init(self, context: RunContext) -> StepResult:
        return context.run("init", [self.executable(), "init", "--encryption=repokey-blake2",
                                    str(context.repository)])

    def backup(self, context: RunContext, source: Path, number: int) -> StepResult:
        archive = f"backup-{number}"
        result = context.run(f"backup-{number}", [
            self.executable(), "create", "--compression", BORG_COMPRESSION,
            f"{context.repository}::{archive}", str(source),
        ])
        self.latest_archive = archive
        return result

    def restore_latest(self, context: RunContext, target: Path) -> StepResult:
        if self.latest_archive is None:
            raise ToolOutputError("borg restore was requested before any backup")
        # borg extract writes into the current directory.
        return context.run("restore", [self.executable(), "extract",
                                       f"{context.repository}::{self.latest_archive}"],
                           cwd=target)

    def check(self, context: RunContext) -> StepResult:
        return context.run("check", [self.executable(), "check", "--verify-data",
                                     str(context.repository)])

    def list_snapshots(self, context: RunContext) -> tuple[StepResult, int] | None:
        result = context.run("snapshots", [self.executable(), "list", "--json",
                                           str(context.repository)])
        listing = load_json_output(result)
        if not isinstance(listing, dict) or not isinstance(listing.get("archives"), list):
            raise ToolOutputError(f"`borg list --json` printed no archives list; see "
                                  f"{result.stdout_path}")
        return result, len(listing["archives"])


class Backvault(BackupTool):
    name = "backvault"
    settings = ("`backvault init --repo DIR --no-confirm --json`; `backvault backup --json DIR`; "
                "`backvault restore latest --target DIR`; `backvault check --read-data`; "
                "all settings at their defaults")

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def executable(self) -> str:
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            raise ToolMissing(
                f"backvault executable not found at {self.binary}; install the package with "
                "`python3 -m venv .venv && .venv/bin/pip install -e .` in the repository "
                "root, or pass --backvault-bin")
        return str(self.binary)

    def version(self) -> str:
        executable = self.executable()
        try:
            return first_output_line([executable, "--version"])
        except ToolMissing as error:
            return f"unknown (`backvault --version` failed: {error})"

    def prepare_environment(self, context: RunContext) -> None:
        context.env["BACKVAULT_REPOSITORY"] = str(context.repository)

    def key_file(self, context: RunContext) -> Path:
        return context.run_dir / "recovery-key"

    def init(self, context: RunContext) -> StepResult:
        # init creates the key, so BACKVAULT_RECOVERY_KEY_FILE is set only after it.
        result = context.run("init", [self.executable(), "init", "--repo",
                                      str(context.repository), "--no-confirm", "--json"])
        output = load_json_output(result)
        recovery_key = output.get("recovery_key") if isinstance(output, dict) else None
        if not isinstance(recovery_key, str) or not recovery_key:
            raise ToolOutputError("`backvault init --json` printed no JSON object with a "
                                  f"non-empty recovery_key string; see {result.stdout_path}")
        key_file = self.key_file(context)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(recovery_key + "\n")
        context.env["BACKVAULT_RECOVERY_KEY_FILE"] = str(key_file)
        return result

    def backup(self, context: RunContext, source: Path, number: int) -> StepResult:
        return context.run(f"backup-{number}",
                           [self.executable(), "backup", "--json", str(source)])

    def restore_latest(self, context: RunContext, target: Path) -> StepResult:
        return context.run("restore", [self.executable(), "restore", "latest",
                                       "--target", str(target)])

    def check(self, context: RunContext) -> StepResult:
        return context.run("check", [self.executable(), "check", "--read-data"])

    def list_snapshots(self, context: RunContext) -> tuple[StepResult, int] | None:
        result = context.run("snapshots", [self.executable(), "snapshots", "--json"])
        listing = load_json_output(result)
        if isinstance(listing, dict) and isinstance(listing.get("snapshots"), list):
            listing = listing["snapshots"]
        if not isinstance(listing, list):
            raise ToolOutputError("`backvault snapshots --json` printed neither a list nor an "
                                  f"object with a snapshots list; see {result.stdout_path}")
        return result, len(listing)

    def restored_root(self, target: Path, source: Path) -> Path:
        # NOTE: the backvault restore layout is not fixed yet. The harness accepts the
        # absolute source path below the target, the source's base name, or the target
        # itself, whichever contains the same top-level names as the source.
        expected_names = {entry.name for entry in source.iterdir()}
        candidates = [target / source.relative_to(source.anchor), target / source.name, target]
        for candidate in candidates:
            if candidate.is_dir() and {entry.name for entry in candidate.iterdir()} == \
                    expected_names:
                return candidate
        found = sorted(entry.name for entry in target.iterdir())[:10]
        raise ToolOutputError(f"cannot find the restored copy of {source} in {target}; "
                              f"its top level holds {found}")


def make_tool(name: str, backvault_binary: Path) -> BackupTool:
    if name == "restic":
        return Restic()
    if name == "borg":
        return Borg()
    if name == "backvault":
        return Backvault(backvault_binary)
    raise ValueError(f"unknown tool {name!r}; expected backvault, restic or borg")

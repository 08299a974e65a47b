"""Command lines of the backup tools under test: backvault, restic and borg.

backvault runs as three targets: on a local directory (``backvault``), on a backvault
server on 127.0.0.1 (``backvault-server``) and on a moto S3 server on 127.0.0.1
(``backvault-s3``). The remote targets start their server before init and stop it by its
PID after the last step.
"""

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

from bench_measure import StepResult, run_measured, tree_size_bytes
from bench_services import (
    AWS_VARIABLES_TO_DROP,
    BackvaultServer,
    MotoServer,
    ServiceError,
    ServiceStats,
    aws_environment,
)

# Passwords of throwaway benchmark repositories. They protect no real data.
RESTIC_PASSWORD = "backvault-benchmark-restic"
BORG_PASSPHRASE = "backvault-benchmark-borg"
BORG_COMPRESSION = "zstd,3"
RESTIC_MIN_VERSION = (0, 14)
# Inherited variables with these prefixes could point a tool at another repository or
# change its settings, so they are dropped from the child environment.
TOOL_VARIABLE_PREFIXES = ("RESTIC_", "BORG_", "BACKVAULT_")
TOOL_NAMES = ("backvault", "backvault-server", "backvault-s3", "restic", "borg")
SERVER_ACCOUNT = "bench"
SERVER_REPOSITORY = "bench"
S3_BUCKET = "backvault-bench"
S3_PREFIX = "bench"


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

    def start_services(self, context: RunContext) -> None:
        """Start the servers the repository lives on; raise ServiceError if one fails."""
        return None

    def stop_services(self) -> list[ServiceStats]:
        """Stop the servers that start_services started and return their resource use."""
        return []

    def repository_bytes(self, context: RunContext) -> int:
        """Return the sum of the sizes of the repository's files or objects."""
        return tree_size_bytes(context.repository)

    def repository_note(self) -> str:
        """Return what repository_bytes counts, where that is not the repository directory."""
        return ""

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

    def repository_location(self, context: RunContext) -> str:
        """Return the value of ``--repo`` and BACKVAULT_REPOSITORY."""
        return str(context.repository)

    def prepare_environment(self, context: RunContext) -> None:
        context.env["BACKVAULT_REPOSITORY"] = self.repository_location(context)

    def key_file(self, context: RunContext) -> Path:
        return context.run_dir / "recovery-key"

    def init(self, context: RunContext) -> StepResult:
        # init creates the key, so BACKVAULT_RECOVERY_KEY_FILE is set only after it.
        result = context.run("init", [self.executable(), "init", "--repo",
                                      self.repository_location(context), "--no-confirm",
                                      "--json"])
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


class BackvaultOnServer(Backvault):
    """backvault with its repository on a ``backvault server`` that this target starts."""

    name = "backvault-server"
    settings = ("client as for backvault, with `--repo http://127.0.0.1:PORT/"
                f"{SERVER_REPOSITORY}` and BACKVAULT_TOKEN; server started as `backvault "
                "server --data-dir DIR --host 127.0.0.1 --port PORT` (SQLite metadata, objects "
                "in DIR/blobs, plain HTTP); token from `backvault server account create "
                f"{SERVER_ACCOUNT} --data-dir DIR`")

    def __init__(self, binary: Path) -> None:
        super().__init__(binary)
        self.server: BackvaultServer | None = None

    def repository_location(self, context: RunContext) -> str:
        if self.server is None:
            raise ServiceError("the backvault server must be started before the repository "
                               "location is known")
        return f"{self.server.url}/{SERVER_REPOSITORY}"

    def prepare_environment(self, context: RunContext) -> None:
        # BACKVAULT_REPOSITORY and BACKVAULT_TOKEN are set once the server runs.
        pass

    def start_services(self, context: RunContext) -> None:
        self.server = BackvaultServer(Path(self.executable()), context.run_dir / "server-data",
                                      context.log_dir,
                                      base_environment(context.run_dir / "server-home"))
        self.server.start()
        context.env["BACKVAULT_TOKEN"] = self.server.create_account(SERVER_ACCOUNT)
        context.env["BACKVAULT_REPOSITORY"] = self.repository_location(context)

    def stop_services(self) -> list[ServiceStats]:
        if self.server is None or self.server.service is None:
            return []
        return [self.server.stop()]

    def repository_bytes(self, context: RunContext) -> int:
        if self.server is None:
            raise ServiceError("the backvault server was not started")
        return tree_size_bytes(self.server.blob_dir())

    def repository_note(self) -> str:
        return ("the server's object files under `server-data/blobs`; its SQLite metadata "
                "file is not counted")


class BackvaultOnS3(Backvault):
    """backvault with its repository in a bucket of a moto S3 server that this target starts."""

    name = "backvault-s3"
    settings = (f"client as for backvault, with `--repo s3://{S3_BUCKET}/{S3_PREFIX}`, "
                "AWS_ENDPOINT_URL at a moto server (`python -m moto.server -H 127.0.0.1 -p "
                "PORT`, objects in memory) and fake AWS credentials; bucket created with "
                "boto3")

    def __init__(self, binary: Path) -> None:
        super().__init__(binary)
        self.moto: MotoServer | None = None

    def python(self) -> Path:
        """Return the Python next to the backvault executable, which has moto and boto3."""
        for name in ("python3", "python"):
            candidate = self.binary.parent / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        raise ToolMissing(f"no python3 next to {self.binary}; backvault-s3 runs moto and "
                          "boto3 with the Python of backvault's virtual environment")

    def version(self) -> str:
        client = super().version()
        command = [str(self.python()), "-c", "import boto3, moto; "
                   "print(f'moto {moto.__version__}, boto3 {boto3.__version__}')"]
        try:
            libraries = first_output_line(command)
        except ToolMissing as error:
            raise ToolMissing(f"backvault-s3 needs moto and boto3 in {self.python()}: {error}; "
                              "install them with `.venv/bin/pip install -e '.[test]'`") \
                from error
        return f"{client}; {libraries}"

    def repository_location(self, context: RunContext) -> str:
        return f"s3://{S3_BUCKET}/{S3_PREFIX}"

    def start_services(self, context: RunContext) -> None:
        self.moto = MotoServer(self.python(), context.log_dir,
                               base_environment(context.run_dir / "moto-home"))
        self.moto.start()
        config_directory = context.run_dir / "aws-config"
        config_directory.mkdir(exist_ok=True)
        for name in AWS_VARIABLES_TO_DROP:
            context.env.pop(name, None)
        context.env.update(aws_environment(self.moto.endpoint_url, config_directory))
        self.run_s3_objects(context, ["create-bucket", S3_BUCKET])

    def run_s3_objects(self, context: RunContext, arguments: list[str]) -> str:
        """Run bench/s3_objects.py with the moto server's AWS variables; return its output."""
        command = [str(self.python()), str(Path(__file__).with_name("s3_objects.py")),
                   *arguments]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                   check=False, env=context.env, stdin=subprocess.DEVNULL)
        if completed.returncode != 0:
            raise ServiceError(f"{' '.join(command)} failed with status "
                               f"{completed.returncode}: {completed.stderr.strip()[-2000:]}")
        return completed.stdout

    def stop_services(self) -> list[ServiceStats]:
        if self.moto is None or self.moto.service is None:
            return []
        return [self.moto.stop()]

    def repository_bytes(self, context: RunContext) -> int:
        output = self.run_s3_objects(context, ["size", S3_BUCKET, f"{S3_PREFIX}/"])
        try:
            return int(json.loads(output)["bytes"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ToolOutputError(f"s3_objects.py size printed {output!r}, not a JSON object "
                                  "with a bytes count") from error

    def repository_note(self) -> str:
        return f"the sizes of the S3 objects under `s3://{S3_BUCKET}/{S3_PREFIX}/`"


def make_tool(name: str, backvault_binary: Path) -> BackupTool:
    if name == "restic":
        return Restic()
    if name == "borg":
        return Borg()
    if name == "backvault":
        return Backvault(backvault_binary)
    if name == "backvault-server":
        return BackvaultOnServer(backvault_binary)
    if name == "backvault-s3":
        return BackvaultOnS3(backvault_binary)
    raise ValueError(f"unknown tool {name!r}; expected one of {', '.join(TOOL_NAMES)}")

"""Start and stop the local servers that the remote backvault targets write to.

Both servers listen on 127.0.0.1 only: a ``backvault server`` with local storage, and a
moto S3 server (``python -m moto.server``) that keeps every object in memory. Each runs
as a child process and is stopped by its PID.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.1
PROBE_TIMEOUT_SECONDS = 1.0
START_ATTEMPTS = 3  # another process may take the free port before the server binds it
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

BACKVAULT_HEALTH_PATH = "/healthz"
# moto's state as JSON: cheap, and present in every moto server version.
MOTO_READY_PATH = "/moto-api/data.json"

# The moto server accepts any credentials. These only keep boto3 from looking for real
# ones in the environment or in ~/.aws.
FAKE_ACCESS_KEY_ID = "AKIABENCHMARKFAKE000"
FAKE_SECRET_ACCESS_KEY = "benchmark-fake-secret-access-key"
FAKE_REGION = "us-east-1"


class ServiceError(Exception):
    """Raised when a server cannot be started or an operator command on it fails."""


@dataclass
class ServiceStats:
    """Resource use of one server process over its whole life, read just before its stop."""

    name: str
    command: list[str]
    pid: int
    peak_rss_bytes: int | None
    cpu_seconds: float | None
    log_path: str


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def responds_ok(url: str) -> bool:
    """Return whether a GET of ``url`` gets HTTP 200 within PROBE_TIMEOUT_SECONDS."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            response.read()
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def end_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the thread that started it ends.

    A harness that is killed, so that its ``finally`` blocks never run, then leaves no
    server behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def read_process_usage(pid: int) -> tuple[int | None, float | None]:
    """Return the peak RSS in bytes (VmHWM) and the CPU seconds used so far by ``pid``."""
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak_rss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat_file:
            # The command name in field 2 may contain spaces, so split after its ")".
            fields = stat_file.read().rpartition(")")[2].split()
        # utime and stime are fields 14 and 15 of proc(5), in clock ticks.
        ticks = int(fields[11]) + int(fields[12])
        cpu_seconds = ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return peak_rss, cpu_seconds


class ServiceProcess:
    """One server child process that serves HTTP on 127.0.0.1 once it is ready."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str],
                 log_path: Path, is_ready: Callable[[], bool]) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.is_ready = is_ready
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError(f"{self.name} was not started")
        return self.process.pid

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start the process and wait until ``is_ready`` returns True.

        Raises ServiceError with the end of the server's log if the process exits first
        or is not ready within ``timeout`` seconds. The process is stopped in both cases.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, preexec_fn=end_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited with status {self.process.returncode} "
                                   f"while starting:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(POLL_INTERVAL_SECONDS)
        self.stop()
        raise ServiceError(f"{self.name} did not respond within {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> ServiceStats:
        """Send SIGTERM to the process by its PID, or SIGKILL if it lingers; return its use.

        Peak RSS and CPU time are read from /proc just before the signal, so they cover the
        whole life of the server. They are None if the process had already exited.
        """
        if self.process is None:
            raise ServiceError(f"{self.name} was not started")
        peak_rss, cpu_seconds = None, None
        if self.process.poll() is None:
            peak_rss, cpu_seconds = read_process_usage(self.process.pid)
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        return ServiceStats(name=self.name, command=self.command, pid=self.process.pid,
                            peak_rss_bytes=peak_rss, cpu_seconds=cpu_seconds,
                            log_path=str(self.log_path))

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", errors="replace")


def start_with_free_port(make_service: Callable[[int], ServiceProcess]) -> ServiceProcess:
    """Start the service that ``make_service`` builds for a free port, retrying on a clash."""
    for attempt in range(1, START_ATTEMPTS + 1):
        service = make_service(find_free_port())
        try:
            service.start()
        except ServiceError:
            if attempt == START_ATTEMPTS:
                raise
            continue
        return service
    raise AssertionError("unreachable: the loop returns or raises")


# --- backvault server ---------------------------------------------------------------------


class BackvaultServer:
    """A ``backvault server`` on 127.0.0.1 with SQLite metadata and objects in ``data_dir``."""

    def __init__(self, binary: Path, data_dir: Path, log_dir: Path,
                 env: Mapping[str, str]) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.env = dict(env)
        self.log_dir = log_dir
        self.service: ServiceProcess | None = None
        self.url = ""

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

        def make_service(port: int) -> ServiceProcess:
            url = f"http://{HOST}:{port}"
            command = [str(self.binary), "server", "--data-dir", str(self.data_dir),
                       "--host", HOST, "--port", str(port)]
            log_path = self.log_dir / f"backvault-server-{port}.log"
            service = ServiceProcess("backvault server", command, self.env, log_path,
                                     lambda: responds_ok(url + BACKVAULT_HEALTH_PATH))
            self.url = url
            return service

        self.service = start_with_free_port(make_service)

    def create_account(self, name: str) -> str:
        """Create an account with ``backvault server account create``; return its token.

        The command prints the token alone on the last line of its output.
        """
        command = [str(self.binary), "server", "account", "create", name,
                   "--data-dir", str(self.data_dir)]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                   check=False, env=self.env, stdin=subprocess.DEVNULL)
        lines = completed.stdout.strip().splitlines()
        if completed.returncode != 0 or not lines:
            raise ServiceError(f"{' '.join(command)} failed with status "
                               f"{completed.returncode}: {completed.stderr.strip()[:1000]}")
        token = lines[-1].strip()
        if not token.startswith("bv_"):
            # The token is not printed, because the line may be one.
            raise ServiceError(f"{' '.join(command)} printed no token starting with bv_ on "
                               "its last line")
        return token

    def blob_dir(self) -> Path:
        """Return the directory of the objects of every account (layout in docs/server.md)."""
        return self.data_dir / "blobs"

    def stop(self) -> ServiceStats:
        if self.service is None:
            raise ServiceError("backvault server was not started")
        return self.service.stop()


# --- moto S3 server -----------------------------------------------------------------------


def aws_environment(endpoint_url: str, config_directory: Path) -> dict[str, str]:
    """Return AWS variables that point boto3 at ``endpoint_url`` with fake credentials.

    The AWS configuration and credentials files are looked up in ``config_directory``,
    which should be empty, so no profile of this machine is read.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": FAKE_REGION,
        "AWS_CONFIG_FILE": str(config_directory / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_directory / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# Inherited AWS variables that would override or add to what aws_environment sets.
AWS_VARIABLES_TO_DROP = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                         "AWS_DEFAULT_PROFILE", "AWS_REGION",
                         "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


class MotoServer:
    """A moto S3 server on 127.0.0.1, run by the Python that has moto installed."""

    def __init__(self, python: Path, log_dir: Path, env: Mapping[str, str]) -> None:
        self.python = python
        self.log_dir = log_dir
        self.env = dict(env)
        self.service: ServiceProcess | None = None
        self.endpoint_url = ""

    def start(self) -> None:
        def make_service(port: int) -> ServiceProcess:
            url = f"http://{HOST}:{port}"
            command = [str(self.python), "-m", "moto.server", "-H", HOST, "-p", str(port)]
            log_path = self.log_dir / f"moto-server-{port}.log"

            def is_ready() -> bool:
                # The probe's line in the log shows that this process responded, and not
                # another server that was bound to the port already.
                return responds_ok(url + MOTO_READY_PATH) and \
                    MOTO_READY_PATH in log_path.read_text(errors="replace")

            service = ServiceProcess("moto S3 server", command, self.env, log_path, is_ready)
            self.endpoint_url = url
            return service

        self.service = start_with_free_port(make_service)

    def stop(self) -> ServiceStats:
        if self.service is None:
            raise ServiceError("moto S3 server was not started")
        return self.service.stop()

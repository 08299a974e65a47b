"""Start the moto S3 server as a real process on 127.0.0.1, for tests that need S3.

The server speaks the S3 API over HTTP, so the code under test runs its real client,
retries and error handling against it. It keeps all data in memory, so a stopped server
loses every bucket.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds, generous because moto usually responds within one
STOP_TIMEOUT = 10.0  # seconds to wait after SIGTERM before SIGKILL
POLL_INTERVAL = 0.05  # seconds between readiness probes
FREE_PORT_ATTEMPTS = 3  # another process may take a free port before moto binds it
READY_PROBE_PATH = "/moto-api/data.json"  # moto's state as JSON, cheap and always present
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Fake credentials for the moto server, which accepts any. The secret is distinctive so
# that a test can check it never shows up in a message.
FAKE_ACCESS_KEY_ID = "AKIAFAKEFORTESTS0000"
FAKE_SECRET_ACCESS_KEY = "fake-secret-access-key-for-tests"
FAKE_REGION = "us-east-1"


class MotoServer:
    """A running ``python -m moto.server`` process; :meth:`stop` ends it by its PID."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self._process = process
        self.port = port
        self.pid = process.pid
        self.endpoint_url = f"http://{HOST}:{port}"
        self.log_path = log_path

    def stop(self) -> None:
        """Send SIGTERM to the server (SIGKILL if it lingers) and remove its log file."""
        if self._process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._process.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def start_moto_server(port: int | None = None, *, timeout: float = START_TIMEOUT) -> MotoServer:
    """Start moto on 127.0.0.1 and return once it responds to HTTP requests.

    Without ``port`` a free port is chosen. Pass the port of a stopped server to start a
    new one at the same endpoint, for example to test that clients retry while it is down.

    On Linux the server also gets SIGTERM when the thread that started it ends, so a test
    run that is killed leaves no server behind. Start it from a thread that lives as long
    as the server is needed, such as the main thread.
    """
    if port is not None:
        return _start_on_port(port, timeout)

    for attempt in range(1, FREE_PORT_ATTEMPTS + 1):
        try:
            return _start_on_port(find_free_port(), timeout)
        except RuntimeError:
            if attempt == FREE_PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


def aws_environment(endpoint_url: str, config_directory: Path) -> dict[str, str | None]:
    """Return the environment variables that point AWS clients at a test endpoint.

    A value of None means the variable must be unset. ``config_directory`` should be an
    empty directory: the AWS configuration and credentials files are looked up there, so
    that profiles of the machine running the tests are never read.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_DEFAULT_PROFILE": None,
        "AWS_DEFAULT_REGION": FAKE_REGION,
        "AWS_REGION": None,
        "AWS_CONFIG_FILE": str(config_directory / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_directory / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _start_on_port(port: int, timeout: float) -> MotoServer:
    log_descriptor, log_name = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(log_descriptor, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_end_with_parent if sys.platform == "linux" else None,
        )
    server = MotoServer(process, port, log_path)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")
            server.stop()
            raise RuntimeError(
                f"moto server on port {port} exited with status {process.returncode}:\n{output}"
            )
        # The log line of the probe proves that this process responded, and not another
        # server that held the port already.
        if _responds_ok(port) and READY_PROBE_PATH in log_path.read_text(errors="replace"):
            return server
        time.sleep(POLL_INTERVAL)

    output = log_path.read_text(errors="replace")
    server.stop()
    raise RuntimeError(f"moto server on port {port} did not answer within {timeout} s:\n{output}")


def _end_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child process when its parent thread ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _responds_ok(port: int) -> bool:
    """Return whether a server on ``port`` returns 200 OK for the moto state request."""
    connection = http.client.HTTPConnection(HOST, port, timeout=1.0)
    try:
        connection.request("GET", READY_PROBE_PATH)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return response.status == 200

#!/usr/bin/env python3
"""Measure small-object requests per second against a backvault server on 127.0.0.1.

The script starts its own ``backvault server`` with local storage and creates an account
and a repository. It then runs wrk (Debian package wrk) twice for a fixed time: PUTs of
4 KiB objects under new names, then GETs of the objects that the PUT run stored. It stops the server
by its PID and reports requests per second and wrk's latency percentiles.

    python3 bench/load_test.py --work /tmp/bench-load [--seconds 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench_services import BackvaultServer, ServiceError, ServiceStats

BENCH_DIR = Path(__file__).resolve().parent
REPOSITORY_ROOT = BENCH_DIR.parent
PUT_SCRIPT = BENCH_DIR / "wrk" / "put_unique.lua"
GET_SCRIPT = BENCH_DIR / "wrk" / "get_listed.lua"

ACCOUNT = "load"
REPOSITORY = "load"
OBJECT_KIND = "index"
OBJECT_BYTES = 4096
BODY_SEED = 20240601
DEFAULT_SECONDS = 10
DEFAULT_THREADS = 2
DEFAULT_CONNECTIONS = 8
REQUEST_TIMEOUT_SECONDS = 5  # wrk counts a response slower than this as a timeout error
# wrk stops itself after --duration; the harness kills it if it has not ended this much later.
WRK_GRACE_SECONDS = 60
HTTP_TIMEOUT_SECONDS = 30

WRK_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class LoadTestError(Exception):
    """Raised when wrk is missing, fails, or its output cannot be read."""


@dataclass
class LoadResult:
    """wrk's summary of one fixed-time run of one request kind."""

    operation: str
    command: str
    duration_seconds: float
    requests: int
    requests_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    non_2xx_responses: int
    socket_errors: dict[str, int]
    wrk_output_path: str


@dataclass
class LoadTestReport:
    """Settings and results of one load test against one server."""

    wrk_version: str
    threads: int
    connections: int
    seconds: int
    object_bytes: int
    object_kind: str
    results: list[LoadResult] = field(default_factory=list)
    objects_stored: int | None = None
    server: ServiceStats | None = None
    notes: list[str] = field(default_factory=list)


def wrk_version() -> str:
    """Return wrk's version line, or raise LoadTestError with install instructions."""
    executable = shutil.which("wrk")
    if executable is None:
        raise LoadTestError("wrk was not found on PATH; install it with "
                            "`apt-get install -y wrk` (Debian package wrk)")
    # wrk prints its version and usage on an unknown option, and exits with status 1.
    completed = subprocess.run([executable, "--version"], capture_output=True, text=True,
                               timeout=30, check=False, stdin=subprocess.DEVNULL)
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    if not lines or not lines[0].startswith("wrk"):
        raise LoadTestError(f"`wrk --version` printed no version line: {lines[:3]}")
    return lines[0]


def wrk_seconds(text: str) -> float:
    """Convert a wrk duration such as ``812.00us`` or ``3.21ms`` to seconds."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise LoadTestError(f"cannot read the wrk duration {text!r}")
    return float(match.group(1)) * WRK_UNIT_SECONDS[match.group(2)]


def parse_wrk_output(operation: str, command: str, output: str,
                     output_path: Path) -> LoadResult:
    """Read the request count, duration, rate, percentiles and errors of a wrk summary."""
    summary = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.MULTILINE)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([0-9.]+\w+)\s*$", output, re.MULTILINE))
    if summary is None or rate is None or set(percentiles) != {"50", "99"}:
        raise LoadTestError("wrk output has no request count, Requests/sec line or latency "
                            "distribution (was --latency passed?)")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors: dict[str, int] = {}
    if socket_errors is not None:
        errors = dict(zip(("connect", "read", "write", "timeout"),
                          (int(value) for value in socket_errors.groups()), strict=True))
    return LoadResult(
        operation=operation,
        command=command,
        duration_seconds=wrk_seconds(summary.group(2)),
        requests=int(summary.group(1)),
        requests_per_second=float(rate.group(1)),
        latency_p50_ms=wrk_seconds(percentiles["50"]) * 1000,
        latency_p99_ms=wrk_seconds(percentiles["99"]) * 1000,
        non_2xx_responses=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=errors,
        wrk_output_path=str(output_path),
    )


def display_path(path: Path) -> str:
    """Return ``path`` relative to the repository root when it is inside it."""
    return str(path.relative_to(REPOSITORY_ROOT)) if path.is_relative_to(REPOSITORY_ROOT) \
        else str(path)


def run_wrk(operation: str, script: Path, url: str, script_arguments: list[str],
            settings: LoadTestReport, env: dict[str, str], log_dir: Path) -> LoadResult:
    """Run wrk for ``settings.seconds`` with ``script`` and return its parsed summary."""
    command = ["wrk", f"--threads={settings.threads}", f"--connections={settings.connections}",
               f"--duration={settings.seconds}s", f"--timeout={REQUEST_TIMEOUT_SECONDS}s",
               "--latency", f"--script={display_path(script)}", url, "--", *script_arguments]
    output_path = log_dir / f"wrk-{operation}.out"
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False,
                                   cwd=REPOSITORY_ROOT, env=env, stdin=subprocess.DEVNULL,
                                   timeout=settings.seconds + WRK_GRACE_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise LoadTestError(f"{shlex.join(command)} did not end within "
                            f"{settings.seconds + WRK_GRACE_SECONDS} s") from error
    output_path.write_text(completed.stdout + completed.stderr, encoding="utf-8")
    if completed.returncode != 0:
        raise LoadTestError(f"{shlex.join(command)} failed with status {completed.returncode}; "
                            f"output is in {output_path}:\n{completed.stderr.strip()[-2000:]}")
    # The token is passed in the environment, so the recorded command contains no secret.
    return parse_wrk_output(operation, "BACKVAULT_TOKEN=... " + shlex.join(command),
                            completed.stdout, output_path)


def api_request(method: str, url: str, token: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        raise LoadTestError(f"{method} {url} failed with HTTP {error.code}: "
                            f"{error.read()[:500]!r}") from error


def list_object_names(base_url: str, token: str) -> list[str]:
    listing = json.loads(api_request("GET", f"{base_url}/v1/repos/{REPOSITORY}/{OBJECT_KIND}",
                                     token))
    return [entry["name"] for entry in listing["objects"]]


def run_load_test(binary: Path, work: Path, seconds: int = DEFAULT_SECONDS,
                  threads: int = DEFAULT_THREADS,
                  connections: int = DEFAULT_CONNECTIONS) -> LoadTestReport:
    """Start a server under ``work``, run the PUT and GET load, stop the server, report.

    Raises LoadTestError if wrk fails or the server stores fewer objects than wrk counted
    as successful PUTs, and ServiceError if the server does not start.
    """
    report = LoadTestReport(wrk_version=wrk_version(), threads=threads, connections=connections,
                            seconds=seconds, object_bytes=OBJECT_BYTES, object_kind=OBJECT_KIND)
    if work.exists():
        shutil.rmtree(work)
    log_dir = work / "logs"
    log_dir.mkdir(parents=True)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("BACKVAULT_")}
    env["HOME"] = str(work / "home")

    server = BackvaultServer(binary, work / "server-data", log_dir, env)
    server.start()
    try:
        token = server.create_account(ACCOUNT)
        api_request("POST", f"{server.url}/v1/repos/{REPOSITORY}", token)
        run_put_and_get(report, server.url, token, work, env, log_dir)
    finally:
        report.server = server.stop()
    return report


def run_put_and_get(report: LoadTestReport, base_url: str, token: str, work: Path,
                    env: dict[str, str], log_dir: Path) -> None:
    # Seeded random bytes, so the server cannot gain from compressible bodies.
    body = random.Random(BODY_SEED).randbytes(OBJECT_BYTES)
    body_path = work / "object-4k.bin"
    body_path.write_bytes(body)
    content_hash = f"sha256={hashlib.sha256(body).hexdigest()}"
    repository_path = f"/v1/repos/{REPOSITORY}"
    wrk_env = {**env, "BACKVAULT_TOKEN": token}

    put = run_wrk("put", PUT_SCRIPT, base_url,
                  [repository_path, OBJECT_KIND, str(body_path), content_hash],
                  report, wrk_env, log_dir)
    report.results.append(put)

    names = list_object_names(base_url, token)
    report.objects_stored = len(names)
    successful_puts = put.requests - put.non_2xx_responses
    # wrk does not count requests still in flight when the time is up, so the server may
    # hold a few more objects than wrk counted, but never fewer.
    if len(names) < successful_puts:
        raise LoadTestError(f"the server lists {len(names)} objects after wrk counted "
                            f"{successful_puts} successful PUTs")
    if not names:
        raise LoadTestError("the PUT run stored no object, so there is nothing to read")
    stored = api_request("GET", f"{base_url}{repository_path}/{OBJECT_KIND}/{names[0]}", token)
    if stored != body:
        raise LoadTestError(f"object {names[0]} reads back {len(stored)} bytes that differ "
                            "from the body that was stored")

    names_path = work / "object-names.txt"
    names_path.write_text("\n".join(names) + "\n", encoding="utf-8")
    get = run_wrk("get", GET_SCRIPT, base_url, [repository_path, OBJECT_KIND, str(names_path)],
                  report, wrk_env, log_dir)
    report.results.append(get)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure small-object PUT and GET requests "
                                                 "per second against a local backvault server.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/backvault-load-test"),
                        help="directory for the server's data and the logs; emptied first "
                             "(default: /tmp/backvault-load-test)")
    parser.add_argument("--backvault-bin", type=Path,
                        default=REPOSITORY_ROOT / ".venv" / "bin" / "backvault",
                        help="backvault executable (default: .venv/bin/backvault)")
    parser.add_argument("--seconds", type=int, default=DEFAULT_SECONDS,
                        help=f"duration of each wrk run in seconds (default: {DEFAULT_SECONDS})")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"wrk threads (default: {DEFAULT_THREADS})")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                        help=f"open HTTP connections (default: {DEFAULT_CONNECTIONS})")
    arguments = parser.parse_args(argv)
    try:
        report = run_load_test(arguments.backvault_bin.resolve(), arguments.work.resolve(),
                               arguments.seconds, arguments.threads, arguments.connections)
    except (LoadTestError, ServiceError) as error:
        print(f"load_test.py: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

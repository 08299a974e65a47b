#!/usr/bin/env python3
"""Measure full password logins per second through the key vault of a backvault server.

The script starts its own server on 127.0.0.1 under uvicorn with ``--workers`` processes
(the app comes from :func:`create_app_from_environment` below), with the vault keys in a
key file and the metadata in SQLite, or in PostgreSQL with ``--database``. It registers
one password record per client thread, with the identity key-stretching function, so
Argon2id is left out: it runs on the client, before KE3, and costs the server nothing.
Then ``--clients`` processes of ``--threads`` threads each run complete logins for
``--seconds``: KE1 to KE2, KE3 to the released wrapped key, and the unwrap of the master
key, with the client code that the command line uses. Every login is checked to return
the right master key. Client and server share the machine's cores.

It reports logins per second, latency percentiles of whole logins, and the server's CPU
seconds per login. A second, in-process measurement gives the server-side cost of one
login without HTTP: the time of ``VaultService.login_start`` and ``login_finish`` alone,
in one thread.

Run it with the Python of backvault's virtual environment::

    .venv/bin/python bench/vault_login_bench.py --work /tmp/bench-vault [--seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
ENV_CONFIG = "BACKVAULT_BENCH_SERVER_SETTINGS"  # JSON settings for the app factory
PASSWORD = b"benchmark password"
REPOSITORY_ID = bytes(16)
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
WARMUP_SECONDS = 2.0
IN_PROCESS_LOGINS = 2000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def create_app_from_environment() -> Any:
    """Build the server app for uvicorn's ``--factory``, from the settings in ENV_CONFIG."""
    from backvault.server.app import create_app
    from backvault.server.config import build_config
    from backvault.server.observability import configure_logging

    settings = json.loads(os.environ[ENV_CONFIG])
    config = build_config(settings)
    configure_logging(config.log_level)
    return create_app(config)


# Results --------------------------------------------------------------------------------


@dataclass
class LoadResult:
    workers: int
    client_processes: int
    client_threads: int
    database: str
    seconds: float
    logins: int
    errors: int
    logins_per_second: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_max: float
    server_cpu_ms_per_login: float


@dataclass
class InProcessResult:
    logins: int
    login_start_us: float
    login_finish_us: float
    server_us_per_login: float
    client_us_per_login: float


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


# The server -----------------------------------------------------------------------------


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """uvicorn with the backvault app and N workers, stopped by its PID."""

    def __init__(self, work: Path, workers: int, database: str | None, log_level: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = find_free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = work / "server.log"
        settings: dict[str, Any] = {
            "data_dir": str(work / "data"), "log_level": log_level,
            # All load comes from one address, so the rate limits would throttle it.
            "vault": {"account_rate_limit": 0, "address_rate_limit": 0},
        }
        if database:
            settings["database"] = database
        self.settings = settings
        argv = [
            sys.executable, "-m", "uvicorn", "vault_login_bench:create_app_from_environment",
            "--factory", "--app-dir", str(BENCH_DIR), "--host", HOST, "--port", str(self.port),
            "--workers", str(workers), "--log-level", "warning", "--no-access-log",
        ]
        env = {**os.environ, ENV_CONFIG: json.dumps(settings)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start within {START_TIMEOUT_SECONDS} s")

    def cpu_seconds(self) -> float:
        """Return the CPU time of the uvicorn process and its workers so far."""
        total = 0.0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        return total

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def create_account(server: Server, name: str) -> str:
    from backvault.server.config import build_config
    from backvault.server.metadata import Metadata

    metadata = Metadata(build_config(server.settings).database_url)
    try:
        account = metadata.create_account(name)
        _, token = metadata.issue_token(account.id)
    finally:
        metadata.close()
    return token


# The clients ----------------------------------------------------------------------------


@dataclass
class ClientJob:
    url: str
    token: str
    slots: list[bytes]  # encoded key slots, one per thread
    master_key: bytes
    start_at: float  # time.time() when the measured window starts
    end_at: float


class LoadToolTransport:
    """The login half of the vault API over one keep-alive connection of http.client.

    The load tool's HTTP client shares the two cores with the server, so it must be
    light: the command line's httpx client spends more CPU on a login's two requests
    than the server does. The OPAQUE and unwrap steps are the command line's own
    (``open_password_slot``); only the HTTP layer is this small one.
    """

    def __init__(self, url: str, token: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def close(self) -> None:
        self._connection.close()

    def _post(self, path: str, body: dict[str, str]) -> dict[str, Any]:
        self._connection.request(
            "POST", f"/v1/vault{path}", body=json.dumps(body), headers=self._headers
        )
        response = self._connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {payload[:200]!r}")
        result: dict[str, Any] = json.loads(payload)
        return result

    def login_start(self, record_id: str, ke1: bytes) -> Any:
        from backvault.crypto.password_slot import LoginChallenge

        body = self._post(f"/records/{record_id}/logins", {"ke1": _b64(ke1)})
        return LoginChallenge(
            login_id=body["login_id"], ke2=base64.b64decode(body["ke2"]),
            guesses_left=body["guesses_left"],
        )

    def login_finish(self, login_id: str, ke3: bytes) -> bytes:
        body = self._post(f"/logins/{login_id}", {"ke3": _b64(ke3)})
        return base64.b64decode(body["release"])

    def login_abort(self, login_id: str) -> int:
        raise RuntimeError("the benchmark's passwords are right; no login should fail")

    def register_start(self, request: bytes) -> tuple[str, bytes]:
        raise NotImplementedError

    def register_finish(
        self, record_id: str, record: bytes, wrapped_key: bytes, guess_limit: int | None
    ) -> None:
        raise NotImplementedError

    def delete_record(self, record_id: str) -> bool:
        raise NotImplementedError


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def run_client(job: ClientJob) -> tuple[list[float], int]:
    """Run one thread of logins per slot; return the latencies in the window and errors."""
    from backvault.crypto.password_slot import open_password_slot
    from backvault.crypto.slots import decode_slot

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def loop(encoded: bytes) -> None:
        slot = decode_slot(encoded, subject="benchmark slot")
        transport = LoadToolTransport(job.url, job.token)
        try:
            while True:
                started = time.time()
                if started >= job.end_at:
                    return
                try:
                    master_key = open_password_slot(slot, PASSWORD, REPOSITORY_ID, transport)
                    correct = master_key.raw == job.master_key
                except Exception:
                    correct = False
                    transport.close()
                    transport = LoadToolTransport(job.url, job.token)
                finished = time.time()
                with lock:
                    if not correct:
                        errors[0] += 1
                    elif started >= job.start_at and finished <= job.end_at:
                        latencies.append(finished - started)
        finally:
            transport.close()

    threads = [threading.Thread(target=loop, args=(slot,)) for slot in job.slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def register_slots(url: str, token: str, count: int, master_key: Any) -> list[bytes]:
    from backvault.crypto.password_slot import create_password_slot
    from backvault.crypto.slots import encode_slot
    from backvault.opaque import IdentityKsf
    from backvault.vault.client import HttpVaultClient

    with HttpVaultClient(url, token) as client:
        return [
            encode_slot(create_password_slot(
                PASSWORD, master_key, REPOSITORY_ID, vault_url=url, transport=client,
                ksf=IdentityKsf(),
            ))
            for _ in range(count)
        ]


def measure_load(args: argparse.Namespace, work: Path) -> LoadResult:
    from backvault.crypto.keys import MasterKey

    server = Server(work, args.workers, args.database, args.log_level)
    try:
        master_key = MasterKey.generate()
        jobs = []
        start_at = time.time() + WARMUP_SECONDS + 3.0  # leaves time to start the clients
        end_at = start_at + args.seconds
        for index in range(args.clients):
            token = create_account(server, f"bench-{index}-{os.getpid()}")
            slots = register_slots(server.url, token, args.threads, master_key)
            jobs.append(ClientJob(server.url, token, slots, master_key.raw, start_at, end_at))

        context = multiprocessing.get_context("spawn")
        with context.Pool(args.clients) as pool:
            pending = pool.map_async(run_client, jobs)
            time.sleep(max(0.0, start_at - time.time()))
            cpu_before = server.cpu_seconds()
            time.sleep(max(0.0, end_at - time.time()))
            cpu_after = server.cpu_seconds()
            results = pending.get()
    finally:
        server.stop()

    latencies = [latency for result in results for latency in result[0]]
    errors = sum(result[1] for result in results)
    logins = len(latencies)
    return LoadResult(
        workers=args.workers, client_processes=args.clients, client_threads=args.threads,
        database="postgresql" if args.database else "sqlite", seconds=args.seconds,
        logins=logins, errors=errors, logins_per_second=logins / args.seconds,
        latency_ms_p50=1000 * percentile(latencies, 0.50),
        latency_ms_p90=1000 * percentile(latencies, 0.90),
        latency_ms_p99=1000 * percentile(latencies, 0.99),
        latency_ms_max=1000 * max(latencies),
        server_cpu_ms_per_login=1000 * (cpu_after - cpu_before) / max(logins, 1),
    )


# In-process server cost -----------------------------------------------------------------


def measure_in_process(work: Path, logins: int) -> InProcessResult:
    """Time the vault service's two login calls without HTTP, in one thread."""
    from backvault.crypto.keys import MasterKey
    from backvault.crypto.password_slot import LoginChallenge, create_password_slot
    from backvault.opaque import IdentityKsf, client_login_finish, client_login_start
    from backvault.server.metadata import Metadata, vault_tables
    from backvault.vault.keystore import KeyFileStore
    from backvault.vault.protocol import LOGIN_CONTEXT, open_release
    from backvault.vault.service import VaultService
    from backvault.vault.settings import VaultSettings
    from backvault.vault.store import VaultStore

    work.mkdir(parents=True, exist_ok=True)
    metadata = Metadata(f"sqlite:///{work / 'in-process.sqlite3'}")
    metadata.create_schema()
    store = VaultStore(metadata.engine, vault_tables, sqlite=True)
    service = VaultService(
        store, KeyFileStore.open_or_create(work / "in-process-keys"), VaultSettings()
    )
    account_id = metadata.create_account(f"in-process-{os.getpid()}").id

    class Transport:
        def register_start(self, request: bytes) -> tuple[str, bytes]:
            registration = service.register_start(account_id, request)
            return registration.record_id, registration.response

        def register_finish(
            self, record_id: str, record: bytes, wrapped_key: bytes, guess_limit: int | None
        ) -> None:
            service.register_finish(account_id, record_id, record, wrapped_key, guess_limit)

        def login_start(self, record_id: str, ke1: bytes) -> LoginChallenge:
            raise NotImplementedError

        def login_finish(self, login_id: str, ke3: bytes) -> bytes:
            raise NotImplementedError

        def login_abort(self, login_id: str) -> int:
            raise NotImplementedError

        def delete_record(self, record_id: str) -> bool:
            raise NotImplementedError

    slot = create_password_slot(
        PASSWORD, MasterKey.generate(), REPOSITORY_ID, vault_url="in-process",
        transport=Transport(), ksf=IdentityKsf(),
    )
    record_id = str(slot.parameters["record_id"])
    start_times, finish_times, client_times = [], [], []
    try:
        for _ in range(logins):
            client_started = time.perf_counter()
            state, ke1 = client_login_start(PASSWORD)
            client_time = time.perf_counter() - client_started

            started = time.perf_counter()
            challenge = service.login_start(account_id, record_id, ke1)
            start_times.append(time.perf_counter() - started)

            client_started = time.perf_counter()
            ke3, session_key, _ = client_login_finish(
                state, challenge.ke2, ksf=IdentityKsf(), context=LOGIN_CONTEXT
            )
            client_time += time.perf_counter() - client_started

            started = time.perf_counter()
            _, release = service.login_finish(account_id, challenge.login_id, ke3)
            finish_times.append(time.perf_counter() - started)

            client_started = time.perf_counter()
            open_release(session_key, release, record_id)
            client_times.append(client_time + time.perf_counter() - client_started)
    finally:
        service.close()
        metadata.close()

    start_us = 1e6 * statistics.mean(start_times)
    finish_us = 1e6 * statistics.mean(finish_times)
    return InProcessResult(
        logins=logins, login_start_us=start_us, login_finish_us=finish_us,
        server_us_per_login=start_us + finish_us,
        client_us_per_login=1e6 * statistics.mean(client_times),
    )


# Main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="directory for the server data")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument(
        "--threads", type=int, default=8, help="login threads per client process (default 8)"
    )
    parser.add_argument("--database", help="postgresql://... for PostgreSQL metadata")
    parser.add_argument(
        "--log-level", default="info", help="server log level (default info, as deployed)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    load = measure_load(args, args.work / "load")
    in_process = measure_in_process(args.work / "in-process", IN_PROCESS_LOGINS)

    print(f"full logins through the server on {HOST} ({load.database}, {load.workers} "
          f"uvicorn workers, {load.client_processes}x{load.client_threads} client threads, "
          f"{os.cpu_count()} cores shared by server and clients):")
    print(f"  {load.logins_per_second:.0f} logins/s over {load.seconds:.0f} s, "
          f"{load.errors} errors")
    print(f"  latency p50 {load.latency_ms_p50:.1f} ms, p90 {load.latency_ms_p90:.1f} ms, "
          f"p99 {load.latency_ms_p99:.1f} ms, max {load.latency_ms_max:.1f} ms")
    print(f"  server CPU {load.server_cpu_ms_per_login:.2f} ms per login (HTTP included)")
    print(f"server-side cost of one login in process, without HTTP ({in_process.logins} "
          f"logins, one thread, SQLite, key file):")
    print(f"  login_start {in_process.login_start_us:.0f} us + login_finish "
          f"{in_process.login_finish_us:.0f} us = {in_process.server_us_per_login:.0f} us; "
          f"client OPAQUE work without Argon2id {in_process.client_us_per_login:.0f} us")
    if args.json:
        args.json.write_text(json.dumps(
            {"load": asdict(load), "in_process": asdict(in_process)}, indent=2
        ) + "\n")
    return 0 if load.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Measure the server-side CPU cost of one OPAQUE login on one core.

One login is ``server_login_start`` (KE1 -> KE2) plus ``server_login_finish`` (KE3 ->
session key). Only those two calls are timed. The client half runs between them untimed,
with the identity key-stretching function, because in use the client's Argon2id runs on
the client and never on the server.

Run it with the Python of backvault's virtual environment::

    .venv/bin/python bench/opaque_bench.py --logins 2000

It pins itself to one CPU (``--cpu``, default 0). It prints logins per second and the
mean, 50th and 99th percentile of the server time per login. It does so once for a
registered credential and once for an unknown one, which gets a fake KE2 and an invalid KE3.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

from backvault.opaque import (
    IdentityKsf,
    OpaqueError,
    ServerKeys,
    client_login_finish,
    client_login_start,
    client_registration_finish,
    client_registration_start,
    generate_fake_client_public_key,
    generate_server_keys,
    server_login_finish,
    server_login_start,
    server_registration_response,
)

PASSWORD = b"benchmark password"
CREDENTIAL_ID = b"benchmark-credential"
CONTEXT = b"backvault opaque benchmark"
WARMUP_LOGINS = 50


def register(keys: ServerKeys) -> bytes:
    state, request = client_registration_start(PASSWORD)
    response = server_registration_response(keys, request, CREDENTIAL_ID)
    record, _ = client_registration_finish(state, response, ksf=IdentityKsf())
    return record


def time_real_login(keys: ServerKeys, record: bytes) -> float:
    """Run one login and return the seconds spent in the two server calls."""
    client_state, ke1 = client_login_start(PASSWORD)

    started = time.perf_counter()
    server_state, ke2 = server_login_start(keys, record, ke1, CREDENTIAL_ID, context=CONTEXT)
    start_seconds = time.perf_counter() - started

    ke3, _, _ = client_login_finish(client_state, ke2, ksf=IdentityKsf(), context=CONTEXT)

    started = time.perf_counter()
    server_login_finish(server_state, ke3)
    return start_seconds + time.perf_counter() - started


def time_fake_login(keys: ServerKeys, fake_client_public_key: bytes) -> float:
    """Run one login for an unknown credential and return the seconds in the server calls."""
    _, ke1 = client_login_start(PASSWORD)
    ke3 = bytes(64)  # the client cannot finish against a fake KE2

    started = time.perf_counter()
    server_state, _ = server_login_start(
        keys,
        None,
        ke1,
        b"unknown-credential",
        context=CONTEXT,
        fake_client_public_key=fake_client_public_key,
    )
    try:
        server_login_finish(server_state, ke3)
    except OpaqueError:
        pass
    else:
        raise AssertionError("a login against a fake record finished")
    return time.perf_counter() - started


def report(label: str, samples: list[float]) -> None:
    samples_us = sorted(sample * 1e6 for sample in samples)
    p99_index = min(len(samples_us) - 1, round(0.99 * (len(samples_us) - 1)))
    mean_us = statistics.fmean(samples_us)
    print(
        f"{label}: {1e6 / mean_us:8.0f} logins/s  mean {mean_us:7.1f} us  "
        f"p50 {statistics.median(samples_us):7.1f} us  p99 {samples_us[p99_index]:7.1f} us  "
        f"({len(samples_us)} logins)"
    )


def run(label: str, login: Callable[[], float], count: int) -> None:
    for _ in range(WARMUP_LOGINS):
        login()
    report(label, [login() for _ in range(count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=2000, help="timed logins per case")
    parser.add_argument("--cpu", type=int, default=0, help="CPU number to pin the process to")
    arguments = parser.parse_args()

    os.sched_setaffinity(0, {arguments.cpu})
    print(f"Python {platform.python_version()} on {platform.processor() or platform.machine()}")
    print(f"pinned to CPU {arguments.cpu}; client key stretching: identity (not timed)")

    _, keys = generate_server_keys()
    record = register(keys)
    fake_client_public_key = generate_fake_client_public_key()

    run("registered credential", lambda: time_real_login(keys, record), arguments.logins)
    run(
        "unknown credential   ",
        lambda: time_fake_login(keys, fake_client_public_key),
        arguments.logins,
    )


if __name__ == "__main__":
    main()

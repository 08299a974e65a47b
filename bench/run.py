#!/usr/bin/env python3
"""Benchmark backvault, restic and borg side by side on the same data set.

For each tool: init, first backup, 1% change, second backup, no-change backup, restore of
the latest snapshot with a byte-for-byte comparison, and a check that reads all data.
backvault runs on a local directory, on a backvault server and on a moto S3 server, both
on 127.0.0.1. A small-object load test against a backvault server follows, then the key
vault's password-login benchmark (bench/vault_login_bench.py). The results go to a Markdown
report and a JSON file next to it. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import make_dataset
from bench_measure import (
    CommandFailed,
    MeasurementError,
    check_gnu_time,
    compare_trees,
    read_tree,
    tree_size_bytes,
)
from bench_report import (
    LOGIN_TARGET,
    BenchmarkResults,
    ToolRun,
    VaultLoginReport,
    from_json_value,
    read_results,
    write_reports,
)
from bench_services import ServiceError
from bench_tools import (
    TOOL_NAMES,
    BackupTool,
    RunContext,
    ToolMissing,
    ToolOutputError,
    base_environment,
    make_tool,
)
from load_test import LoadTestError, LoadTestReport, run_load_test, wrk_version
from make_dataset import ComponentStats, DatasetError, DatasetStats
from vault_login_bench import InProcessResult
from vault_login_bench import LoadResult as LoginLoadResult

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOOLS = ",".join(TOOL_NAMES)
DEFAULT_TIMEOUT_SECONDS = 4 * 3600
# Other work on a 2-core machine skews every figure, so the run waits for a quiet machine.
DEFAULT_MAX_START_LOAD = 1.5
DEFAULT_LOAD_WAIT_SECONDS = 600
LOAD_POLL_SECONDS = 30
DEFAULT_LOAD_TEST_SECONDS = 10
VAULT_LOGIN_SCRIPT = REPOSITORY_ROOT / "bench" / "vault_login_bench.py"
DEFAULT_VAULT_LOGIN_SECONDS = 15.0
DEFAULT_VAULT_LOGIN_CLIENTS = 2
DEFAULT_VAULT_LOGIN_THREADS = 4
VAULT_LOGIN_WORKERS = 2
# Besides the measured time, vault_login_bench.py starts a server, registers, warms up and
# times 2000 logins in process. That took about 12 s on the 2-core development machine, so
# run.py stops the script only when it runs this much longer than --vault-login-seconds.
VAULT_LOGIN_GRACE_SECONDS = 600.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_TAIL_LINES = 20
# Bumped when make_dataset.py changes what it builds, so older data sets are rebuilt.
DATASET_FORMAT = 1
MAX_LISTED_DIFFERENCES = 20


class BenchmarkError(Exception):
    """Raised for a problem that stops the whole benchmark."""


class RestoreMismatch(Exception):
    """Raised when a restored tree differs from the data that was backed up."""


class VaultLoginError(Exception):
    """Raised when the password-login benchmark fails or writes no results."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark backvault (local, on a backvault server and on S3), restic and "
                    "borg on the same generated data set.")
    parser.add_argument("--scale", choices=sorted(make_dataset.SCALES), default="small",
                        help="data set size: small is about 60 MB; full copies the whole standard "
                             "library and site-packages and adds 400 MB (default: small)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/backvault-bench"),
                        help="directory for the data set, repositories and logs; must be "
                             "outside the repository (default: /tmp/backvault-bench)")
    parser.add_argument("--tools", default=DEFAULT_TOOLS,
                        help=f"comma-separated tools to run, in order (default: {DEFAULT_TOOLS})")
    parser.add_argument("--output", type=Path, default=REPOSITORY_ROOT / "docs" / "benchmarks.md",
                        help="Markdown report path; the raw figures go next to it with a .json "
                             "suffix (default: docs/benchmarks.md in the repository)")
    parser.add_argument("--backvault-bin", type=Path,
                        default=REPOSITORY_ROOT / ".venv" / "bin" / "backvault",
                        help="backvault executable (default: .venv/bin/backvault in the "
                             "repository)")
    parser.add_argument("--rebuild-dataset", action="store_true",
                        help="build the data set again even if one of this scale exists")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="seconds after which one tool command is killed "
                             f"(default: {DEFAULT_TIMEOUT_SECONDS})")
    parser.add_argument("--max-start-load", type=float, default=DEFAULT_MAX_START_LOAD,
                        help="1-minute load average above which the run waits before it "
                             f"starts (default: {DEFAULT_MAX_START_LOAD})")
    parser.add_argument("--load-wait", type=float, default=DEFAULT_LOAD_WAIT_SECONDS,
                        help="maximum wait in seconds for the load average to drop; the run "
                             "then starts anyway and the report says so "
                             f"(default: {DEFAULT_LOAD_WAIT_SECONDS})")
    parser.add_argument("--load-test-seconds", type=int, default=DEFAULT_LOAD_TEST_SECONDS,
                        help="duration of each wrk run of the small-object load test, in "
                             f"seconds (default: {DEFAULT_LOAD_TEST_SECONDS})")
    parser.add_argument("--no-load-test", action="store_true",
                        help="skip the small-object load test, which otherwise runs when "
                             "backvault-server is in --tools")
    parser.add_argument("--no-vault-logins", action="store_true",
                        help="skip the key vault's password-login benchmark, which otherwise "
                             "runs last, whatever --tools names")
    parser.add_argument("--only-vault-logins", action="store_true",
                        help="run only the password-login benchmark and replace its section "
                             "in the existing --output report and its JSON file, keeping the "
                             "rest of that report")
    parser.add_argument("--vault-login-seconds", type=float, default=DEFAULT_VAULT_LOGIN_SECONDS,
                        help="measured time of the password-login benchmark, in seconds "
                             f"(default: {DEFAULT_VAULT_LOGIN_SECONDS:g})")
    parser.add_argument("--vault-login-clients", type=int, default=DEFAULT_VAULT_LOGIN_CLIENTS,
                        help="client processes of the password-login benchmark "
                             f"(default: {DEFAULT_VAULT_LOGIN_CLIENTS})")
    parser.add_argument("--vault-login-threads", type=int, default=DEFAULT_VAULT_LOGIN_THREADS,
                        help="login threads per client process of the password-login "
                             f"benchmark (default: {DEFAULT_VAULT_LOGIN_THREADS})")
    return parser.parse_args(argv)


def wait_for_low_load(max_load: float, max_wait: float) -> float:
    """Wait until the 1-minute load average is at most ``max_load``; return seconds waited.

    Polls every LOAD_POLL_SECONDS and gives up after ``max_wait`` seconds.
    """
    started = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - started
        if load <= max_load:
            return waited
        if waited >= max_wait:
            print(f"WARNING: the 1-minute load average is still {load:.2f} after {waited:.0f} "
                  "s; starting anyway", file=sys.stderr, flush=True)
            return waited
        print(f"1-minute load average {load:.2f} is above {max_load}; waiting "
              f"{LOAD_POLL_SECONDS} s", flush=True)
        time.sleep(LOAD_POLL_SECONDS)


# --- Data set -----------------------------------------------------------------------------


def dataset_from_json(data: dict[str, Any]) -> DatasetStats:
    components = [ComponentStats(**component) for component in data["components"]]
    fields = {name: value for name, value in data.items() if name != "components"}
    return DatasetStats(**fields, components=components)


def ensure_dataset(work: Path, scale: str, rebuild: bool) -> tuple[Path, DatasetStats]:
    """Return the pristine data set of ``scale`` under ``work``, building it if needed.

    A marker file written after a complete build records which data set can be reused. A
    build that stopped halfway has no marker and is built again.
    """
    directory = work / f"dataset-{scale}"
    marker = work / f"dataset-{scale}.json"
    if marker.is_file() and directory.is_dir() and not rebuild:
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if (saved.get("format") == DATASET_FORMAT
                and saved.get("python_stdlib") == sys_stdlib()
                and saved.get("sqlite_version") == sqlite3.sqlite_version):
            print(f"reusing data set {directory}", flush=True)
            return directory, dataset_from_json(saved["stats"])
        print(f"data set {directory} was built by another make_dataset.py, Python or SQLite; "
              "building it again", flush=True)

    marker.unlink(missing_ok=True)
    if directory.exists():
        shutil.rmtree(directory)
    print(f"building the {scale} data set in {directory}", flush=True)
    stats = make_dataset.build_dataset(directory, scale)
    marker.write_text(json.dumps({
        "format": DATASET_FORMAT,
        "python_stdlib": sys_stdlib(),
        "sqlite_version": sqlite3.sqlite_version,
        "stats": asdict(stats),
    }, indent=2), encoding="utf-8")
    return directory, stats


def sys_stdlib() -> str:
    return sysconfig.get_paths()["stdlib"]


def fresh_copy(pristine: Path, destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    make_dataset.copy_entry(pristine, destination, frozenset(), frozenset())
    # Write the copy out now, so its writeback does not run during the first backup.
    os.sync()


# --- Machine description ------------------------------------------------------------------


def read_proc_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def os_release_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as file:
            for line in file:
                key, _, value = line.strip().partition("=")
                if key == "PRETTY_NAME":
                    return value.strip('"')
    except OSError:
        pass
    return "unknown"


def filesystem_of(path: Path) -> str:
    best = ("", "unknown", "unknown")
    try:
        with open("/proc/mounts", encoding="utf-8") as file:
            for line in file:
                device, mount_point, fs_type, *_rest = line.split()
                if (path.as_posix() + "/").startswith(mount_point.rstrip("/") + "/") and \
                        len(mount_point) >= len(best[0]):
                    best = (mount_point, fs_type, device)
    except OSError:
        return "unknown"
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def describe_machine(work: Path) -> dict[str, str]:
    memory = read_proc_field("/proc/meminfo", "MemTotal")
    memory_text = "unknown"
    if memory is not None and memory.endswith("kB"):
        memory_text = f"{int(memory.split()[0]) / 1024 / 1024:.1f} GiB"
    return {
        "CPU": read_proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "CPUs available (nproc)": str(len(os.sched_getaffinity(0))),
        "Memory": memory_text,
        "Kernel": f"{platform.system()} {platform.release()}",
        "OS": os_release_name(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "SQLite library": sqlite3.sqlite_version,
        "Work directory file system": filesystem_of(work),
    }


# --- One tool -----------------------------------------------------------------------------


def prepare_run(tool: BackupTool, work: Path, timeout: float) -> RunContext:
    run_dir = work / "runs" / tool.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    home = run_dir / "home"
    home.mkdir(parents=True)
    context = RunContext(run_dir=run_dir, repository=run_dir / "repository",
                         log_dir=run_dir / "logs", timeout_seconds=timeout,
                         env=base_environment(home))
    tool.prepare_environment(context)
    return context


def verify_restore(tool: BackupTool, run: ToolRun, target: Path, source: Path) -> None:
    restored = tool.restored_root(target, source)
    comparison = compare_trees(source, restored)
    run.restore_entries_compared = comparison.entries
    run.restore_bytes_compared = comparison.bytes_compared
    run.restore_mode_differences = comparison.mode_differences
    if not comparison.identical:
        listed = "\n".join(comparison.differences[:MAX_LISTED_DIFFERENCES])
        raise RestoreMismatch(
            f"{tool.name} restored data that differs from the source "
            f"({len(comparison.differences)} differences between {restored} and "
            f"{source}):\n{listed}")
    print(f"  restore matches the source: {comparison.entries} entries, "
          f"{comparison.bytes_compared} bytes compared", flush=True)


def run_steps(tool: BackupTool, run: ToolRun, context: RunContext, pristine: Path,
              source: Path) -> None:
    """Run every benchmark step of one tool, appending measurements to ``run``."""
    fresh_copy(pristine, source)
    read_tree(source)
    run.source_bytes_first_backup = tree_size_bytes(source)

    def print_last_step(label: str) -> None:
        step = run.steps[-1]
        print(f"  {label}: {step.wall_seconds:.2f} s wall, "
              f"{step.max_rss_bytes / 1e6:.1f} MB peak RSS", flush=True)

    run.steps.append(tool.init(context))
    print_last_step("init")
    run.steps.append(tool.backup(context, source, 1))
    print_last_step("first backup")

    run.mutation = make_dataset.mutate_dataset(source)
    os.sync()
    run.source_bytes_latest = tree_size_bytes(source)
    print(f"  changed {run.mutation.changed_bytes} bytes of the data set", flush=True)

    run.steps.append(tool.backup(context, source, 2))
    print_last_step("second backup")
    run.steps.append(tool.backup(context, source, 3))
    print_last_step("no-change backup")

    listing = tool.list_snapshots(context)
    if listing is not None:
        step, run.snapshot_count = listing
        run.steps.append(step)
        if run.snapshot_count != 3:
            raise ToolOutputError(f"{tool.name} lists {run.snapshot_count} snapshots after "
                                  "three backups; expected 3")

    target = context.run_dir / "restore"
    target.mkdir()
    run.steps.append(tool.restore_latest(context, target))
    print_last_step("restore")
    verify_restore(tool, run, target, source)
    # The restored copy is as large as the data set, so it is deleted once compared.
    shutil.rmtree(target)

    run.steps.append(tool.check(context))
    print_last_step("check --read-data")
    run.repository_bytes = tool.repository_bytes(context)
    run.repository_note = tool.repository_note()
    run.local_cache_bytes = tree_size_bytes(context.run_dir / "home")
    run.status = "ok"


def run_tool(tool: BackupTool, version: str, work: Path, pristine: Path,
             timeout: float) -> ToolRun:
    run = ToolRun(tool=tool.name, version=version, settings=tool.settings)
    print(f"{tool.name}: {version}", flush=True)
    context = prepare_run(tool, work, timeout)
    try:
        tool.start_services(context)
        run_steps(tool, run, context, pristine, work / "source")
    except ServiceError as error:
        run.status = "server failed"
        run.error = str(error)
    except CommandFailed as error:
        run.status = f"command failed in step {error.result.step}"
        run.error = str(error)
    except RestoreMismatch as error:
        run.status = "restored data differs from the source"
        run.error = str(error)
    except ToolOutputError as error:
        run.status = "unexpected tool output"
        run.error = str(error)
    finally:
        # Servers are stopped by their PID also when a step raised something else.
        run.services = tool.stop_services()
    for service in run.services:
        print(f"  stopped {service.name} (PID {service.pid})", flush=True)
    if not run.succeeded:
        print(f"ERROR: {tool.name}: {run.status}\n{run.error}\n"
              f"logs and repository are kept in {context.run_dir}", file=sys.stderr, flush=True)
    return run


# --- Password logins of the key vault ------------------------------------------------------


def venv_python(backvault_bin: Path) -> Path:
    """Return the Python next to the backvault executable, which has backvault installed.

    The path is not resolved, because the virtual environment's ``python`` is a symlink to
    the base interpreter, which lacks backvault.
    """
    for name in ("python", "python3"):
        candidate = backvault_bin.parent / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BenchmarkError(f"no python next to {backvault_bin}; the password-login benchmark "
                         "runs with the Python of backvault's virtual environment. Pass "
                         "--backvault-bin from that environment or --no-vault-logins")


def check_vault_python(python: Path) -> None:
    """Raise BenchmarkError unless ``python`` can import the vault service and uvicorn."""
    command = [str(python), "-c", "import backvault.vault.service, uvicorn"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120,
                               check=False, stdin=subprocess.DEVNULL)
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchmarkError(f"{python} cannot import backvault.vault.service and uvicorn "
                             f"({last_line}); install backvault with its server extra "
                             "(`bash scripts/setup.sh`) or pass --no-vault-logins")


def check_vault_login_options(arguments: argparse.Namespace) -> None:
    if arguments.no_vault_logins and arguments.only_vault_logins:
        raise BenchmarkError("--no-vault-logins and --only-vault-logins exclude each other; "
                             "pass one of them")
    if arguments.vault_login_seconds <= 0:
        raise BenchmarkError(f"--vault-login-seconds {arguments.vault_login_seconds:g} must "
                             "be above 0")
    for option, value in (("--vault-login-clients", arguments.vault_login_clients),
                          ("--vault-login-threads", arguments.vault_login_threads)):
        if value < 1:
            raise BenchmarkError(f"{option} {value} must be at least 1")


def display_path(path: Path) -> str:
    """Return ``path`` relative to the repository root if it is inside it."""
    absolute = path.absolute()
    if absolute.is_relative_to(REPOSITORY_ROOT):
        return str(absolute.relative_to(REPOSITORY_ROOT))
    return str(absolute)


def vault_login_command(python: Path, work: Path, json_path: Path,
                        arguments: argparse.Namespace) -> list[str]:
    """Return the command line of vault_login_bench.py, to run from the repository root."""
    return [display_path(python), display_path(VAULT_LOGIN_SCRIPT),
            "--work", str(work), "--json", str(json_path),
            "--seconds", f"{arguments.vault_login_seconds:g}",
            "--workers", str(VAULT_LOGIN_WORKERS),
            "--clients", str(arguments.vault_login_clients),
            "--threads", str(arguments.vault_login_threads)]


def run_in_own_session(command: list[str], log_path: Path, timeout: float) -> int:
    """Run ``command`` from the repository root with its output in ``log_path``.

    The command runs in a new session, so that on a timeout or an interrupt its whole
    process group (the script, its uvicorn server and its client processes) is stopped by
    the group's id. Returns the exit status.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise VaultLoginError(f"{shlex.join(command)} did not finish within {timeout:.0f} s "
                              f"and was stopped; see {log_path}") from error
    finally:
        if process.poll() is None:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


def log_tail(log_path: Path) -> str:
    lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def run_vault_logins(python: Path, work: Path,
                     arguments: argparse.Namespace) -> VaultLoginReport:
    """Run bench/vault_login_bench.py in a child process and read its JSON results.

    The script exits with status 1 when some logins failed; its results are still read,
    and they carry the error count.
    """
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    json_path = work / "results.json"
    log_path = work / "vault_login_bench.log"
    command = vault_login_command(python, work, json_path, arguments)
    load_average_at_start = os.getloadavg()
    started = datetime.now(UTC)
    status = run_in_own_session(command, log_path,
                                arguments.vault_login_seconds + VAULT_LOGIN_GRACE_SECONDS)
    if status not in (0, 1) or not json_path.is_file():
        raise VaultLoginError(f"`{shlex.join(command)}` exited with status {status} and wrote "
                              f"no results; the last lines of {log_path}:\n{log_tail(log_path)}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        load = from_json_value(LoginLoadResult, data["load"])
        in_process = from_json_value(InProcessResult, data["in_process"])
    except (ValueError, KeyError, TypeError) as error:
        raise VaultLoginError(f"{json_path} does not hold the results of "
                              f"vault_login_bench.py: {error!r}") from error
    return VaultLoginReport(command=shlex.join(command),
                            date_utc=started.strftime("%Y-%m-%d %H:%M"),
                            load_average_at_start=load_average_at_start,
                            load_average_at_end=os.getloadavg(), load=load,
                            in_process=in_process)


def measure_vault_logins(python: Path, work: Path,
                         arguments: argparse.Namespace) -> tuple[VaultLoginReport | None, str]:
    """Run the password-login benchmark and print its figures; return the report or error."""
    print("password logins (key vault)", flush=True)
    try:
        report = run_vault_logins(python, work, arguments)
    except VaultLoginError as error:
        print(f"ERROR: password logins: {error}", file=sys.stderr, flush=True)
        return None, str(error)
    load = report.load
    print(f"  {load.logins_per_second:.0f} logins/s, {load.errors} errors, p50 "
          f"{load.latency_ms_p50:.1f} ms, p99 {load.latency_ms_p99:.1f} ms, server CPU "
          f"{load.server_cpu_ms_per_login:.2f} ms per login; target {LOGIN_TARGET}: "
          f"{'met' if report.target_met else 'not met'}", flush=True)
    return report, ""


def vault_login_failure(report: VaultLoginReport | None, error: str) -> str | None:
    """Return how the password-login benchmark failed, or None if every login succeeded."""
    if error:
        return "the password-login benchmark"
    if report is not None and report.load.errors:
        return f"the password-login benchmark ({report.load.errors} failed logins)"
    return None


def rerun_vault_logins(arguments: argparse.Namespace, work: Path, output: Path) -> int:
    """Run only the password-login benchmark and rewrite its part of an existing report."""
    json_path = output.with_suffix(".json")
    try:
        if not json_path.is_file():
            raise BenchmarkError(f"--only-vault-logins needs the JSON file of an earlier run "
                                 f"next to --output, but {json_path} does not exist; run "
                                 "run.py without --only-vault-logins first")
        try:
            results = read_results(json_path)
        except (ValueError, KeyError, TypeError) as error:
            raise BenchmarkError(f"{json_path} is not a report of run.py: {error!r}") from error
        python = venv_python(arguments.backvault_bin.resolve())
        check_vault_python(python)
    except BenchmarkError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2

    wait_for_low_load(arguments.max_start_load, arguments.load_wait)
    report, report_error = measure_vault_logins(python, work / "vault-logins", arguments)
    results.vault_logins = report
    results.vault_logins_error = report_error
    write_reports(results, output)
    print(f"rewrote {output} and {json_path} with the new password-login results", flush=True)
    failure = vault_login_failure(report, report_error)
    if failure is not None:
        print(f"run.py: error: benchmark failed for {failure}; see its section in {output}",
              file=sys.stderr)
        return 1
    return 0


# --- Main ---------------------------------------------------------------------------------


def check_tools(tools: list[BackupTool]) -> dict[str, str]:
    """Return each tool's version, or raise BenchmarkError naming every missing tool."""
    versions: dict[str, str] = {}
    problems: list[str] = []
    for tool in tools:
        try:
            versions[tool.name] = tool.version()
        except ToolMissing as error:
            problems.append(str(error))
    if problems:
        raise BenchmarkError("\n".join(problems))
    return versions


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    work = arguments.work.resolve()
    output = arguments.output.resolve()
    names = [name.strip() for name in arguments.tools.split(",") if name.strip()]

    try:
        if work.is_relative_to(REPOSITORY_ROOT):
            raise BenchmarkError(f"--work {work} is inside the repository {REPOSITORY_ROOT}; "
                                 "pass a directory outside it, for example under /tmp")
        if output.suffix == ".json":
            raise BenchmarkError(f"--output {output} must be the Markdown report path; the "
                                 "JSON file is written next to it")
        check_vault_login_options(arguments)
    except BenchmarkError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    if arguments.only_vault_logins:
        return rerun_vault_logins(arguments, work, output)

    load_average_at_start = os.getloadavg()
    try:
        if not names:
            raise BenchmarkError(f"--tools is empty; name at least one of {DEFAULT_TOOLS}")
        if len(set(names)) != len(names):
            raise BenchmarkError(f"--tools names a tool twice: {arguments.tools}")
        try:
            tools = [make_tool(name, arguments.backvault_bin.resolve()) for name in names]
        except ValueError as error:
            raise BenchmarkError(str(error)) from error
        check_gnu_time()
        versions = check_tools(tools)
        run_load = "backvault-server" in names and not arguments.no_load_test
        if run_load:
            wrk_version()
        vault_python: Path | None = None
        if not arguments.no_vault_logins:
            vault_python = venv_python(arguments.backvault_bin.resolve())
            check_vault_python(vault_python)

        work.mkdir(parents=True, exist_ok=True)
        pristine, dataset = ensure_dataset(work, arguments.scale, arguments.rebuild_dataset)
    except (BenchmarkError, DatasetError, MeasurementError, LoadTestError) as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2

    print(f"load average (1, 5, 15 min): {load_average_at_start}", flush=True)
    load_wait_seconds = wait_for_low_load(arguments.max_start_load, arguments.load_wait)
    load_average_after_wait = os.getloadavg()
    started = datetime.now(UTC)
    started_monotonic = time.monotonic()
    runs = [run_tool(tool, versions[tool.name], work, pristine, arguments.timeout)
            for tool in tools]

    load_test: LoadTestReport | None = None
    load_test_error = ""
    if run_load:
        print("small-object load test", flush=True)
        try:
            load_test = run_load_test(arguments.backvault_bin.resolve(), work / "load-test",
                                      arguments.load_test_seconds)
        except (LoadTestError, ServiceError) as error:
            load_test_error = str(error)
            print(f"ERROR: small-object load test: {error}", file=sys.stderr, flush=True)
        else:
            for result in load_test.results:
                print(f"  {result.operation}: {result.requests_per_second:.1f} requests/s, "
                      f"p50 {result.latency_p50_ms:.2f} ms, p99 {result.latency_p99_ms:.2f} ms",
                      flush=True)

    vault_logins: VaultLoginReport | None = None
    vault_logins_error = ""
    if vault_python is not None:
        vault_logins, vault_logins_error = measure_vault_logins(
            vault_python, work / "vault-logins", arguments)
    load_average_at_end = os.getloadavg()
    print(f"load average (1, 5, 15 min) at the end: {load_average_at_end}", flush=True)

    notes: list[str] = []
    mutations = {json.dumps(asdict(run.mutation), sort_keys=True)
                 for run in runs if run.mutation is not None}
    if len(mutations) > 1:
        notes.append("The 1% change differed between tools; compare the `mutation` entries "
                     "in the JSON file.")

    results = BenchmarkResults(
        command=shlex.join(sys.orig_argv),
        date_utc=started.strftime("%Y-%m-%d %H:%M"),
        scale=arguments.scale,
        work_directory=str(work),
        machine=describe_machine(work),
        dataset=dataset,
        runs=runs,
        load_average_at_start=load_average_at_start,
        load_average_after_wait=load_average_after_wait,
        load_wait_seconds=load_wait_seconds,
        duration_seconds=time.monotonic() - started_monotonic,
        load_average_at_end=load_average_at_end,
        load_test=load_test,
        load_test_error=load_test_error,
        vault_logins=vault_logins,
        vault_logins_error=vault_logins_error,
        notes=notes,
    )
    json_path = write_reports(results, output)
    print(f"wrote {output} and {json_path}", flush=True)

    failed = [run.tool for run in runs if not run.succeeded]
    if load_test_error:
        failed.append("the small-object load test")
    vault_failure = vault_login_failure(vault_logins, vault_logins_error)
    if vault_failure is not None:
        failed.append(vault_failure)
    if failed:
        print(f"run.py: error: benchmark failed for {', '.join(failed)}; see the Failures, "
              f"load test and password-login sections of {output}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

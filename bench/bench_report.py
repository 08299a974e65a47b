"""Benchmark results and their Markdown and JSON reports."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_measure import StepResult
from bench_services import ServiceStats
from load_test import LoadTestReport
from make_dataset import DatasetStats, MutationStats
from vault_login_bench import InProcessResult
from vault_login_bench import LoadResult as LoginLoadResult

MEGABYTE = 1_000_000
BACKUP_STEPS = ("backup-1", "backup-2", "backup-3")
LOGIN_TARGET_PER_SECOND = 500.0
LOGIN_TARGET_P99_MS = 50.0
LOGIN_TARGET = (f">= {LOGIN_TARGET_PER_SECOND:.0f} full logins/s with p99 < "
                f"{LOGIN_TARGET_P99_MS:.0f} ms")
# Display names of the values of LoadResult.database in vault_login_bench.py.
DATABASE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class ToolRun:
    """Measurements and outcome of one tool's pass through the benchmark steps."""

    tool: str
    version: str
    settings: str
    status: str = "not run"
    error: str = ""
    steps: list[StepResult] = field(default_factory=list)
    source_bytes_first_backup: int = 0
    source_bytes_latest: int = 0
    repository_bytes: int | None = None
    local_cache_bytes: int | None = None
    snapshot_count: int | None = None
    restore_entries_compared: int | None = None
    restore_bytes_compared: int | None = None
    restore_mode_differences: list[str] = field(default_factory=list)
    mutation: MutationStats | None = None
    repository_note: str = ""
    services: list[ServiceStats] = field(default_factory=list)

    def step(self, name: str) -> StepResult | None:
        for step in self.steps:
            if step.step == name:
                return step
        return None

    def wall(self, name: str) -> float | None:
        step = self.step(name)
        return None if step is None else step.wall_seconds

    def peak_rss(self, names: tuple[str, ...]) -> int | None:
        values = [step.max_rss_bytes for step in self.steps if step.step in names]
        return max(values) if values else None

    @property
    def succeeded(self) -> bool:
        return self.status == "ok"


@dataclass
class VaultLoginReport:
    """One run of ``bench/vault_login_bench.py``: its command, conditions and results."""

    command: str
    date_utc: str
    load_average_at_start: tuple[float, float, float]
    load_average_at_end: tuple[float, float, float]
    load: LoginLoadResult
    in_process: InProcessResult

    @property
    def target_met(self) -> bool:
        """Whether every login succeeded at the target rate and p99 latency."""
        return (self.load.errors == 0
                and self.load.logins_per_second >= LOGIN_TARGET_PER_SECOND
                and self.load.latency_ms_p99 < LOGIN_TARGET_P99_MS)


@dataclass
class BenchmarkResults:
    """Everything one ``bench/run.py`` invocation measured."""

    command: str
    date_utc: str
    scale: str
    work_directory: str
    machine: dict[str, str]
    dataset: DatasetStats
    runs: list[ToolRun]
    load_average_at_start: tuple[float, float, float]
    load_average_after_wait: tuple[float, float, float]
    load_wait_seconds: float
    duration_seconds: float
    load_average_at_end: tuple[float, float, float] | None = None
    load_test: LoadTestReport | None = None
    load_test_error: str = ""
    vault_logins: VaultLoginReport | None = None
    vault_logins_error: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A ratio of one tool's measure to another's, with the limit it should keep.

    The ratio should stay at or below ``limit``, or at or above it when ``at_least`` is
    set. A ``limit`` of None records the ratio without a target.
    """

    label: str
    numerator_tool: str
    denominator_tool: str
    value_of: str
    limit: float | None
    at_least: bool = False


TARGETS = (
    Target("first backup time", "backvault", "restic", "first_backup", 1.0),
    Target("restore time", "backvault", "restic", "restore", 1.0),
    Target("no-change backup time", "backvault", "restic", "no_change_backup", 0.5),
    Target("repository size", "backvault", "restic", "repository", 1.0),
    Target("peak memory (backup and restore)", "backvault", "restic", "peak_memory", 1.0),
    Target("first-backup throughput, server / local", "backvault-server", "backvault",
           "first_backup_throughput", 0.8, at_least=True),
    Target("first-backup throughput, S3 / local", "backvault-s3", "backvault",
           "first_backup_throughput", None),
)


def target_value(run: ToolRun, key: str) -> float | None:
    first_backup_wall = run.wall("backup-1")
    values: dict[str, float | None] = {
        "first_backup": first_backup_wall,
        "first_backup_throughput": safe_rate(run.source_bytes_first_backup, first_backup_wall),
        "restore": run.wall("restore"),
        "no_change_backup": run.wall("backup-3"),
        "repository": None if run.repository_bytes is None else float(run.repository_bytes),
        "peak_memory": none_or_float(run.peak_rss((*BACKUP_STEPS, "restore"))),
    }
    return values[key]


def none_or_float(value: int | None) -> float | None:
    return None if value is None else float(value)


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def megabytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MEGABYTE:.1f}"


def throughput(byte_count: int, wall: float | None) -> str:
    if wall is None or wall <= 0:
        return "n/a"
    return f"{byte_count / MEGABYTE / wall:.1f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    return lines + table_rows(rows)


def table_rows(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
            for row in rows]


def load_average(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def results_table(runs: list[ToolRun]) -> list[str]:
    header = ["Tool", "First backup (s)", "First backup (MB/s)", "Second backup (s)",
              "No-change backup (s)", "Restore (s)", "Restore (MB/s)",
              "Check --read-data (s)", "Repository (MB)", "Peak RSS backup (MB)",
              "Peak RSS restore (MB)"]
    rows = []
    for run in runs:
        label = run.tool if run.succeeded else f"{run.tool} (FAILED)"
        rows.append([
            label,
            seconds(run.wall("backup-1")),
            throughput(run.source_bytes_first_backup, run.wall("backup-1")),
            seconds(run.wall("backup-2")),
            seconds(run.wall("backup-3")),
            seconds(run.wall("restore")),
            throughput(run.source_bytes_latest, run.wall("restore")),
            seconds(run.wall("check")),
            megabytes(run.repository_bytes),
            megabytes(run.peak_rss(BACKUP_STEPS)),
            megabytes(run.peak_rss(("restore",))),
        ])
    return table(header, rows)


def target_ratio(target: Target, by_tool: dict[str, ToolRun]) -> float | None:
    """Return the target's ratio, or None if it could not be measured."""
    numerator_run = by_tool.get(target.numerator_tool)
    denominator_run = by_tool.get(target.denominator_tool)
    if numerator_run is None or denominator_run is None:
        return None
    if not (numerator_run.succeeded and denominator_run.succeeded):
        return None
    numerator = target_value(numerator_run, target.value_of)
    denominator = target_value(denominator_run, target.value_of)
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def target_verdict(target: Target, by_tool: dict[str, ToolRun], ratio: float | None) -> str:
    if ratio is None:
        missing = [name for name in (target.numerator_tool, target.denominator_tool)
                   if name not in by_tool]
        if missing:
            return f"not measured: needs {' and '.join(missing)} in --tools"
        return "not measured: a run failed"
    if target.limit is None:
        return "no target set"
    passed = ratio >= target.limit if target.at_least else ratio <= target.limit
    return "met" if passed else "not met"


def ratio_table(runs: list[ToolRun]) -> list[str]:
    by_tool = {run.tool: run for run in runs}
    rows = []
    for target in TARGETS:
        ratio = target_ratio(target, by_tool)
        if target.limit is None:
            limit = "none"
        else:
            limit = f"{'>=' if target.at_least else '<='} {target.limit:.2f}"
        rows.append([target.label, f"{target.numerator_tool} / {target.denominator_tool}",
                     limit, "n/a" if ratio is None else f"{ratio:.3f}",
                     target_verdict(target, by_tool, ratio)])
    return table(["Measure", "Tools", "Target", "Value", "Result"], rows)


def server_throughput_line(runs: list[ToolRun]) -> list[str]:
    """Return a sentence on the server's first-backup throughput against the local one."""
    by_tool = {run.tool: run for run in runs}
    target = next(target for target in TARGETS if target.numerator_tool == "backvault-server")
    ratio = target_ratio(target, by_tool)
    if ratio is None:
        return []
    server = by_tool["backvault-server"]
    local = by_tool["backvault"]
    return ["", f"Server first-backup throughput: "
                f"{throughput(server.source_bytes_first_backup, server.wall('backup-1'))} MB/s "
                f"against {throughput(local.source_bytes_first_backup, local.wall('backup-1'))} "
                f"MB/s local, {ratio:.2f} of local; target >= {target.limit:.2f}: "
                f"{target_verdict(target, by_tool, ratio)}."]


def load_test_rows(load_test: LoadTestReport | None) -> list[list[str]]:
    """Return the small-object requests/s as rows of the targets table (no target set)."""
    if load_test is None:
        return []
    return [[f"small-object {result.operation.upper()} requests/s",
             "backvault server, wrk", "none", f"{result.requests_per_second:.1f}",
             "no target set"]
            for result in load_test.results]


def vault_login_rows(report: VaultLoginReport | None) -> list[list[str]]:
    """Return the password-login target as a row of the targets table."""
    if report is None:
        return []
    load = report.load
    return [["full password logins/s and p99 latency", "backvault server, key vault",
             f"{LOGIN_TARGET}, no errors",
             f"{load.logins_per_second:.0f}/s, p99 {load.latency_ms_p99:.1f} ms",
             "met" if report.target_met else "not met"]]


def steps_table(runs: list[ToolRun]) -> list[str]:
    rows = []
    for run in runs:
        for step in run.steps:
            rows.append([run.tool, step.step, seconds(step.wall_seconds),
                         seconds(step.user_seconds), seconds(step.system_seconds),
                         megabytes(step.max_rss_bytes)])
    return table(["Tool", "Step", "Wall (s)", "CPU user (s)", "CPU system (s)",
                  "Peak RSS (MB)"], rows)


def services_table(runs: list[ToolRun]) -> list[str]:
    rows = []
    for run in runs:
        for service in run.services:
            cpu = "n/a" if service.cpu_seconds is None else f"{service.cpu_seconds:.1f}"
            rows.append([run.tool, service.name, megabytes(service.peak_rss_bytes), cpu])
    if not rows:
        return []
    return [
        "## Servers",
        "",
        "The remote targets' servers run on the same machine as the client, so their CPU "
        "time competes with the client's. These figures cover the server process's whole "
        "life, from start to stop, and come from `/proc/PID/status` (VmHWM) and "
        "`/proc/PID/stat` (utime + stime) just before the harness stopped it. They are not "
        "part of the client peak RSS in the tables above.",
        "",
        *table(["Tool", "Server", "Peak RSS (MB)", "CPU user + system (s)"], rows),
        "",
    ]


def load_test_section(results: BenchmarkResults) -> list[str]:
    load_test = results.load_test
    if load_test is None:
        if not results.load_test_error:
            return []
        return ["## Small-object load test", "", "The load test failed:", "", "```",
                results.load_test_error.strip(), "```", ""]
    lines = [
        "## Small-object load test",
        "",
        f"`bench/load_test.py` starts its own `backvault server` (SQLite metadata, objects "
        f"in its data directory, plain HTTP on 127.0.0.1), creates an account and a "
        f"repository, and runs {load_test.wrk_version.split(' Copyright')[0]} for "
        f"{load_test.seconds} s per operation with {load_test.threads} threads and "
        f"{load_test.connections} connections. PUT stores {load_test.object_bytes}-byte "
        f"objects of random bytes under new names in the `{load_test.object_kind}` kind, "
        "with `X-Content-Hash: sha256=...`. GET reads the objects that the PUT run stored, "
        "cycling through them. wrk and the server share the machine's CPUs. Latency "
        "percentiles are wrk's, measured per request on each connection, which waits for "
        "one response before it sends the next request.",
        "",
    ]

    rows = []
    for result in load_test.results:
        errors = result.non_2xx_responses + sum(result.socket_errors.values())
        rows.append([result.operation.upper(), str(result.requests),
                     f"{result.duration_seconds:.2f}", f"{result.requests_per_second:.1f}",
                     f"{result.latency_p50_ms:.2f}", f"{result.latency_p99_ms:.2f}",
                     str(errors)])
    lines += table(["Operation", "Requests", "Duration (s)", "Requests/s", "p50 latency (ms)",
                    "p99 latency (ms)", "Errors (non-2xx and socket)"], rows)

    lines += ["", "Commands, run from the repository root (the token is in the environment):",
              ""]
    lines += [f"- {result.operation.upper()}: `{result.command}`" for result in load_test.results]
    if load_test.objects_stored is not None:
        lines += ["", f"After the PUT run the server listed {load_test.objects_stored} objects."]
    server = load_test.server
    if server is not None and server.cpu_seconds is not None:
        lines += [f"The server process used {server.cpu_seconds:.1f} s of CPU and "
                  f"{megabytes(server.peak_rss_bytes)} MB peak RSS over the whole test."]
    return [*lines, ""]


# Measured by hand, because run.py does not run bench/opaque_bench.py.
OPAQUE_BENCH_PARAGRAPH = (
    "`bench/opaque_bench.py` times the server half of OPAQUE alone (`server_login_start` + "
    "`server_login_finish`, no database, no HTTP) on one pinned core. `bench/run.py` does "
    "not run it. These figures come from a run by hand on 2026-12-04 on the 2-core "
    "development machine, with `.venv/bin/python bench/opaque_bench.py --logins 1000`: "
    "2340 logins/s for a registered credential (p50 452.7 us) and 3080 logins/s for an "
    "unknown one, which gets a fake KE2 (p50 295.7 us)."
)


def vault_login_section(results: BenchmarkResults) -> list[str]:
    report = results.vault_logins
    heading = ["## Password logins (key vault)", ""]
    if report is None:
        if not results.vault_logins_error:
            return []
        return [*heading, "The password-login benchmark failed:", "", "```",
                results.vault_logins_error.strip(), "```", "", OPAQUE_BENCH_PARAGRAPH, ""]

    load = report.load
    in_process = report.in_process
    lines = [
        *heading,
        f"Command, run from the repository root on {report.date_utc} UTC (load average "
        f"{load_average(report.load_average_at_start)} at the start, "
        f"{load_average(report.load_average_at_end)} at the end):",
        "",
        f"`{report.command}`",
        "",
        "`bench/vault_login_bench.py` measures full password logins through the server. It "
        f"starts its own server on 127.0.0.1 under uvicorn with {load.workers} workers, "
        f"{DATABASE_NAMES.get(load.database, load.database)} metadata and the vault keys "
        "in a key file. It registers one password record per client thread with the "
        "identity key-stretching function: "
        "Argon2id runs on the client before KE3 and costs the server nothing, so it is left "
        f"out. Then {load.client_processes} client processes of {load.client_threads} "
        f"threads each run complete logins for {load.seconds:g} s: KE1 to KE2, KE3 to the "
        "released wrapped key, and the unwrap of the master key. Each login must return "
        "the right master key, or it counts as an error. The clients are a light load tool "
        "on `http.client` with one keep-alive connection per thread; their OPAQUE and "
        "unwrap steps are the command line's own code (`open_password_slot`). Server and "
        "clients share the machine's CPUs. Latency is that of whole logins as the client "
        "threads measure it. Server CPU is the utime + stime of uvicorn and its workers "
        "from `/proc` over the measured time, divided by the logins.",
        "",
        f"The in-process figures time the vault service's `login_start` and `login_finish` "
        f"calls without HTTP, in one thread, over {in_process.logins} logins (SQLite, key "
        "file), and the client's OPAQUE and unwrap work between them.",
        "",
    ]
    lines += table(["Measure", "Value"], [
        ["full logins per second", f"{load.logins_per_second:.0f} ({load.logins} logins, "
                                   f"{load.errors} errors)"],
        ["login latency p50 / p90 / p99 / max (ms)",
         f"{load.latency_ms_p50:.1f} / {load.latency_ms_p90:.1f} / "
         f"{load.latency_ms_p99:.1f} / {load.latency_ms_max:.1f}"],
        ["server CPU per login, HTTP included (ms)", f"{load.server_cpu_ms_per_login:.2f}"],
        ["server time per login in process, no HTTP: `login_start` + `login_finish` (us)",
         f"{in_process.login_start_us:.0f} + {in_process.login_finish_us:.0f} = "
         f"{in_process.server_us_per_login:.0f}"],
        ["client OPAQUE and unwrap time per login in process, no Argon2id (us)",
         f"{in_process.client_us_per_login:.0f}"],
        [f"target: {LOGIN_TARGET}, no errors", "met" if report.target_met else "not met"],
    ])
    return [*lines, "", OPAQUE_BENCH_PARAGRAPH, ""]


def dataset_section(results: BenchmarkResults) -> list[str]:
    dataset = results.dataset
    lines = [
        "## Data set",
        "",
        f"Built by `bench/make_dataset.py --scale {dataset.scale} --seed {dataset.seed}`: "
        f"{dataset.files} files, {dataset.directories} directories, {dataset.symlinks} "
        f"symlinks, {dataset.bytes} bytes ({megabytes(dataset.bytes)} MB).",
        "",
    ]
    rows = [[component.name, f"`{component.path}`", str(component.files),
             megabytes(component.bytes), component.note] for component in dataset.components]
    lines += table(["Part", "Path", "Files", "MB", "Notes"], rows)

    mutation = next((run.mutation for run in results.runs if run.mutation is not None), None)
    if mutation is not None:
        lines += [
            "",
            "Between the first and second backup, `make_dataset.py --mutate-one-percent` "
            f"changed {mutation.changed_bytes} bytes "
            f"({100 * mutation.changed_bytes / mutation.dataset_bytes_before:.2f}% of the "
            f"data set): {mutation.inserted_messages} messages inserted into the SQLite "
            f"database ({mutation.database_changed_bytes} bytes of 4 KiB blocks changed or "
            f"added), {len(mutation.edited_files)} source files edited "
            f"({mutation.edited_files_bytes} bytes), and one new archive "
            f"`{mutation.new_archive}` ({mutation.new_archive_bytes} bytes).",
        ]
    return lines


def method_section() -> list[str]:
    return [
        "## Method",
        "",
        "Each tool runs the same steps on its own fresh copy of the data set, one tool "
        "after the other: init a repository in a new directory; first backup; change about "
        "1% of the data; second backup; third backup with nothing changed; list snapshots; "
        "restore the latest snapshot into an empty directory and compare it with the source "
        "byte for byte; check the repository with all data read.",
        "",
        "- backvault-server and backvault-s3 run the backvault client against a server on "
        "127.0.0.1: a `backvault server` with local storage, or a moto S3 server that keeps "
        "objects in memory. The harness starts a new server before init and stops it by its "
        "PID after the check.",
        "- Times are wall-clock seconds of the whole command. CPU times come from the "
        "rusage that `os.wait4` returns for the command. Peak RSS is the maximum resident "
        "set size of the command's process as GNU time (`/usr/bin/time`) reports it. For "
        "the remote targets that is the client only; the Servers section has the servers.",
        "- MB is 10^6 bytes. MB/s is the data set size divided by the step's wall time.",
        "- Repository size is the sum of the sizes of the files in the repository directory "
        "(apparent size, like `du -b`), or of the stored objects for the remote targets "
        "(see Notes). Each tool's local cache lives outside the repository "
        "and is not counted; its size is in the JSON file as `local_cache_bytes`.",
        "- The page cache is warm for every tool: the harness copies the data set and reads "
        "it once before the first backup, and it does not drop caches between steps.",
        "- Every tool runs with a private HOME, so no cache from an earlier run is reused.",
    ]


def render_markdown(results: BenchmarkResults) -> str:
    machine = results.machine
    lines = [
        "# Backup benchmark",
        "",
        "Generated by `bench/run.py`; rerun it to update this page.",
        "",
        f"- Command: `{results.command}`",
        f"- Date (UTC): {results.date_utc}",
        f"- Scale: {results.scale}",
        f"- Duration of the run: {results.duration_seconds / 60:.1f} min, without building "
        "the data set",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in machine.items()]
    lines += [f"- Load average (1, 5, 15 min) when run.py started: "
              f"{load_average(results.load_average_at_start)}"]
    if results.load_wait_seconds >= 1:
        lines += [f"- Waited {results.load_wait_seconds:.0f} s for the 1-minute load average "
                  "to drop"]
    lines += [f"- Load average when the first tool started: "
              f"{load_average(results.load_average_after_wait)}"]
    if results.load_average_at_end is not None:
        lines += [f"- Load average when the last step ended: "
                  f"{load_average(results.load_average_at_end)}"]
    lines += ["", "## Tools and settings", ""]
    lines += table(["Tool", "Version", "Settings"],
                   [[run.tool, run.version, run.settings] for run in results.runs])
    lines += ["", *dataset_section(results)]
    lines += ["", "## Results", ""]
    lines += results_table(results.runs)
    lines += ["", "## Targets", ""]
    lines += ratio_table(results.runs)
    lines += table_rows(load_test_rows(results.load_test))
    lines += table_rows(vault_login_rows(results.vault_logins))
    lines += ["", "Time and memory ratios below 1 favor the numerator tool; a throughput "
              "ratio above 1 favors it."]
    lines += server_throughput_line(results.runs)
    lines += ["", *load_test_section(results)]
    lines += vault_login_section(results)
    lines += services_table(results.runs)
    lines += ["## Steps", ""]
    lines += steps_table(results.runs)

    failed = [run for run in results.runs if not run.succeeded]
    if failed:
        lines += ["", "## Failures", ""]
        for run in failed:
            lines += [f"- {run.tool}: {run.status}", "", "```", run.error.strip(), "```", ""]

    mode_notes = [run for run in results.runs if run.restore_mode_differences]
    repository_notes = [run for run in results.runs if run.repository_note]
    if mode_notes or repository_notes or results.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in results.notes]
        lines += [f"- {run.tool}: the repository size is {run.repository_note}."
                  for run in repository_notes]
        for run in mode_notes:
            sample = "; ".join(run.restore_mode_differences[:5])
            lines.append(f"- {run.tool}: {len(run.restore_mode_differences)} restored entries "
                         f"have other permission bits than the source, for example {sample}")

    lines += ["", *method_section()]
    return "\n".join(lines) + "\n"


def to_json(results: BenchmarkResults) -> dict[str, Any]:
    data = asdict(results)
    for run_data, run in zip(data["runs"], results.runs, strict=True):
        run_data["derived"] = {
            "first_backup_mb_per_s": safe_rate(run.source_bytes_first_backup,
                                               run.wall("backup-1")),
            "restore_mb_per_s": safe_rate(run.source_bytes_latest, run.wall("restore")),
            "peak_rss_backup_bytes": run.peak_rss(BACKUP_STEPS),
            "peak_rss_restore_bytes": run.peak_rss(("restore",)),
        }
    if results.vault_logins is not None:
        data["vault_logins"]["derived"] = {
            "target": LOGIN_TARGET,
            "target_met": results.vault_logins.target_met,
        }
    return data


def from_json_value(kind: Any, value: Any) -> Any:
    """Rebuild a value of the annotated type ``kind`` from what ``to_json`` wrote.

    Handles the types that the result dataclasses use: dataclasses, lists, fixed-length
    tuples, dicts and ``X | None``. Keys that are not fields, such as ``derived``, are
    dropped, and missing fields take their defaults, so older reports still load.
    """
    if value is None:
        return None
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        names = {item.name for item in dataclasses.fields(kind) if item.init}
        return kind(**{name: from_json_value(hints[name], item)
                       for name, item in value.items() if name in names})
    origin = typing.get_origin(kind)
    arguments = typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        options = [option for option in arguments if option is not type(None)]
        if len(options) != 1:
            raise TypeError(f"cannot rebuild a value of the union {kind}")
        return from_json_value(options[0], value)
    if origin is list:
        return [from_json_value(arguments[0], item) for item in value]
    if origin is tuple:
        return tuple(from_json_value(item_kind, item)
                     for item_kind, item in zip(arguments, value, strict=True))
    if origin is dict:
        return {key: from_json_value(arguments[1], item) for key, item in value.items()}
    return value


def read_results(json_path: Path) -> BenchmarkResults:
    """Read the results of an earlier run from the JSON file that write_reports wrote."""
    data = json.loads(json_path.read_text(encoding="utf-8"))
    results: BenchmarkResults = from_json_value(BenchmarkResults, data)
    return results


def safe_rate(byte_count: int, wall: float | None) -> float | None:
    if wall is None or wall <= 0:
        return None
    return byte_count / MEGABYTE / wall


def write_reports(results: BenchmarkResults, output: Path) -> Path:
    """Write the Markdown report to ``output`` and the raw figures next to it as JSON."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_markdown(results), encoding="utf-8")
    json_path = output.with_suffix(".json")
    json_path.write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")
    return json_path

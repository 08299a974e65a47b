"""Benchmark results and their Markdown and JSON reports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_measure import StepResult
from make_dataset import DatasetStats, MutationStats

MEGABYTE = 1_000_000
BACKUP_STEPS = ("backup-1", "backup-2", "backup-3")


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
class BenchmarkResults:
    """Everything one ``bench/run.py`` invocation measured."""

    command: str
    date_utc: str
    scale: str
    work_directory: str
    machine: dict[str, str]
    dataset: DatasetStats
    runs: list[ToolRun]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A backvault/restic ratio that backvault is expected to stay at or below."""

    label: str
    limit: float
    value_of: str


TARGETS = (
    Target("first backup time", 1.0, "first_backup"),
    Target("restore time", 1.0, "restore"),
    Target("no-change backup time", 0.5, "no_change_backup"),
    Target("repository size", 1.0, "repository"),
    Target("peak memory (backup and restore)", 1.0, "peak_memory"),
)


def target_value(run: ToolRun, key: str) -> float | None:
    values: dict[str, float | None] = {
        "first_backup": run.wall("backup-1"),
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
    lines.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                 for row in rows)
    return lines


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


def ratio_table(runs: list[ToolRun]) -> list[str]:
    by_tool = {run.tool: run for run in runs}
    backvault = by_tool.get("backvault")
    restic = by_tool.get("restic")
    rows = []
    for target in TARGETS:
        if backvault is None or restic is None:
            ratio, verdict = "n/a", "not measured: needs backvault and restic in --tools"
        elif not (backvault.succeeded and restic.succeeded):
            ratio, verdict = "n/a", "not measured: a run failed"
        else:
            numerator = target_value(backvault, target.value_of)
            denominator = target_value(restic, target.value_of)
            if numerator is None or denominator is None or denominator <= 0:
                ratio, verdict = "n/a", "not measured"
            else:
                value = numerator / denominator
                ratio = f"{value:.3f}"
                verdict = "met" if value <= target.limit else "not met"
        rows.append([target.label, f"<= {target.limit:.1f}", ratio, verdict])
    return table(["Measure (backvault / restic)", "Target", "Ratio", "Result"], rows)


def steps_table(runs: list[ToolRun]) -> list[str]:
    rows = []
    for run in runs:
        for step in run.steps:
            rows.append([run.tool, step.step, seconds(step.wall_seconds),
                         seconds(step.user_seconds), seconds(step.system_seconds),
                         megabytes(step.max_rss_bytes)])
    return table(["Tool", "Step", "Wall (s)", "CPU user (s)", "CPU system (s)",
                  "Peak RSS (MB)"], rows)


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
        "- Times are wall-clock seconds of the whole command. CPU times come from the "
        "rusage that `os.wait4` returns for the command. Peak RSS is the maximum resident "
        "set size of the command's process as GNU time (`/usr/bin/time`) reports it.",
        "- MB is 10^6 bytes. MB/s is the data set size divided by the step's wall time.",
        "- Repository size is the sum of the sizes of the files in the repository directory "
        "(apparent size, like `du -b`). Each tool's local cache lives outside the repository "
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
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in machine.items()]
    lines += ["", "## Tools and settings", ""]
    lines += table(["Tool", "Version", "Settings"],
                   [[run.tool, run.version, run.settings] for run in results.runs])
    lines += ["", *dataset_section(results)]
    lines += ["", "## Results", ""]
    lines += results_table(results.runs)
    lines += ["", "## backvault against restic", ""]
    lines += ratio_table(results.runs)
    lines += ["", "## Steps", ""]
    lines += steps_table(results.runs)

    failed = [run for run in results.runs if not run.succeeded]
    if failed:
        lines += ["", "## Failures", ""]
        for run in failed:
            lines += [f"- {run.tool}: {run.status}", "", "```", run.error.strip(), "```", ""]

    mode_notes = [run for run in results.runs if run.restore_mode_differences]
    if mode_notes or results.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in results.notes]
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
    return data


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

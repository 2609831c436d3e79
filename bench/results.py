"""The results file of a suite run: ``bench/results/<date>-<host>-<arch>.md`` with the machine, the software
versions and mode, each scenario's tables, and PNG plots (throughput and RSS over time) beside it.

Writes files only; the scenarios measure and the suite (bench.suite) decides what ran.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.timeline import ScenarioTimeline

PACKAGES = ("edgehub", "rocksdict", "uvloop", "aiohttp", "cryptography", "pydantic", "amqtt", "matplotlib")


@dataclass
class ScenarioReport:
    name: str
    seconds: float
    tables: str
    """What the scenario printed (Markdown)."""
    error: str | None = None
    timeline: ScenarioTimeline | None = None
    plot: str | None = None
    """File name of its PNG, beside the results file."""


@dataclass
class RunInfo:
    started: datetime
    quick: bool
    machine: dict[str, str] = field(default_factory=dict)
    ceiling: str = ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "unknown"


def results_path(folder: Path, started: datetime, host: str, arch: str) -> Path:
    """``<folder>/<YYYY-MM-DD>-<host>-<arch>.md``; a second run on the same day replaces the first."""
    return folder / f"{started:%Y-%m-%d}-{_slug(host)}-{_slug(arch)}.md"


def _first_line(command: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        for line in (done.stdout + done.stderr).splitlines():
            if line.strip():
                return line.strip()
    return "absent"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def machine_info() -> dict[str, str]:
    """The facts a reader needs to compare two results files."""
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    commit = os.environ.get("EDGEHUB_BENCH_COMMIT") or _first_line(
        ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"]
    )  # bench/arm32 passes it in
    info = {
        "host": socket.gethostname(),
        "arch": platform.machine(),
        "platform": os.environ.get("EDGEHUB_BENCH_PLATFORM", "native"),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory_total(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mosquitto": _first_line([mosquitto, "-h"]) if mosquitto else "absent",
        "commit": commit if re.fullmatch(r"[0-9a-f]{4,40}", commit) else "unknown",
    }
    info.update({package: _version(package) for package in PACKAGES})
    return info


def render(info: RunInfo, reports: Sequence[ScenarioReport]) -> str:
    """The Markdown of a results file."""
    mode = "quick (--quick)" if info.quick else "full"
    emulated = info.machine.get("platform", "native").startswith("emulated")
    lines = [
        f"# edgehub benchmarks: {info.machine.get('host', '?')} ({info.machine.get('arch', '?')}), "
        f"{info.started:%Y-%m-%d %H:%M} UTC",
        "",
    ]
    if emulated:
        lines += [
            "**Emulated** (qemu user mode): figures show that the hub runs, not how fast the device is; "
            "RSS includes qemu's own memory.",
            "",
        ]
    arm64 = " --arch arm64" if info.machine.get("arch") == "aarch64" else ""
    quick = " --quick" if info.quick else ""
    command = f"sh bench/arm32/run.sh{arm64}" if emulated else f"python -m bench{quick}"
    lines += [f"Mode: {mode}. Reproduce: `{command}` (bench/README.md says how to read each table).", ""]
    if info.ceiling:
        lines += [info.ceiling, ""]
    lines += ["| machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in info.machine.items()]
    lines += ["", "| scenario | seconds | outcome |", "|---|---|---|"]
    for report in reports:
        outcome = f"failed: {report.error}" if report.error else "ran"
        lines.append(f"| {report.name} | {report.seconds:.0f} | {outcome} |")
    for report in reports:
        lines += ["", f"# {report.name}", ""]
        if report.plot:
            lines += [f"![{report.name}: throughput and RSS over time]({report.plot})", ""]
        lines.append(report.tables.strip() or "(no table)")
        if report.error:
            lines += ["", f"**The scenario stopped with an error:** `{report.error}`"]
    return "\n".join(lines) + "\n"


def plot(timeline: ScenarioTimeline, path: Path) -> bool:
    """Throughput (top) and RSS (bottom) over time as a PNG; False when there is nothing to draw or no
    matplotlib (the tables do not need it)."""
    if not timeline.throughput and not timeline.rss:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (rate_axes, rss_axes) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for label, series in timeline.throughput.items():
        rate_axes.plot(
            [t for t, _ in series], [v for _, v in series], label=label, linewidth=1, marker=".", markersize=4
        )
    rate_axes.set_ylabel("msg/s (0.5 s buckets)")
    rate_axes.set_title(f"{timeline.scenario}: throughput and RSS over time")
    for label, series in timeline.rss.items():
        rss_axes.plot(
            [t for t, _ in series], [v for _, v in series], label=label, linewidth=1, marker=".", markersize=4
        )
    rss_axes.set_ylabel("RSS MiB")
    rss_axes.set_xlabel("seconds since the scenario started")
    for axes, series_count in ((rate_axes, len(timeline.throughput)), (rss_axes, len(timeline.rss))):
        axes.grid(alpha=0.3)
        if series_count:
            axes.legend(fontsize="x-small", ncol=2, loc="upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


def write(folder: Path, info: RunInfo, reports: Sequence[ScenarioReport], plots: bool = True) -> Path:
    """Write the results file (and one PNG per scenario with series); returns the Markdown's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = results_path(
        folder, info.started, info.machine.get("host", "host"), info.machine.get("arch", "arch")
    )
    for report in reports:
        if plots and report.timeline is not None:
            png = path.with_name(f"{path.stem}-{_slug(report.name)}.png")
            report.plot = png.name if plot(report.timeline, png) else None
    path.write_text(render(info, reports))
    return path


def now() -> datetime:
    return datetime.now(UTC)

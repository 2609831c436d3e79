"""The benchmark suite: which scenarios run in what order, a progress line (n/N, elapsed, ETA) on stderr,
each scenario's tables teed into the results file (bench.results).

Runs and records; the scenarios measure. A scenario that raises is reported and the rest still run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bench import timeline
from bench.results import RunInfo, ScenarioReport, machine_info, now, write

RESULTS_FOLDER = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    module: str
    quick_secs: float
    """Rough duration of --quick on 2 cores (for the ETA only)."""
    full_secs: float
    summary: str

    def estimate(self, quick: bool) -> float:
        return self.quick_secs if quick else self.full_secs


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "loadgen-ceiling",
        "bench.ceiling_bench",
        10, 30,
        "the load generator against an ack-everything server",
    ),
    Scenario(
        "telemetry", "bench.telemetry_bench", 35, 110, "(a) telemetry → $upstream, QoS 0/1, 1/10/100 clients"
    ),
    Scenario(
        "mqtt", "bench.mqtt_bench", 45, 150, "(b, g) module → module via BrokeredEndpoint, RocksDB vs SQLite"
    ),
    Scenario(
        "backlog", "bench.backlog_bench", 20, 70, "(c, h) offline backlog then drain; disk bytes per message"
    ),
    Scenario("ttl", "bench.ttl_bench", 40, 300, "(d) TTL expiry and disk reclaim"),
    Scenario(
        "memory", "bench.memory_bench", 25, 20, "(e) RSS idle / 100 clients, default vs low-memory, heads"
    ),
    Scenario("cgroup", "bench.cgroup_bench", 25, 110, "(f) 64 and 128 MiB memory cgroups"),
    Scenario("smoke", "bench.arm32.smoke", 10, 10, "connect, publish, store, restart, deliver, TTL"),
    Scenario("store", "bench.store_bench", 10, 35, "store append / drain microbenchmarks"),
    Scenario("router", "bench.router_bench", 4, 8, "route matching cost"),
    Scenario("mqtt-head", "bench.mqtt_head_bench", 15, 30, "the MQTT head alone vs mosquitto"),
    Scenario("drain-order", "bench.drain_order_bench", 10, 15, "fifo vs newestFirst after an outage"),
    Scenario(
        "upstream", "bench.upstream_bench", 30, 90, "store-and-forward vs a mosquitto bridge; Mqtt vs MqttWs"
    ),
    Scenario("http", "bench.http_bench", 20, 50, "MQTT over WebSocket vs TLS; RSS every head vs MQTT only"),
    Scenario("identities", "bench.identity_bench", 20, 50, "per-identity upstream connections vs one link"),
    Scenario("amqp-upstream", "bench.amqp_upstream_bench", 30, 50, "the upstream over AMQP vs MQTT"),
    Scenario("amqp-head", "bench.amqp_head_bench", 20, 60, "module → module over AMQP vs MQTT, one hub"),
    Scenario("generic", "bench.generic_bench", 20, 35, "generic MQTT pub/sub fan-in, fan-out vs mosquitto"),
    Scenario("hotpath", "bench.hotpath_bench", 20, 30, "CPU per message of each hot-path stage"),
    Scenario("scaling", "bench.scaling_bench", 60, 300, "msg/s, CPU/message vs publishers, size, fan-out"),
    Scenario("flood", "bench.flood_bench", 20, 60, "QoS 0 flood: msg/s, peak RSS, default vs low-memory"),
)
QUICK_PROFILE: tuple[str, ...] = (
    "loadgen-ceiling",
    "telemetry",
    "mqtt",
    "backlog",
    "ttl",
    "memory",
    "cgroup",
    "store",
    "router",
)
"""``--quick`` without names: the headline table's scenarios, sized to stay under 5 minutes on 2 cores."""


def available() -> dict[str, Scenario]:
    """Every scenario by name."""
    return {s.name: s for s in SCENARIOS}


def select(names: Sequence[str], quick: bool) -> list[Scenario]:
    scenarios = available()
    if names:
        return [scenarios[name] for name in names]
    if quick:
        return [scenarios[name] for name in QUICK_PROFILE]
    return list(scenarios.values())


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """``[n/N name] elapsed …, ETA …`` on stderr: redrawn in place on a terminal, a line a minute otherwise.

    The ETA scales the remaining estimates by how the finished scenarios compared with theirs."""

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        quick: bool,
        stream: TextIO = sys.stderr,
    ) -> None:
        self.estimates = [s.estimate(quick) for s in scenarios]
        self.names = [s.name for s in scenarios]
        self.stream = stream
        self.started = time.monotonic()
        self.index = 0
        self.scenario_started = self.started
        self.actual: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def eta(self, at: float) -> float:
        done = sum(self.estimates[: len(self.actual)])
        scale = sum(self.actual) / done if done and self.actual else 1.0
        current = (
            max(self.estimates[self.index] * scale - (at - self.scenario_started), 0.0)
            if self.index < len(self.estimates)
            else 0.0
        )
        return current + scale * sum(self.estimates[self.index + 1 :])

    def line(self, at: float) -> str:
        n, total = min(self.index + 1, len(self.names)), len(self.names)
        name = self.names[self.index] if self.index < total else "done"
        return f"[{n}/{total} {name}] elapsed {_clock(at - self.started)}, ETA {_clock(self.eta(at))}"

    def _show(self) -> None:
        tty = self.stream.isatty()
        self.stream.write(("\r\x1b[K" if tty else "") + self.line(time.monotonic()) + ("" if tty else "\n"))
        self.stream.flush()

    def start(self, index: int) -> None:
        self.index = index
        self.scenario_started = time.monotonic()
        self._show()
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="bench-progress", daemon=True)
            self._thread.start()

    def finish(self) -> None:
        self.actual.append(time.monotonic() - self.scenario_started)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self.stream.isatty():
            self.stream.write("\n")

    def _tick(self) -> None:
        interval = 1.0 if self.stream.isatty() else 60.0
        while not self._stop.wait(interval):
            self._show()


class _Tee(io.StringIO):
    """Keeps what a scenario prints and passes it on to the real stdout."""

    def __init__(self, passthrough: TextIO) -> None:
        super().__init__()
        self.passthrough = passthrough

    def write(self, text: str) -> int:
        self.passthrough.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.passthrough.flush()


@contextlib.contextmanager
def _captured() -> Iterator[_Tee]:
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield tee


def run_scenario(scenario: Scenario, quick: bool) -> ScenarioReport:
    started = time.monotonic()
    error = None
    timeline.begin(scenario.name)
    with _captured() as tee:
        try:
            importlib.import_module(scenario.module).run(quick=quick)
        except Exception as failure:  # noqa: BLE001  # reported in the results file; the suite goes on
            error = f"{type(failure).__name__}: {failure}"
            traceback.print_exc(file=sys.stderr)
    return ScenarioReport(scenario.name, time.monotonic() - started, tee.getvalue(), error, timeline.end())


def run_suite(scenarios: Sequence[Scenario], quick: bool, results: Path | None, plots: bool) -> int:
    from bench.ceiling_bench import ceiling_line

    info = RunInfo(now(), quick, machine_info())
    progress = Progress(scenarios, quick)
    reports: list[ScenarioReport] = []
    try:
        for index, scenario in enumerate(scenarios):
            progress.start(index)
            reports.append(run_scenario(scenario, quick))
            progress.finish()
            info.ceiling = ceiling_line()
            if results is not None:
                path = write(results, info, reports, plots=False)
    finally:
        progress.close()
    if results is not None:
        path = write(results, info, reports, plots=plots)
        print(f"\nresults: {path}", file=sys.stderr)
    print(f"suite: {len(reports)} scenarios in {_clock(sum(r.seconds for r in reports))}", file=sys.stderr)
    return 1 if any(r.error for r in reports) else 0


def main(argv: Sequence[str] | None = None) -> int:
    scenarios = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description="edgehub's benchmark suite")
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(scenarios)} (default: the profile)")
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts, the headline scenarios (< 5 min)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"where the results file goes (default {RESULTS_FOLDER} for a whole profile; "
        "none for named scenarios)",
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for s in scenarios.values():
            print(f"{s.name:<16} ~{_clock(s.quick_secs)} quick, ~{_clock(s.full_secs)} full  {s.summary}")
        return 0
    unknown = [name for name in args.scenarios if name not in scenarios]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    results = args.results if args.results is not None else (None if args.scenarios else RESULTS_FOLDER)
    return run_suite(select(args.scenarios, args.quick), args.quick, results, plots=not args.no_plots)

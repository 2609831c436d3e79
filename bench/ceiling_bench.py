"""The load generator's own ceiling: the same loads against bench.ack_server, which acks and keeps nothing.

A peer measured near this ceiling is limited by the generator, not by itself; the suite prints the
figures in every results file. Prints a table; asserts nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from bench.common import free_port, server_process
from bench.loadgen_processes import default_processes, run_load_processes
from bench.mqtt_loadgen import Credentials

CEILING: dict[str, float] = {}
"""This run's ceilings (msg/s) by load name, for the results header (bench.suite)."""


@dataclass(frozen=True)
class Load:
    name: str
    publishers: int
    qos: int
    window: int
    processes: int


def loads(processes: int) -> list[Load]:
    return [
        Load("QoS 1, 4 publishers, window 100", 4, 1, 100, processes),
        Load("QoS 1, 4 publishers, window 100, one process", 4, 1, 100, 1),
        Load("QoS 1, 100 publishers, window 20", 100, 1, 20, processes),
        Load("QoS 0, 4 publishers", 4, 0, 100, processes),
    ]


def ceiling_line() -> str:
    """One line for a results header: the generator's ceiling measured in this run, or why there is none."""
    if not CEILING:
        return "load generator ceiling: not measured in this run (scenario loadgen-ceiling)"
    return "load generator ceiling (vs bench.ack_server, this run): " + "; ".join(
        f"{name}: {rate:,.0f} msg/s" for name, rate in CEILING.items()
    )


def run(quick: bool = False) -> None:
    total = 40_000 if quick else 200_000
    processes = default_processes()
    server_processes = max(1, (os.cpu_count() or 1))
    port = free_port()
    rows: list[tuple[Load, float, float, int]] = []
    with server_process(
        [sys.executable, "-m", "bench.ack_server", str(port), str(server_processes)], port, label="ack server"
    ):
        for load in loads(processes):
            creds = [Credentials(f"load{i}", topic=f"bench/{i}") for i in range(load.publishers)]
            result = run_load_processes(
                "127.0.0.1",
                port,
                creds,
                None,
                "",
                total // load.publishers,
                load.qos,
                window=load.window,
                processes=load.processes,
                label=load.name,
            )
            count = result.acked if load.qos else result.published
            rate = count / result.seconds if result.seconds else 0.0
            p99 = result.percentile(99) * 1000 if load.qos else float("nan")
            rows.append((load, rate, p99, count))
            if load.processes == processes:
                CEILING[load.name] = rate
            print(f"  ceiling {load.name}: {rate:,.0f} msg/s", file=sys.stderr, flush=True)
    print(
        f"\n## Load generator ceiling: {total:,} msgs of 256 bytes against bench.ack_server "
        f"({server_processes} processes, acks everything, keeps nothing)\n"
    )
    print("| load | generator processes | counted | msg/s | ack p99 ms |")
    print("|---|---|---|---|---|")
    for load, rate, p99, count in rows:
        shown = f"{p99:.1f}" if load.qos else "-"
        print(f"| {load.name} | {load.processes} | {count} | {rate:,.0f} | {shown} |")
    print("\nQoS 0 counts publishes written (no acks exist); the other rows count PUBACKs.")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)

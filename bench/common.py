"""Shared bits of the benchmark scenarios: table printing, RSS, sample messages.

Benchmarks print tables and never fail on a timing; nothing here asserts speed.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgehub.message import Message, SystemProperty

PAYLOAD = b"x" * 256


def sample_message(n: int) -> Message:
    return Message(
        PAYLOAD,
        {"seq": str(n), "kind": "telemetry"},
        {SystemProperty.CONNECTION_DEVICE_ID: "sensor1", SystemProperty.CONTENT_TYPE: "application/json"},
    )


@dataclass
class Row:
    scenario: str
    count: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - started


def print_table(title: str, rows: Sequence[Row], baseline: str | None = None) -> None:
    base = next((r.rate for r in rows if r.scenario == baseline), None)
    print(f"\n## {title}\n")
    print(f"| {'scenario':<52} | {'count':>8} | {'msg/s':>10} | {'ratio':>6} | note")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 12}|{'-' * 8}|------")
    for r in rows:
        ratio = f"{r.rate / base:.2f}" if base else ""
        print(f"| {r.scenario:<52} | {r.count:>8} | {r.rate:>10,.0f} | {ratio:>6} | {r.note}")


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""What a scenario did over time: message arrivals (for throughput plots) and the RSS of the servers it ran.

Collects only; bench.results draws the plots. Sampling is off the measured path: RSS is read from
/proc by a background thread, arrivals are timestamps the load generator already took.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

BUCKET_SECS = 0.5
RSS_INTERVAL_SECS = 0.25


@dataclass
class ScenarioTimeline:
    """One scenario's series; times are seconds since the scenario started."""

    scenario: str
    started: float = field(default_factory=time.perf_counter)
    throughput: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """label → (bucket start, msg/s in that bucket)"""
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """label → (time, RSS MiB)"""

    def add_arrivals(self, label: str, arrivals: Sequence[float], bucket: float = BUCKET_SECS) -> None:
        """Bucket ``arrivals`` (perf_counter timestamps, any order) into a msg/s series, label made unique."""
        if not arrivals:
            return
        first = min(arrivals)
        counts: dict[int, int] = {}
        for at in arrivals:
            index = int((at - first) / bucket)
            counts[index] = counts.get(index, 0) + 1
        offset = first - self.started
        series = [(offset + i * bucket, counts.get(i, 0) / bucket) for i in range(max(counts) + 1)]
        self.throughput[_unique(self.throughput, label)] = series

    def add_rss(self, label: str, at: float, mib: float) -> None:
        self.rss.setdefault(label, []).append((at - self.started, mib))


def _unique(existing: dict[str, list[tuple[float, float]]], label: str) -> str:
    if label not in existing:
        return label
    n = 2
    while f"{label} #{n}" in existing:
        n += 1
    return f"{label} #{n}"


_current: ScenarioTimeline | None = None
_lock = threading.Lock()


def begin(scenario: str) -> ScenarioTimeline:
    global _current
    with _lock:
        _current = ScenarioTimeline(scenario)
        return _current


def end() -> ScenarioTimeline | None:
    global _current
    with _lock:
        done, _current = _current, None
        return done


def record_arrivals(label: str, arrivals: Sequence[float]) -> None:
    """Add a throughput series to the running scenario (a no-op outside the suite)."""
    with _lock:
        if _current is not None:
            _current.add_arrivals(label, arrivals)


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def watch_rss(pid: int, label: str, interval: float = RSS_INTERVAL_SECS) -> Iterator[None]:
    """Sample the RSS of ``pid`` into the running scenario while the block runs."""
    scenario = _current
    if scenario is None:
        yield
        return
    name = _unique(scenario.rss, label)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            mib = _rss_mib(pid)
            if mib is None:
                return
            scenario.add_rss(name, time.perf_counter(), mib)
            stop.wait(interval)

    thread = threading.Thread(target=sample, name=f"rss-{pid}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)

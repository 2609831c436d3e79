"""Throughput series bucketed from arrival times; RSS sampled from /proc while a block runs."""

from __future__ import annotations

import os
import time

from bench import timeline
from bench.timeline import ScenarioTimeline


def test_arrivals_become_a_rate_per_half_second_bucket() -> None:
    series = ScenarioTimeline("s", started=10.0)
    series.add_arrivals("load", [11.0 + 0.05 * i for i in range(10)] + [12.1, 12.2])
    assert series.throughput["load"] == [(1.0, 20.0), (1.5, 0.0), (2.0, 4.0)]


def test_a_repeated_label_gets_a_numbered_series() -> None:
    series = ScenarioTimeline("s", started=0.0)
    series.add_arrivals("load", [1.0])
    series.add_arrivals("load", [2.0])
    assert list(series.throughput) == ["load", "load #2"]


def test_arrivals_outside_a_scenario_are_dropped() -> None:
    assert timeline.end() is None
    timeline.record_arrivals("load", [1.0, 2.0])  # no scenario running: nothing to record into
    assert timeline.end() is None


def test_rss_of_a_watched_process_is_sampled_while_the_block_runs() -> None:
    timeline.begin("rss")
    try:
        with timeline.watch_rss(os.getpid(), "me", interval=0.01):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                current = timeline._current
                assert current is not None
                if len(current.rss.get("me", [])) >= 3:
                    break
                time.sleep(0.01)
    finally:
        done = timeline.end()
    assert done is not None
    samples = done.rss["me"]
    assert len(samples) >= 3
    assert all(mib > 1 for _, mib in samples)

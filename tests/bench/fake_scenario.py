"""A scenario for the suite's tests: prints a table and records a throughput series; or fails on request."""

from __future__ import annotations

import os
import time

from bench import timeline


def run(quick: bool = False) -> None:
    if os.environ.get("EDGEHUB_FAKE_SCENARIO_FAILS"):
        raise RuntimeError("the fake scenario failed")
    now = time.perf_counter()
    timeline.record_arrivals("fake load", [now + i * 0.01 for i in range(100)])
    print(f"\n## Fake scenario (quick={quick})\n\n| x | y |\n|---|---|\n| 1 | 2 |")

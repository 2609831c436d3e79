"""A QoS 0 flood: 4 modules publish 200,000 QoS 0 messages (50,000 with --quick) as fast as they can to a
module that subscribed at QoS 0; msg/s end to end and the server's peak RSS, edgehub in default and in
low-memory mode beside mosquitto, same load generator, same run.

QoS 0 publishers are not slowed by acks: what bounds the hub's memory is that it stops reading a
connection while 4 MiB of its messages (64 MiB over all) wait for the store (docs/architecture.md §4).
Every message is still stored before it is delivered. Prints a table; asserts nothing.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from bench.mqtt_bench import Measurement, _edgehub_peer, _measure, _mosquitto_peer

PUBLISHERS = 4


def run(quick: bool = False) -> None:
    total = 50_000 if quick else 200_000
    peers = [p for p in (_edgehub_peer(False), _edgehub_peer(False, low_memory=True), _mosquitto_peer()) if p]
    root = Path(tempfile.mkdtemp(prefix="edgehub-flood-bench-"))
    measurements: list[Measurement] = []
    try:
        for peer in peers:
            measurements.append(_measure(peer, 0, PUBLISHERS, total, root))
            m = measurements[-1]
            print(f"  {m.peer}: {m.rate:,.0f} msg/s, peak RSS {m.peak_rss_mib:.1f} MiB", file=sys.stderr,
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n## QoS 0 flood: {PUBLISHERS} modules → 1 module subscribed at QoS 0, {total:,} msgs of "
          "256 bytes\n")
    print("| server | delivered | msg/s | vs mosquitto | RSS after MiB | peak RSS MiB | note |")
    print("|---|---|---|---|---|---|---|")
    mosquitto = next((m.rate for m in measurements if m.peer == "mosquitto"), None)
    for m in measurements:
        ratio = f"{m.rate / mosquitto:.2f}" if mosquitto and m.peer != "mosquitto" else "-"
        print(f"| {m.peer} | {m.result.received} | {m.rate:,.0f} | {ratio} | {m.rss_mib:.1f} | "
              f"{m.peak_rss_mib:.1f} | {'; '.join(m.result.errors)} |")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)

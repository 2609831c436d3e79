"""``python -m bench [scenario ...]``: run benchmark scenarios and print their tables.

Scenarios never fail on a timing; they exist to measure, side by side with a peer.
"""

from __future__ import annotations

import argparse
import importlib

SCENARIOS = {
    "store": "bench.store_bench",
    "router": "bench.router_bench",
    "upstream": "bench.upstream_bench",
    "drain-order": "bench.drain_order_bench",
    "mqtt": "bench.mqtt_bench",
    "mqtt-head": "bench.mqtt_head_bench",
    "http": "bench.http_bench",
    "identities": "bench.identity_bench",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller counts (CI smoke run)")
    args = parser.parse_args()
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    for name in args.scenarios or list(SCENARIOS):
        module = importlib.import_module(SCENARIOS[name])
        module.run(quick=args.quick)


if __name__ == "__main__":
    main()

"""(a) Telemetry to the cloud: devices → store-and-forward peer → upstream broker, QoS 0 and 1, with 1, 10
and 100 devices; edgehub (``FROM /messages/* INTO $upstream``, the MQTT upstream) against a mosquitto
bridge with persistence on, both forwarding to one upstream mosquitto, same load, same run.

A raw sink on the upstream broker counts what arrives; throughput runs from the first publish to the
last arrival. amqtt's broker has no bridge, so it is no peer here. Prints a table; asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import timeline
from bench.common import free_port
from bench.loadgen_processes import run_load_processes
from bench.mqtt_loadgen import Credentials
from bench.peers import MOSQUITTO, bridge_extra, mosquitto
from bench.upstream_bench import _close, _edgehub, _Fleet, _Sink, _with_sink
from edgehub.message import Identity

STALL_SECS = 15.0


@dataclass(frozen=True)
class Load:
    clients: int
    qos: int
    total: int

    @property
    def window(self) -> int:
        return 10 if self.clients >= 100 else 100


@dataclass
class Outcome:
    peer: str
    load: Load
    acked: int
    delivered: int
    seconds: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


def loads(quick: bool) -> list[Load]:
    totals = {1: 2_000, 10: 5_000, 100: 10_000} if quick else {1: 20_000, 10: 50_000, 100: 100_000}
    return [Load(clients, qos, totals[clients]) for qos in (0, 1) for clients in (1, 10, 100)]


async def _wait_arrivals(sink: _Sink, expected: int) -> None:
    """Until ``expected`` arrived, or nothing arrived for STALL_SECS (QoS 0 may be dropped by a peer)."""
    seen, seen_at = -1, time.monotonic()
    while sink.count < expected:
        if sink.count != seen:
            seen, seen_at = sink.count, time.monotonic()
        elif time.monotonic() - seen_at > STALL_SECS:
            return
        await asyncio.sleep(0.2)


def _one(
    peer: str, upstream_port: int, entry_port: int, publishers: list[Credentials], load: Load
) -> Outcome:
    async def sink_up() -> tuple[_Sink, asyncio.Task[None]]:
        return await _with_sink(upstream_port, f"sink-{peer[:8]}-{load.clients}-{load.qos}", clean=True)

    async def main() -> Outcome:
        sink, task = await sink_up()
        try:
            sink.expect(load.total)
            started = time.perf_counter()
            result = await asyncio.to_thread(
                run_load_processes,
                "127.0.0.1",
                entry_port,
                publishers[: load.clients],
                None,
                "",
                load.total // load.clients,
                load.qos,
                window=load.window,
                limit_secs=300,
                label=f"{peer} publish, {load.clients} clients QoS {load.qos}",
            )
            await _wait_arrivals(sink, load.total)
            seconds = (sink.last_at - started) if sink.count else 0.0
            return Outcome(peer, load, result.acked, sink.count, seconds, result.errors)
        finally:
            await _close(task)

    outcome = asyncio.run(main())
    print(
        f"  {peer}, {load.clients} clients QoS {load.qos}: {outcome.rate:,.0f} msg/s upstream",
        file=sys.stderr,
        flush=True,
    )
    return outcome


def _warm_up(upstream_port: int, entry_port: int, probe: Credentials) -> None:
    """One message end to end before measuring (the peer's upstream link is up)."""

    async def main() -> None:
        sink, task = await _with_sink(upstream_port, "sink-warmup", clean=True)
        try:
            sink.expect(1)
            await asyncio.to_thread(run_load_processes, "127.0.0.1", entry_port, [probe], None, "", 1, 1)
            await asyncio.wait_for(sink.arrived.wait(), 60)
        finally:
            await _close(task)

    asyncio.run(main())


def run(quick: bool = False) -> None:
    if MOSQUITTO is None:
        print("\n## Telemetry to the cloud: skipped (no mosquitto; make system-deps)")
        return
    root = Path(tempfile.mkdtemp(prefix="edgehub-telemetry-bench-"))
    fleet = _Fleet(devices=tuple(Identity(f"bench{i}") for i in range(101)))
    publishers = [fleet.credentials(d) for d in fleet.devices[:100]]
    probe = fleet.credentials(fleet.devices[100])
    outcomes: list[Outcome] = []
    upstream_port = free_port()
    with mosquitto(root / "upstream", upstream_port, label="upstream mosquitto"):
        with (
            _edgehub(root / "edgehub", fleet, upstream_port) as hub,
            timeline.watch_rss(hub.proc.pid, "edgehub"),
        ):
            _warm_up(upstream_port, hub.plain_port, probe)
            outcomes += [
                _one("edgehub", upstream_port, hub.plain_port, publishers, load) for load in loads(quick)
            ]
        bridge_port = free_port()
        with mosquitto(
            root / "bridge",
            bridge_port,
            persistence=True,
            extra=bridge_extra(upstream_port),
            label="mosquitto bridge",
        ):
            _warm_up(upstream_port, bridge_port, probe)
            outcomes += [
                _one("mosquitto bridge", upstream_port, bridge_port, publishers, load)
                for load in loads(quick)
            ]
    _print(outcomes)


def _print(outcomes: list[Outcome]) -> None:
    print("\n## Telemetry to the cloud: devices → peer → upstream mosquitto, 256-byte payloads\n")
    print(
        "edgehub: route `FROM /messages/* INTO $upstream`, stored, sent upstream over MQTT at QoS 1. "
        "mosquitto bridge: persistence on, `topic # out 1` (a QoS 0 message stays QoS 0). One sink on the "
        "upstream broker; msg/s = arrivals upstream / (first publish → last arrival).\n"
    )
    bridge = {(o.load.clients, o.load.qos): o.rate for o in outcomes if o.peer == "mosquitto bridge"}
    print("| peer | clients | QoS | sent | acked | arrived upstream | msg/s end to end | vs bridge | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        base = bridge.get((o.load.clients, o.load.qos))
        ratio = f"{o.rate / base:.2f}" if base else "-"
        acked = str(o.acked) if o.load.qos else "-"
        print(
            f"| {o.peer} | {o.load.clients} | {o.load.qos} | {o.load.total} | {acked} | {o.delivered} | "
            f"{o.rate:,.0f} | {ratio} | {'; '.join(o.errors)} |"
        )


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)

"""(f) Inside a memory cgroup of 64 and 128 MiB: 100 devices queue messages for an offline module, then the
module drains them. Survival (alive, no OOM kill, every acked message delivered), throughput, peak usage;
mosquitto (persistence on, a persistent session queueing) in the same limit beside it.

The server is started inside the group, so its page cache counts too. Skips cleanly without a writable
memory cgroup. Prints a table; asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.cgroup import MemoryCgroup, NoMemoryCgroupError
from bench.common import free_port
from bench.fleet import Fleet, edgehub, low_memory
from bench.loadgen_processes import run_load_processes
from bench.mqtt_loadgen import Credentials, LoadResult, _open, _subscriber, subscribe_packet
from bench.peers import MOSQUITTO, mosquitto

CLIENTS = 100
ROUTES = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}
LIMIT_SECS = 300.0


@dataclass
class Outcome:
    server: str
    limit_mib: int
    ingest: LoadResult | None
    drained: LoadResult | None
    alive: bool
    oom_kills: int
    peak_mib: float | None
    error: str = ""

    @property
    def survived(self) -> bool:
        acked = self.ingest.acked if self.ingest else 0
        delivered = self.drained.received if self.drained else 0
        return self.alive and not self.oom_kills and acked > 0 and delivered >= acked and not self.error


Server = Callable[[Callable[[], None]], AbstractContextManager[tuple["ServerHandle", Credentials, str]]]


@dataclass
class ServerHandle:
    port: int
    alive: Callable[[], bool]
    publishers: list[Credentials]


@contextmanager
def _edgehub(
    folder: Path, low: bool, join: Callable[[], None]
) -> Iterator[tuple[ServerHandle, Credentials, str]]:
    fleet = Fleet(devices=CLIENTS)
    with edgehub(fleet, folder, ROUTES, low_memory(low), label="edgehub", preexec=join) as hub:
        handle = ServerHandle(hub.port, lambda: hub.process.poll() is None, fleet.device_credentials(CLIENTS))
        yield handle, fleet.credentials(fleet.module("sink")), fleet.input_filter("sink")


@contextmanager
def _mosquitto(folder: Path, join: Callable[[], None]) -> Iterator[tuple[ServerHandle, Credentials, str]]:
    port = free_port()
    with mosquitto(folder, port, persistence=True, preexec=join) as pid:
        sink = Credentials("sink", clean=False)
        asyncio.run(_prime(port, sink))  # the persistent session queues from now on
        handle = ServerHandle(
            port, lambda: _alive(pid), [Credentials(f"c{i}", topic=f"bench/{i}") for i in range(CLIENTS)]
        )
        yield handle, sink, "bench/#"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


async def _prime(port: int, sink: Credentials) -> None:
    reader, writer = await _open("127.0.0.1", port, sink)
    writer.write(subscribe_packet("bench/#", 1))
    await asyncio.wait_for(reader.readexactly(5), 10)  # SUBACK
    writer.close()


async def _drain(port: int, sink: Credentials, topic_filter: str, expected: int) -> LoadResult:
    result = LoadResult()
    if expected <= 0:  # the ingest got nothing acked (its errors say why): nothing to drain
        result.errors.append("nothing was acked")
        return result
    ready = asyncio.Event()
    started = time.perf_counter()
    try:
        await asyncio.wait_for(
            _subscriber("127.0.0.1", port, sink, topic_filter, expected, result, ready, lambda: started),
            LIMIT_SECS,
        )
    except (TimeoutError, OSError) as error:
        result.errors.append(f"drain stopped at {result.received}: {type(error).__name__}")
        result.seconds = time.perf_counter() - started
    return result


def _measure(name: str, limit_mib: int, start: Server, total: int, tag: str) -> Outcome:
    group = MemoryCgroup.create(f"edgehub-bench-{os.getpid()}-{tag}", limit_mib * 2**20)
    ingest = drained = None
    error, alive = "", False
    try:
        with start(group.joiner()) as (server, sink, topic_filter):
            try:
                ingest = run_load_processes(
                    "127.0.0.1",
                    server.port,
                    server.publishers,
                    None,
                    "",
                    total // CLIENTS,
                    1,
                    window=10,
                    limit_secs=LIMIT_SECS,
                    label=f"{name} ingest",
                )
                drained = asyncio.run(_drain(server.port, sink, topic_filter, ingest.acked))
            except (OSError, TimeoutError, RuntimeError) as failure:
                error = f"{type(failure).__name__}: {failure}"
            alive = server.alive()
    except RuntimeError as failure:  # the server did not come up inside the limit
        error = f"{type(failure).__name__}: {failure}"
    finally:
        peak = group.peak_bytes()
        kills = group.oom_kills()
        group.remove()
    outcome = Outcome(name, limit_mib, ingest, drained, alive, kills, peak / 2**20 if peak else None, error)
    print(
        f"  {name} in {limit_mib} MiB: {'survived' if outcome.survived else 'FAILED'}",
        file=sys.stderr,
        flush=True,
    )
    return outcome


def run(quick: bool = False) -> None:
    total = 10_000 if quick else 100_000
    try:
        MemoryCgroup.create(f"edgehub-bench-{os.getpid()}-probe", 2**30).remove()
    except NoMemoryCgroupError as reason:
        print(f"\n## Memory cgroup limits: skipped ({reason})")
        return
    root = Path(tempfile.mkdtemp(prefix="edgehub-cgroup-bench-"))
    runs: list[tuple[str, int, Server]] = []
    for limit in (64, 128):
        for low in (True, False):
            if quick and limit == 128 and not low:
                continue
            mode = "low-memory" if low else "default"
            runs.append((f"edgehub {mode}", limit, partial(_edgehub, root / f"hub-{limit}-{mode}", low)))
        if MOSQUITTO and (limit == 64 or not quick):
            runs.append(("mosquitto (persistence)", limit, partial(_mosquitto, root / f"mosquitto-{limit}")))
    try:
        outcomes = [
            _measure(name, limit, start, total, str(i)) for i, (name, limit, start) in enumerate(runs)
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(outcomes, total)


def _rate(result: LoadResult | None, count: int) -> str:
    return f"{count / result.seconds:,.0f}" if result and result.seconds else "-"


def _print(outcomes: list[Outcome], total: int) -> None:
    print(
        f"\n## Memory cgroup limits: {CLIENTS} devices queue {total:,} msgs of 256 bytes (QoS 1, window 10) "
        "for an offline module, which then drains them\n"
    )
    print(
        "The server runs inside the cgroup from its first instruction (page cache charged too). Survived = "
        "alive, no OOM kill, every acked message delivered afterwards.\n"
    )
    print(
        "| server | limit MiB | survived | acked | ingest msg/s | delivered | drain msg/s | peak usage MiB "
        "| OOM kills | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        acked = o.ingest.acked if o.ingest else 0
        delivered = o.drained.received if o.drained else 0
        notes = [o.error, *(o.ingest.errors if o.ingest else []), *(o.drained.errors if o.drained else [])]
        peak = f"{o.peak_mib:.1f}" if o.peak_mib is not None else "-"
        print(
            f"| {o.server} | {o.limit_mib} | {'yes' if o.survived else 'NO'} | {acked} | "
            f"{_rate(o.ingest, acked)} | {delivered} | {_rate(o.drained, delivered)} | {peak} | "
            f"{o.oom_kills} | {'; '.join(n for n in notes if n)} |"
        )


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)

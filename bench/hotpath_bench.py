"""Per-message cost of each stage of the hot path outside the protocol heads, in-process.

Stages: route (Router.match), record encode, store append (RocksDB, group-commit sized
batches), pump read, checkpoint, and the whole path (Hub.ingest → group commit → pump →
module endpoint → a link that acknowledges at once → checkpoint). Each figure is thread CPU
time per message (``time.thread_time``, the caller's thread only), best of ``--repeat`` runs:
other processes on the machine do not inflate it the way they inflate wall-clock rates.
``--stage NAME --count N`` runs one stage once and prints nothing else, for instruction counts
under ``valgrind --tool=callgrind`` (the difference of two counts over the difference of N).
``--profile-hub FILE`` profiles a real hub instead: it starts one as bench.mqtt_bench does, attaches
``py-spy record --format raw`` to it during a QoS 1 load (4 publishers → a module input), writes the
raw stacks to FILE and prints the top frames by self and by inclusive samples.
Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import mqtt_bench
from bench.common import free_port, sample_message
from bench.mqtt_loadgen import run_load
from edgehub.clock import SystemClock
from edgehub.config_file import parse_config
from edgehub.hub import Hub
from edgehub.message import Identity, Message
from edgehub.routing.router import Router, compile_routes
from edgehub.routing.spec import RouteSpec
from edgehub.settings import load_settings
from edgehub.store import records
from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.message_store import MessageStore
from edgehub.store.open import open_store

ROUTE = 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'
SINK = Identity("edge", "sink")
QUEUE = QueueKey("/modules/sink/inputs/in", 0)
INGEST_BATCH = 100
"""Messages per Hub.ingest / store append call: what one busy head's read turn hands over."""
READ_BATCH = 10
"""Messages per pump read and checkpoint in the read and checkpoint stages."""
PUBLISHERS = 4
LIVE_BATCH = 10
"""The whole path: PUBLISHERS concurrent callers of Hub.ingest, LIVE_BATCH messages a call (what a
head hands over per read turn under live load); the pump drains as they go."""


def _device_message(n: int) -> Message:
    return sample_message(n)


def _router() -> Router:
    return Router(compile_routes([RouteSpec("r", ROUTE)]))


def _items(count: int, start: int = 0) -> list[IngestItem]:
    delivery = (Delivery(QUEUE, 2**62),)
    return [IngestItem(_device_message(start + n), delivery) for n in range(count)]


def _cpu(fn: Callable[[], object]) -> float:
    started = time.thread_time()
    fn()
    return time.thread_time() - started


def stage_route(count: int, _folder: Path) -> float:
    router = _router()
    messages = [_device_message(n) for n in range(count)]
    match = router.match
    return _cpu(lambda: [match(m) for m in messages])


def stage_encode(count: int, _folder: Path) -> float:
    messages = [_device_message(n) for n in range(count)]
    refs = [(records.queue_prefix(QUEUE), 2**62)]
    encode = records.encode_record
    return _cpu(lambda: [encode(m, refs, 2**62) for m in messages])


def _store(folder: Path) -> MessageStore:
    return open_store(folder / "store", backend="rocksdb")


def stage_append(count: int, folder: Path) -> float:
    store = _store(folder)
    batches = [_items(INGEST_BATCH, i) for i in range(0, count, INGEST_BATCH)]
    try:
        return _cpu(lambda: [store.append(batch) for batch in batches])
    finally:
        store.close()


def _filled(folder: Path, count: int) -> MessageStore:
    store = _store(folder)
    for i in range(0, count, INGEST_BATCH):
        store.append(_items(INGEST_BATCH, i))
    return store


def stage_read(count: int, folder: Path) -> float:
    """Reads of batches the recent-message cache holds (a pump that keeps up)."""
    store = _filled(folder, count)
    try:
        def read_all() -> None:
            after = 0
            while batch := store.read(QUEUE, after, READ_BATCH, 0):
                after = batch[-1].id
        return _cpu(read_all)
    finally:
        store.close()


def stage_read_cold(count: int, folder: Path) -> float:
    """Reads of messages no longer cached (a pump catching up on a backlog)."""
    store = _filled(folder, count)
    store.close()
    store = open_store(folder / "store", backend="rocksdb")
    try:
        def read_all() -> None:
            after = 0
            while batch := store.read(QUEUE, after, READ_BATCH, 0):
                after = batch[-1].id
        return _cpu(read_all)
    finally:
        store.close()


def stage_checkpoint(count: int, folder: Path) -> float:
    store = _filled(folder, count)
    def checkpoint_all() -> None:
        for upto in range(READ_BATCH, count + 1, READ_BATCH):
            store.checkpoint(QUEUE, upto)

    try:
        return _cpu(checkpoint_all)
    finally:
        store.close()


class _AckingLink:
    """A module session that acknowledges every delivery at once (no protocol head)."""

    def __init__(self, expected: int) -> None:
        self.delivered = 0
        self.expected = expected
        self.done = asyncio.Event()

    async def deliver(self, input_name: str | None, messages: Sequence[Message]) -> int:
        self.delivered += len(messages)
        if self.delivered >= self.expected:
            self.done.set()
        return len(messages)


async def _whole_path(count: int, folder: Path) -> float:
    settings = load_settings({"StorageFolder": str(folder), "MessageCleanupIntervalSecs": "3600"})
    config = parse_config({"schemaVersion": "1.1", "routes": {"r": ROUTE}}, "bench")
    hub = Hub(settings, config, _store(folder), clock=SystemClock())
    link = _AckingLink(count)
    await hub.start()
    hub.attach(SINK, link)
    batches = [[_device_message(n) for n in range(i, i + LIVE_BATCH)] for i in range(0, count, LIVE_BATCH)]

    async def publisher(mine: list[list[Message]]) -> None:
        for batch in mine:
            await hub.ingest(batch)

    try:
        started = time.thread_time()
        await asyncio.gather(*(publisher(batches[i::PUBLISHERS]) for i in range(PUBLISHERS)))
        await asyncio.wait_for(link.done.wait(), 120)
        spent = time.thread_time() - started
    finally:
        await hub.stop()
        hub.store.close()
    return spent


def stage_whole(count: int, folder: Path) -> float:
    return asyncio.run(_whole_path(count, folder))


STAGES: dict[str, Callable[[int, Path], float]] = {
    "route": stage_route,
    "encode_record": stage_encode,
    "append": stage_append,
    "read (cached)": stage_read,
    "read (cold)": stage_read_cold,
    "checkpoint": stage_checkpoint,
    "whole path": stage_whole,
}


def _once(stage: Callable[[int, Path], float], count: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="edgehub-hotpath-"))
    try:
        return stage(count, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _top_frames(raw: Path, count: int) -> None:
    """The ``count`` frames with the most samples in py-spy raw output, by self and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        frames = [frame.rsplit(":", 1)[0] + ")" for frame in stack.split(";")]
        samples = int(weight)
        total += samples
        own[frames[-1]] += samples
        inclusive.update(dict.fromkeys(frames, samples))
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"\n## Hub profile: top {count} frames by {title} samples ({total} samples)\n")
        print("| % | frame |\n|---|---|")
        for frame, samples in counter.most_common(count):
            print(f"| {100 * samples / total:.1f} | {frame} |")


def _spy_mode() -> list[str]:
    """``--native`` (C frames too: the compiled modules, RocksDB, the event loop) when
    ``EDGEHUB_PROFILE_NATIVE=1``; py-spy must then pause the hub per sample, so rates drop more."""
    return ["--native"] if os.environ.get("EDGEHUB_PROFILE_NATIVE") == "1" else ["--nonblocking"]


def profile_hub(out: Path, total: int, top: int = 10) -> None:
    """Run a QoS 1 load against a hub with py-spy attached; print its top frames."""
    peer = mqtt_bench._edgehub_peer(False)
    folder = Path(tempfile.mkdtemp(prefix="edgehub-hotpath-profile-"))
    spy_binary = Path(sys.executable).parent / "py-spy"
    try:
        port = free_port()
        with peer.start(folder, port) as pid:
            spy = subprocess.Popen([str(spy_binary), "record", "--format", "raw", "--rate", "250",
                                    *_spy_mode(), "--output", str(out), "--pid", str(pid)])
            result = asyncio.run(run_load("127.0.0.1", port, peer.publishers(4), peer.subscriber,
                                          peer.topic_filter, total // 4, 1, window=100, limit_secs=300))
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{result.received} messages delivered in {result.seconds:.1f} s (py-spy attached)")
    _top_frames(out, top)


def run(quick: bool = False, repeat: int = 5, only: str | None = None, count: int | None = None) -> None:
    count = count or (5_000 if quick else 20_000)
    if only is not None:
        _once(STAGES[only], count)
        return
    print(f"\n## Hot path per message ({count} messages, thread CPU time, best of {repeat})\n")
    print("| stage | µs/msg | runs (µs/msg) |")
    print("|---|---|---|")
    for name, stage in STAGES.items():
        runs = [_once(stage, count) / count * 1e6 for _ in range(repeat)]
        print(f"| {name} | {min(runs):.2f} | {' '.join(f'{r:.2f}' for r in runs)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stage", choices=sorted(STAGES))
    parser.add_argument("--count", type=int)
    parser.add_argument("--profile-hub", type=Path, metavar="FILE")
    args = parser.parse_args()
    if args.profile_hub is not None:
        profile_hub(args.profile_hub, args.count or 60_000)
    else:
        run(args.quick, args.repeat, args.stage, args.count)


if __name__ == "__main__":
    main()

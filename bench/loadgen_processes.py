"""The load generator over several processes: publishers split across workers, the subscriber in this one.

One Python process tops out well below a C broker's rate; with the publishers spread over
``processes`` workers (multiprocessing, spawn) the generator's ceiling, measured against
bench.ack_server by the ``loadgen-ceiling`` scenario, sits above what it measures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import time
from dataclasses import replace
from multiprocessing.synchronize import Event
from typing import cast

from bench import timeline
from bench.mqtt_loadgen import Credentials, LoadResult, _publisher, _subscriber, run_load

WORKER_START_SECS = 60.0
STALL_SECS = 20.0
"""A subscriber that got nothing for this long after the publishers finished has all it will get."""


def default_processes() -> int:
    """``EDGEHUB_BENCH_LOADGEN_PROCESSES``, else the number of cores (at least 2)."""
    configured = os.environ.get("EDGEHUB_BENCH_LOADGEN_PROCESSES")
    if configured:
        return max(1, int(configured))
    return max(2, os.cpu_count() or 1)


def split(publishers: list[Credentials], processes: int) -> list[list[Credentials]]:
    """Deal the publishers round-robin into at most ``processes`` non-empty groups."""
    groups: list[list[Credentials]] = [[] for _ in range(max(1, min(processes, len(publishers))))]
    for i, creds in enumerate(publishers):
        groups[i % len(groups)].append(creds)
    return groups


async def _publish_all(
    host: str,
    port: int,
    publishers: list[Credentials],
    per_publisher: int,
    qos: int,
    window: int,
    payload: bytes,
    limit_secs: float,
) -> LoadResult:
    result = LoadResult()
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(_publisher(host, port, c, per_publisher, qos, window, payload, result) for c in publishers)
            ),
            limit_secs,
        )
    except (TimeoutError, OSError) as error:
        result.errors.append(f"worker: {type(error).__name__}: {error}")
    return result


def _worker(
    host: str,
    port: int,
    publishers: list[Credentials],
    per_publisher: int,
    qos: int,
    window: int,
    payload_size: int,
    limit_secs: float,
    go: Event,
    results: multiprocessing.Queue[object],
) -> None:
    results.put("ready")
    go.wait(WORKER_START_SECS)
    coroutine = _publish_all(
        host, port, publishers, per_publisher, qos, window, b"p" * payload_size, limit_secs
    )
    try:
        import uvloop

        result = uvloop.run(coroutine)
    except ImportError:
        result = asyncio.run(coroutine)
    results.put((result, time.perf_counter()))


def run_load_processes(
    host: str,
    port: int,
    publishers: list[Credentials],
    subscriber: Credentials | None,
    topic_filter: str,
    per_publisher: int,
    qos: int,
    window: int = 100,
    payload_size: int = 256,
    limit_secs: float = 120.0,
    processes: int | None = None,
    label: str | None = None,
) -> LoadResult:
    """bench.mqtt_loadgen.run_load with the publishers in worker processes (same result, same timing rule:
    first publish → last delivery, or → last ack without a subscriber). Falls back to one process for a
    single publisher, or when a connector (TLS, WebSocket) is set, which cannot cross a process boundary."""
    processes = default_processes() if processes is None else processes
    if processes <= 1 or len(publishers) <= 1 or any(c.connect is not None for c in publishers):
        return asyncio.run(
            run_load(
                host,
                port,
                publishers,
                subscriber,
                topic_filter,
                per_publisher,
                qos,
                window,
                payload_size,
                limit_secs,
                label,
            )
        )
    return asyncio.run(
        _run(
            host,
            port,
            [replace(c, connect=None) for c in publishers],
            subscriber,
            topic_filter,
            per_publisher,
            qos,
            window,
            payload_size,
            limit_secs,
            processes,
            label,
        )
    )


async def _delivered(sub_task: asyncio.Task[None], result: LoadResult, limit_secs: float) -> bool:
    """Wait for the subscriber to get everything: False when nothing arrived for STALL_SECS (the publishers
    failed, or the server dropped messages) or ``limit_secs`` passed."""
    deadline = time.monotonic() + limit_secs
    seen, seen_at = result.received, time.monotonic()
    while not sub_task.done() and time.monotonic() < deadline:
        await asyncio.wait({sub_task}, timeout=1.0)
        if result.received != seen:
            seen, seen_at = result.received, time.monotonic()
        elif time.monotonic() - seen_at > STALL_SECS:
            break
    if not sub_task.done():
        sub_task.cancel()
        await asyncio.gather(sub_task, return_exceptions=True)
        return False
    sub_task.result()
    return True


async def _run(
    host: str,
    port: int,
    publishers: list[Credentials],
    subscriber: Credentials | None,
    topic_filter: str,
    per_publisher: int,
    qos: int,
    window: int,
    payload_size: int,
    limit_secs: float,
    processes: int,
    label: str | None,
) -> LoadResult:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results: multiprocessing.Queue[object] = context.Queue()
    groups = split(publishers, processes)
    workers = [
        context.Process(
            target=_worker,
            args=(host, port, group, per_publisher, qos, window, payload_size, limit_secs, go, results),
            daemon=True,
        )
        for group in groups
    ]
    for worker in workers:
        worker.start()
    loop = asyncio.get_running_loop()
    result = LoadResult()
    try:
        for _ in workers:
            await loop.run_in_executor(None, results.get, True, WORKER_START_SECS)
        ready = asyncio.Event()
        started = [0.0]
        total = per_publisher * len(publishers)
        sub_task = None
        if subscriber is not None:
            sub_task = asyncio.create_task(
                _subscriber(host, port, subscriber, topic_filter, total, result, ready, lambda: started[0],
                            min(qos, 1))
            )
            await asyncio.wait_for(ready.wait(), 10)
        started[0] = time.perf_counter()
        go.set()
        last_end = started[0]
        for _ in workers:
            try:
                got = await loop.run_in_executor(None, results.get, True, limit_secs + 10)
            except queue.Empty:
                result.errors.append(f"a load worker sent no result within {limit_secs + 10:.0f}s")
                break
            part, ended = cast(tuple[LoadResult, float], got)
            result.merge(part)
            last_end = max(last_end, ended)
        if sub_task is not None:
            if not await _delivered(sub_task, result, limit_secs):
                result.errors.append(
                    f"subscriber got {result.received} of {total} (stalled or over {limit_secs:.0f}s)"
                )
                # The rate of what did arrive, up to its last delivery (a QoS 0 peer may drop some:
                # waiting out the stall is not throughput).
                last = result.delivery_times[-1] if result.delivery_times else time.perf_counter()
                result.seconds = last - started[0]
        else:
            result.seconds = last_end - started[0]
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    timeline.record_arrivals(label or f"port {port}", result.delivery_times or result.ack_times)
    return result

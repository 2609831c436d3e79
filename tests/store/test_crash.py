"""kill -9 at random moments loses no acked message and leaves a consistent store
(docs/architecture.md §1, invariants 1 and 2)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final, Literal

import pytest

from edgehub.store.kv import EXPIRY, MESSAGES, QUEUES
from edgehub.store.message_store import MessageStore
from edgehub.store.open import open_store
from edgehub.store.records import (
    EXPIRY_HEAD,
    EXPIRY_KEY,
    RECORD_HEAD,
    RECORD_KEY_BYTES,
    SOLO_QUEUE_VALUE,
    U64,
    decode_queue_value,
)
from tests.store.crash_writer import DELIVERED, KEPT, TWIN_KEY, TWIN_REPORT, digest, write_until_killed

ROUNDS: Final = 50
BUDGET_SECONDS: Final = 30.0


def _collect(
    reader: Connection, reported: dict[int, bytes], until: float, *, first: bool = False,
    twin: list[int] | None = None,
) -> None:
    """Read reports until ``until`` (or the first one, or the writer's end of the pipe);
    twin counters go to ``twin``."""
    while (left := until - time.monotonic()) > 0 and reader.poll(left):
        try:
            chunk = reader.recv_bytes()
        except (EOFError, OSError):  # the writer's end closed, maybe in the middle of a report
            return
        for line in chunk.splitlines():
            message_id, _, body = line.partition(b" ")
            if message_id == TWIN_REPORT:
                if twin is not None:
                    twin.append(int(body))
                continue
            reported[int(message_id)] = body
        if first and reported:  # the first message report (twin reports may come before it)
            return


def _kept_bodies(store: MessageStore) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    now = int(time.time() * 1000)
    after = 0
    while read := store.read(KEPT, after, 1000, now):
        found.update((queued.id, digest(queued.message.body)) for queued in read)
        after = read[-1].id
    return found


def _assert_consistent(store: MessageStore) -> None:
    """Every ref has its body; a solo ref holds its body's size and has no expiry entry, any other
    ref has its expiry entry; every body has its latest expiry entry or a solo ref; size adds up."""
    kv = store.kv
    solo_sizes: dict[int, int] = {}
    for key, value in kv.scan(QUEUES, b"", b"\xff", 10**9):
        message_id, _, index = decode_queue_value(value)
        assert key.endswith(U64.pack(message_id))
        assert kv.get(MESSAGES, U64.pack(message_id)) is not None, f"ref {message_id} without body"
        if len(value) == SOLO_QUEUE_VALUE.size:
            solo_sizes[message_id] = SOLO_QUEUE_VALUE.unpack(value)[3]
            assert kv.get(EXPIRY, EXPIRY_KEY.pack(index, message_id)) is None, "solo ref with an expiry entry"
        else:
            assert kv.get(EXPIRY, EXPIRY_KEY.pack(index, message_id)) is not None
    size = 0
    for key, record in kv.scan(MESSAGES, b"", b"\xff", 10**9):
        size += len(record) + RECORD_KEY_BYTES
        message_id = U64.unpack(key)[0]
        if message_id in solo_sizes:
            assert solo_sizes[message_id] == len(record) + RECORD_KEY_BYTES
            continue
        max_expiry = RECORD_HEAD.unpack_from(record, 0)[1]
        head = kv.get(EXPIRY, EXPIRY_KEY.pack(max_expiry, message_id))
        assert head is not None, "body without its expiry entry or a solo ref"
        assert EXPIRY_HEAD.unpack_from(head, 0)[0] == len(record) + RECORD_KEY_BYTES
    assert store.size_bytes() == size


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_kill_at_a_random_moment_loses_no_acked_message(
    tmp_path: Path, backend: Literal["rocksdb", "sqlite"],
) -> None:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.store.crash_writer"])
    folder = tmp_path / "store"
    rng = random.Random()
    acked = losses = rounds = 0
    last_id = 0
    started = time.monotonic()
    while rounds < ROUNDS:
        assert time.monotonic() - started < BUDGET_SECONDS, f"only {rounds} rounds in {BUDGET_SECONDS} s"
        sync = rounds % 2 == 0
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(
            target=write_until_killed, args=(str(folder), backend, sync, writer), daemon=True,
        )
        child.start()
        writer.close()
        reported: dict[int, bytes] = {}
        twin_counts: list[int] = []
        _collect(reader, reported, time.monotonic() + 10, first=True, twin=twin_counts)
        assert child.pid is not None
        assert reported, "the writer reported nothing within 10 s"
        _collect(reader, reported, time.monotonic() + rng.uniform(0.0, 0.06), twin=twin_counts)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        _collect(reader, reported, time.monotonic() + 1, twin=twin_counts)  # written before the kill
        reader.close()

        store = open_store(folder, backend=backend)
        try:
            _assert_consistent(store)
            stored_twin = store.get_twin(TWIN_KEY)
            if twin_counts:  # an acked twin write is never lost, and the record is whole
                assert stored_twin is not None, "an acked twin record was lost"
                assert int(stored_twin) >= max(twin_counts), "an acked twin write was lost"
            assert min(reported) > last_id, "an id was handed out twice"
            found = _kept_bodies(store)
            lost = [message_id for message_id, body in reported.items() if found.get(message_id) != body]
            losses += len(lost)
            assert not lost, f"round {rounds}: acked ids lost or damaged: {lost[:10]}"
            last_id = max(max(reported), max(found, default=0))
            acked += len(reported)
            store.checkpoint(KEPT, store.next_id - 1)  # keep the store small for the next round
            store.checkpoint(DELIVERED, store.next_id - 1)
            assert store.message_count() == 0
        finally:
            store.close()
        rounds += 1
    print(f"crash {backend}: {rounds} rounds, {acked} acked messages, {losses} lost, "
          f"{time.monotonic() - started:.1f} s")

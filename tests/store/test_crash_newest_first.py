"""kill -9 at random moments while a queue drains newest first: no acked message is lost, no
message marked delivered comes back, and the duplicates (sent, not yet marked) stay within the
deliverers' batches in flight."""

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

from edgehub.store.message_store import MessageStore
from edgehub.store.open import open_store
from edgehub.store.records import FORMAT_VERSION
from tests.store.crash_writer import (
    DELIVERED,
    MARKED_REPORT,
    NEWEST,
    NEWEST_BATCH,
    NEWEST_DELIVERERS,
    SENT_REPORT,
    digest,
    drain_newest_until_killed,
)
from tests.store.test_crash import _assert_consistent

ROUNDS: Final = 30
BUDGET_SECONDS: Final = 30.0
MAX_DUPLICATES: Final = NEWEST_DELIVERERS * NEWEST_BATCH
"""What a kill may send twice: the batches in flight, sent but not yet marked delivered."""


class _Reports:
    """What the writer said before it died: acked ids (with body digests), sent and marked ids."""

    def __init__(self) -> None:
        self.acked: dict[int, bytes] = {}
        self.sent: set[int] = set()
        self.marked: set[int] = set()

    def collect(self, reader: Connection, until: float, *, first: bool = False) -> None:
        while (left := until - time.monotonic()) > 0 and reader.poll(left):
            try:
                chunk = reader.recv_bytes()
            except (EOFError, OSError):  # the writer's end closed, maybe in the middle of a report
                return
            for line in chunk.splitlines():
                head, _, rest = line.partition(b" ")
                if head == SENT_REPORT:
                    self.sent.update(map(int, rest.split()))
                elif head == MARKED_REPORT:
                    self.marked.update(map(int, rest.split()))
                else:
                    self.acked[int(head)] = rest
            if first and self.acked and self.marked:
                return


def _waiting(store: MessageStore) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    now = int(time.time() * 1000)
    after = 0
    while read := store.read(NEWEST, after, 1000, now):
        found.update((queued.id, digest(queued.message.body)) for queued in read)
        after = read[-1].id
    return found


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_kill_while_draining_newest_first_loses_nothing_and_bounds_duplicates(
    tmp_path: Path, backend: Literal["rocksdb", "sqlite"],
) -> None:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.store.crash_writer"])
    folder = tmp_path / "store"
    rng = random.Random()
    acked = lost = duplicates = rounds = 0
    most_duplicates = sparse_rounds = 0
    started = time.monotonic()
    while rounds < ROUNDS:
        assert time.monotonic() - started < BUDGET_SECONDS, f"only {rounds} rounds in {BUDGET_SECONDS} s"
        sync = rounds % 2 == 0
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(
            target=drain_newest_until_killed, args=(str(folder), backend, sync, writer), daemon=True,
        )
        child.start()
        writer.close()
        reports = _Reports()
        reports.collect(reader, time.monotonic() + 10, first=True)
        assert child.pid is not None
        assert reports.acked, "the writer acked nothing within 10 s"
        assert reports.marked, "the writer delivered nothing within 10 s"
        reports.collect(reader, time.monotonic() + rng.uniform(0.0, 0.06))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        reports.collect(reader, time.monotonic() + 1)  # written before the kill
        reader.close()

        store = open_store(folder, backend=backend)
        try:
            _assert_consistent(store)
            if store.delivered_above_of(NEWEST):  # the kill left refs delivered above the checkpoint
                assert store.format_version == FORMAT_VERSION
                sparse_rounds += 1
            waiting = _waiting(store)
            missing = [i for i in reports.acked if i not in waiting and i not in reports.sent]
            damaged = [i for i, body in reports.acked.items() if i in waiting and waiting[i] != body]
            assert not missing, f"round {rounds}: acked ids neither delivered nor waiting: {missing[:10]}"
            assert not damaged, f"round {rounds}: damaged bodies: {damaged[:10]}"
            back = reports.marked & waiting.keys()
            assert not back, f"round {rounds}: ids marked delivered came back: {sorted(back)[:10]}"
            again = len(reports.sent & waiting.keys())  # sent before the kill, will be sent again
            assert again <= MAX_DUPLICATES
            lost += len(missing)
            duplicates += again
            most_duplicates = max(most_duplicates, again)
            acked += len(reports.acked)
            store.mark_delivered(NEWEST, sorted(waiting))  # keep the store small for the next round
            store.checkpoint(DELIVERED, store.next_id - 1)
            assert store.message_count() == 0
            assert store.queue_lengths()[NEWEST] == 0
        finally:
            store.close()
        rounds += 1
    print(f"crash newest-first {backend}: {rounds} rounds ({sparse_rounds} killed with refs delivered out of "
          f"order), {acked} acked messages, {lost} lost, {duplicates} sent again (at most {most_duplicates} "
          f"per kill), {time.monotonic() - started:.1f} s")
    assert sparse_rounds, "no kill landed while the queue had refs delivered out of order"

"""A full store refuses new messages clearly and keeps every acknowledged one (invariant 6):
full by ``storeLimits.maxSizeBytes``, and full because a small real filesystem ran out of space."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgehub.errors import StoreError, StoreFullError
from edgehub.message import Message
from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.message_store import MessageStore
from edgehub.store.open import open_store

QUEUE = QueueKey("/modules/m/inputs/in1")


def batch(first: int, size: int = 50, body: int = 1000) -> list[IngestItem]:
    now = int(time.time() * 1000)
    return [IngestItem(Message(b"%08d" % n + b"x" * body), (Delivery(QUEUE, now + 3_600_000),))
            for n in range(first, first + size)]


def fill_until_refused(store: MessageStore, limit: int = 100_000) -> tuple[list[int], Exception]:
    acked: list[int] = []
    for first in range(0, limit, 50):
        try:
            acked += store.append(batch(first))
        except StoreError as exc:
            return acked, exc
    raise AssertionError("the store never filled up")


def waiting_ids(store: MessageStore) -> list[int]:
    ids: list[int] = []
    after = -1
    while found := store.read(QUEUE, after, 1000, 0):
        ids += [m.id for m in found]
        after = found[-1].id
    return ids


@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_size_limit_refuses_clearly_keeps_every_acked_message_and_frees_up(
    tmp_path: Path, backend: str,
) -> None:
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    store = open_store(tmp_path / "store", backend=backend, max_size_bytes=300_000)  # type: ignore[arg-type]
    acked, refusal = fill_until_refused(store)
    assert isinstance(refusal, StoreFullError)
    assert "does not fit" in str(refusal)
    assert store.size_bytes() <= 300_000
    store.close()
    store = open_store(tmp_path / "store", backend=backend, max_size_bytes=300_000)  # type: ignore[arg-type]
    try:
        assert waiting_ids(store) == acked
        store.checkpoint(QUEUE, acked[99])  # delivering frees room: the store takes messages again
        assert len(store.append(batch(10**6))) == 50
    finally:
        store.close()


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs (root only; skipped elsewhere), unmounted after the test."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_full_filesystem_refuses_new_messages_and_keeps_every_acked_one(
    small_filesystem: Path, tmp_path: Path, backend: str,
) -> None:
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    folder = small_filesystem / "store"
    store = open_store(folder, backend=backend, low_memory=True)  # type: ignore[arg-type]
    acked, refusal = fill_until_refused(store)
    assert "No space left" in str(refusal) or "full" in str(refusal).lower(), refusal
    with contextlib.suppress(StoreError):  # closing on a full filesystem may fail; the files count
        store.close()
    copy = tmp_path / "copy"  # open it where there is room (opening writes a new MANIFEST)
    shutil.copytree(folder, copy)
    store = open_store(copy, backend=backend)  # type: ignore[arg-type]  # raises if damaged
    try:
        assert set(acked) <= set(waiting_ids(store))
    finally:
        store.close()

"""Acknowledged messages survive a power cut with ``storeSyncWrites=true`` (issue 15).

The cut: the writer runs under an LD_PRELOAD (powercut.c) that logs the bytes each write to
the store's files overwrites; after SIGKILL, every write not followed by an fsync of its file
is undone, which is what a power cut leaves of data still in the page cache. Device-mapper
(dm-flakey) would also drop writes a disk had not flushed, but this kernel has none, and no
block-level layer here can hold unflushed writes apart (a loop device writes them through to
its file at once). Metadata (creates, renames) is kept: the model is lenient there.

With the default ``storeSyncWrites=false`` acked messages are lost at a cut (the README says so);
the test measures how many and checks the store still opens whole.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgehub.store.open import open_store
from tests.reliability.power_writer import QUEUE

HERE = Path(__file__).parent
ROUNDS = int(os.environ.get("EDGEHUB_POWER_ROUNDS", "6"))
"""Cuts per backend in ``make test``; ``make soak`` runs more."""


@pytest.fixture(scope="module")
def powercut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        pytest.skip("the power-cut shim needs Linux and a C compiler (cc)")
    library = tmp_path_factory.mktemp("powercut") / "powercut.so"
    source = str(HERE / "powercut.c")
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), source, "-ldl"],
                   check=True, timeout=60)
    return library


def undo_unsynced(log: Path) -> int:
    """Undo, newest first, every logged write whose file was not synced after it; returns how many."""
    data = log.read_bytes() if log.exists() else b""
    pending: dict[bytes, list[tuple[int, int, bytes]]] = {}
    at = 0
    while at + 25 <= len(data):
        kind = data[at:at + 1]
        (path_len,) = struct.unpack_from("=I", data, at + 1)
        path = data[at + 5:at + 5 + path_len]
        offset, before, old_len = struct.unpack_from("=QQI", data, at + 5 + path_len)
        start = at + 5 + path_len + 20
        if start + old_len > len(data):
            break  # killed while logging: that write never happened
        if kind == b"S":
            pending.pop(path, None)
        else:
            pending.setdefault(path, []).append((offset, before, data[start:start + old_len]))
        at = start + old_len
    undone = 0
    for path, writes in pending.items():
        if not os.path.exists(path):
            continue  # deleted since: nothing to undo
        with open(path, "r+b") as file:
            for offset, before, old in reversed(writes):
                file.seek(offset)
                file.write(old)
                file.truncate(before)
                undone += 1
    return undone


@dataclass
class Tally:
    rounds: int = 0
    acked: int = 0
    lost: int = 0


def power_cut_rounds(folder: Path, backend: str, sync: bool, library: Path, rounds: int) -> Tally:
    rng = random.Random(15)
    tally = Tally()
    acked: set[int] = set()  # acked and, so far, found after every cut
    for round_number in range(rounds):
        log = folder.parent / f"undo-{round_number}.log"
        env = {**os.environ, "LD_PRELOAD": str(library), "POWERCUT_DIR": str(folder.resolve()),
               "POWERCUT_LOG": str(log)}
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.power_writer", str(folder), backend, str(int(sync))],
            env=env, stdout=subprocess.PIPE, cwd=HERE.parent.parent,
        )
        assert writer.stdout is not None
        first: set[int] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and writer.poll() is None:  # until it has acked some
            line = writer.stdout.readline()
            if line and line.strip():
                first = {int(line)}
                break
        time.sleep(rng.uniform(0.2, 0.8))  # the cut lands at a random moment of steady writing
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate(timeout=20)
        fresh = {int(line) for line in out.split() if line.strip()} | first
        tally.acked += len(fresh)
        acked |= fresh
        undo_unsynced(log)
        store = open_store(folder, backend=backend)  # type: ignore[arg-type]  # raises if damaged
        try:
            present: set[int] = set()
            after = -1
            while batch := store.read(QUEUE, after, 5000, 0):
                present.update(m.id for m in batch)
                after = batch[-1].id
        finally:
            store.close()
        tally.rounds += 1
        tally.lost += len(acked - present)
        acked &= present  # a lost one counts once (after a loss the id counter may hand its id out again)
    return tally


@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
def test_acked_messages_survive_power_cuts_with_sync_writes(
    powercut: Path, tmp_path: Path, backend: str,
) -> None:
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    tally = power_cut_rounds(tmp_path / "store", backend, True, powercut, ROUNDS)
    print(f"\n{backend} storeSyncWrites=true: {tally.rounds} cuts, {tally.acked} acked, {tally.lost} lost")
    assert tally.acked > 0
    assert tally.lost == 0


def test_default_without_sync_writes_loses_acked_messages_but_opens_whole(
    powercut: Path, tmp_path: Path,
) -> None:
    """What the README warns of: a power cut loses what the page cache held (acked messages of
    the last seconds); the store itself opens (its own checks pass) and keeps everything older."""
    pytest.importorskip("rocksdict")
    tally = power_cut_rounds(tmp_path / "store", "rocksdb", False, powercut, 2)
    print(f"\nrocksdb storeSyncWrites=false: {tally.rounds} cuts, {tally.acked} acked, {tally.lost} lost")
    assert tally.acked > 0

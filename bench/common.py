"""Shared bits of the benchmark scenarios: table printing, RSS, sample messages.

Benchmarks print tables and never fail on a timing; nothing here asserts speed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from bench import timeline
from edgehub.message import Message, SystemProperty

PAYLOAD = b"x" * 256


def sample_message(n: int) -> Message:
    return Message(
        PAYLOAD,
        {"seq": str(n), "kind": "telemetry"},
        {SystemProperty.CONNECTION_DEVICE_ID: "sensor1", SystemProperty.CONTENT_TYPE: "application/json"},
    )


@dataclass
class Row:
    scenario: str
    count: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - started


def print_table(title: str, rows: Sequence[Row], baseline: str | None = None) -> None:
    base = next((r.rate for r in rows if r.scenario == baseline), None)
    print(f"\n## {title}\n")
    print(f"| {'scenario':<52} | {'count':>8} | {'msg/s':>10} | {'ratio':>6} | note")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 12}|{'-' * 8}|------")
    for r in rows:
        ratio = f"{r.rate / base:.2f}" if base else ""
        print(f"| {r.scenario:<52} | {r.count:>8} | {r.rate:>10,.0f} | {ratio:>6} | {r.note}")


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hub_command(*args: str) -> list[str]:
    """``python -m edgehub ARGS``; ``EDGEHUB_BENCH_PYTHON`` overrides the interpreter (bench/arm32: an
    explicit qemu where binfmt_misc is not registered)."""
    python = shlex.split(os.environ.get("EDGEHUB_BENCH_PYTHON", "")) or [sys.executable]
    return [*python, "-m", "edgehub", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_timeout() -> float:
    """Seconds a server may take to listen: ``EDGEHUB_BENCH_START_SECS`` (bench/arm32 sets it for qemu),
    else 20."""
    return float(os.environ.get("EDGEHUB_BENCH_START_SECS", "20"))


def wait_listening(port: int, timeout: float | None = None) -> None:
    """Poll (bounded) until something accepts TCP connections on 127.0.0.1:port."""
    timeout = start_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


@contextlib.contextmanager
def server_process(
    args: Sequence[str], port: int, env: Mapping[str, str] | None = None, label: str | None = None,
    preexec: Callable[[], None] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until ``port`` accepts, stop it (SIGTERM, then kill) on exit. Its RSS joins the
    running scenario's plot under ``label`` (default: the program's name; ``edgehub`` for the hub)."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(env) if env is not None else None, preexec_fn=preexec)
    name = label or ("edgehub" if "edgehub" in args else os.path.basename(args[0]))
    try:
        wait_listening(port)
        with timeline.watch_rss(proc.pid, name):
            yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_memory_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc/{pid}/status."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]

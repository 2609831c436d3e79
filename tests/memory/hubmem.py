"""Test support for tests/memory: a real hub process (optionally inside a memory cgroup), what it
imported, and its memory figures.

A cgroup v1 child of this process's own memory cgroup (or of the hierarchy's root) gets
``memory.limit_in_bytes``; the hub is started through ``sh -c 'echo $$ > cgroup.procs; exec …'``
so every page it touches from its first instruction is charged there. It asserts nothing itself.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from typing import Final

from tests.hubproc import START_TIMEOUT_SECS, HubProcess

CGROUP_V1_MEMORY: Final = Path("/sys/fs/cgroup/memory")
IMPORT_LINE: Final = "import time:"
MIB: Final = 1 << 20

LOW_MEMORY_MQTT_ONLY: Final = {
    "OptimizeForPerformance": "false",
    "amqpSettings__enabled": "false",
    "httpSettings__enabled": "false",
}
"""The smallest hub a user can run: low-memory mode, the MQTT head only (HubProcess turns the
others off too; stated here because the figures are about it)."""


def compile_bytecode() -> None:
    """edgehub's modules compiled to ``__pycache__``, as ``pip install`` and the container image
    have them: a hub that compiles its sources at start (a source checkout under
    PYTHONDONTWRITEBYTECODE=1) idles about 2 MiB higher with the compiler's leftovers."""
    import edgehub

    compileall.compile_dir(Path(edgehub.__file__).parent, quiet=1)


def own_memory_cgroup() -> Path | None:
    """This process's cgroup v1 memory directory when it exists, else the hierarchy's root."""
    if not (CGROUP_V1_MEMORY / "cgroup.procs").exists():
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidate = CGROUP_V1_MEMORY / path.lstrip("/")
            if candidate.is_dir():
                return candidate
    return CGROUP_V1_MEMORY


def writable_cgroup_parent() -> tuple[Path | None, str]:
    """Where a child memory cgroup can be made, or None and why not (the skip reason)."""
    parent = own_memory_cgroup()
    if parent is None:
        if Path("/sys/fs/cgroup/cgroup.controllers").exists():
            # v2 would need this process moved out of its own cgroup first (no internal processes).
            return None, "cgroup v2 only: this test uses cgroup v1's memory controller (bench/ covers v2)"
        return None, "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
    if not os.access(parent, os.W_OK):
        return None, f"{parent} is not writable (run as root or delegate the memory cgroup)"
    return parent, ""


@dataclass(frozen=True)
class MemoryCgroup:
    """A child memory cgroup with a limit; its figures read from the kernel's files."""

    path: Path

    def read(self, name: str) -> int:
        return int((self.path / name).read_text().split()[0])

    @property
    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this cgroup (``oom_kill`` of memory.oom_control)."""
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    @property
    def peak_bytes(self) -> int:
        return self.read("memory.max_usage_in_bytes")

    @property
    def failcnt(self) -> int:
        """Times usage hit the limit (the kernel then reclaims page cache; not a kill)."""
        return self.read("memory.failcnt")

    def rss_bytes(self) -> int:
        """Anonymous memory charged here (``rss`` of memory.stat), page cache excluded."""
        for line in (self.path / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "rss":
                return int(value)
        return 0


@contextmanager
def memory_cgroup(parent: Path, limit_bytes: int) -> Iterator[MemoryCgroup]:
    """A new child of ``parent`` limited to ``limit_bytes`` (no swap here to fall back on);
    removed afterwards, once every process in it has exited."""
    path = parent / f"edgehub-memtest-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    try:
        (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        yield MemoryCgroup(path)
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


class CgroupHubProcess(HubProcess):
    """``edgehub run`` whose first instruction already runs in ``cgroup`` (None: anywhere)."""

    def __init__(self, folder: Path, config: Path | None, env: dict[str, str],
                 cgroup: MemoryCgroup | None = None) -> None:
        super().__init__(folder, config, env)
        self.cgroup = cgroup

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        run = [sys.executable, "-m", "edgehub", "run"]
        if self.config is not None:
            run += ["--config", str(self.config)]
        if self.cgroup is None:
            return run
        procs = self.cgroup.path / "cgroup.procs"
        return ["/bin/sh", "-c", f"echo $$ > {quote(str(procs))} && exec {' '.join(map(quote, run))}"]

    def start(self) -> CgroupHubProcess:
        self.process = subprocess.Popen(
            self.command(), env=self.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump_output, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            line = self.readline(deadline - time.monotonic())
            if line is None:
                break
            if line.startswith("upstream:"):  # the last line of the start-up summary
                return self
        self.stop()
        raise RuntimeError("hub did not start:\n" + "".join(self.lines))


def imported_modules(lines: Sequence[str]) -> set[str]:
    """Every module a hub run with ``PYTHONPROFILEIMPORTTIME=1`` imported (its ``-X importtime``
    lines on stderr, merged into the output)."""
    modules: set[str] = set()
    for line in lines:
        if line.startswith(IMPORT_LINE) and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                modules.add(name)
    return modules


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise KeyError(field)


def settled_rss_kib(pid: int, timeout: float = 10.0) -> int:
    """VmRSS once it stops changing for half a second (an idle hub after start-up), bounded."""
    deadline = time.monotonic() + timeout
    last = status_kib(pid, "VmRSS")
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = status_kib(pid, "VmRSS")
        if abs(now - last) > 64:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 0.5:
            break
    return last


@contextmanager
def idle_hub(folder: Path, env: Mapping[str, str], *, importtime: bool = False,
             cgroup: MemoryCgroup | None = None, config: Path | None = None) -> Iterator[CgroupHubProcess]:
    """A started hub on ``folder`` (ports picked by the OS, metrics off unless ``env`` says),
    stopped afterwards; the exit code must be 0."""
    full = {"mqttSettings__port": "0", "amqpSettings__port": "0", "httpSettings__port": "0",
            "RuntimeLogLevel": "warning"} | dict(env)
    if importtime:
        full["PYTHONPROFILEIMPORTTIME"] = "1"
    hub = CgroupHubProcess(folder, config, full, cgroup)
    hub.start()
    try:
        yield hub
    finally:
        code = hub.stop()
    assert code == 0, f"hub exited with {code}:\n{hub.output[-4000:]}"

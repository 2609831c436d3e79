"""A memory cgroup for one benchmark process: cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``,
joined by the child before it execs so every page it touches is charged; peak usage and OOM kills read back.

Needs a writable cgroup hierarchy (root, or a delegated subtree); ``MemoryCgroup.create`` says why not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/memory")


class NoMemoryCgroupError(Exception):
    """No writable memory cgroup here (the scenario is skipped with this reason)."""


class MemoryCgroup:
    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(
        cls, name: str, limit_bytes: int, v2_root: Path = V2_ROOT, v1_root: Path = V1_ROOT
    ) -> MemoryCgroup:
        """A new child group ``name`` limited to ``limit_bytes`` (swap too, where the kernel counts it)."""
        if (v2_root / "cgroup.controllers").exists() and "memory" in (
            v2_root / "cgroup.controllers"
        ).read_text():
            root, version = v2_root, 2
        elif (v1_root / "memory.limit_in_bytes").exists():
            root, version = v1_root, 1
        else:
            raise NoMemoryCgroupError("no memory cgroup controller mounted (cgroup v1 or v2)")
        path = root / name
        try:
            path.mkdir(exist_ok=True)
        except OSError as error:
            raise NoMemoryCgroupError(f"cannot create {path}: {error.strerror}") from error
        group = cls(path, version)
        try:
            if version == 2:
                group._write("memory.max", str(limit_bytes))
                with contextlib.suppress(OSError):
                    group._write("memory.swap.max", "0")
            else:
                group._write("memory.limit_in_bytes", str(limit_bytes))
                with contextlib.suppress(OSError):
                    group._write("memory.memsw.limit_in_bytes", str(limit_bytes))
        except OSError as error:
            group.remove()
            raise NoMemoryCgroupError(f"cannot set the limit in {path}: {error.strerror}") from error
        return group

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def joiner(self) -> Callable[[], None]:
        """For ``subprocess.Popen(preexec_fn=...)``: the child moves itself into the group before exec."""
        procs = str(self.path / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        return join

    def peak_bytes(self) -> int | None:
        """Peak usage (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak`` where the kernel has it)."""
        with contextlib.suppress(OSError, ValueError):
            return int(self._read("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"))
        return None

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError):
            for line in self._read(name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def remove(self) -> None:
        """Remove the group (its processes must have exited); charged page cache moves to the parent."""
        with contextlib.suppress(OSError):
            self.path.rmdir()

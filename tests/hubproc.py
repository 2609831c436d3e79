"""Runs a real ``edgehub run`` subprocess for end-to-end and conformance tests.

Test support only: free ports, config files, start with a bounded wait for the
listening lines, stop with SIGTERM and return the exit code.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

START_TIMEOUT_SECS = 30.0


# Ports handed out below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999
# by default): a port the kernel picked for bind(0) can be taken a moment later by some client's
# outgoing connection (from 127.0.0.2, say) before the hub binds it on 0.0.0.0.
_PORT_RANGE = range(20000, 32768)
_handed_out: set[int] = set()


def free_port(host: str = "0.0.0.0") -> int:
    """A TCP port free on ``host`` (all addresses by default) and not handed out before in this
    process, outside the ephemeral range so no outgoing connection takes it meanwhile."""
    start = (os.getpid() * 7919 + len(_handed_out) * 131) % len(_PORT_RANGE)
    for offset in range(len(_PORT_RANGE)):
        port = _PORT_RANGE[(start + offset) % len(_PORT_RANGE)]
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError(f"no free TCP port in {_PORT_RANGE.start}-{_PORT_RANGE.stop - 1}")


def write_config(path: Path, routes: Mapping[str, object], identities: Sequence[Mapping[str, object]],
                 ttl_secs: int = 7200, module_desired: Mapping[str, Mapping[str, object]] | None = None,
                 store_limit_bytes: int | None = None) -> Path:
    """edgeHub desired properties with ``identities``; with ``module_desired`` a whole deployment
    manifest whose modules carry those desired properties."""
    hub_desired = {
        "schemaVersion": "1.1",
        "routes": dict(routes),
        "storeAndForwardConfiguration": {"timeToLiveSecs": ttl_secs}
        | ({"storeLimits": {"maxSizeBytes": store_limit_bytes}} if store_limit_bytes is not None else {}),
    }
    document: dict[str, object]
    if module_desired is None:
        document = {**hub_desired, "identities": list(identities)}
    else:
        content: dict[str, object] = {"$edgeHub": {"properties.desired": hub_desired}}
        content.update({m: {"properties.desired": dict(d)} for m, d in module_desired.items()})
        document = {"modulesContent": content, "identities": list(identities)}
    path.write_text(json.dumps(document, indent=2))
    return path


@dataclass
class HubProcess:
    """``with HubProcess(tmp, config) as hub:`` starts the hub; leaving the block stops it."""

    folder: Path
    config: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if "__" not in k}
        env.update({
            "StorageFolder": str(self.folder / "data"),
            "amqpSettings__enabled": "false",
            "httpSettings__enabled": "false",
            "Metrics__Listener__Port": "0",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.env)
        return env

    def start(self) -> HubProcess:
        command = [sys.executable, "-m", "edgehub", "run"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        self.process = subprocess.Popen(
            command, env=self.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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

    def _pump_output(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def readline(self, timeout: float) -> str | None:
        """The next output line, or None at end of output or after ``timeout`` seconds."""
        try:
            line = self._queue.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None
        if line is not None:
            self.lines.append(line)
        return line

    def wait_for_line(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        for seen in self.lines:
            if needle in seen:
                return seen
        while time.monotonic() < deadline:
            line = self.readline(deadline - time.monotonic())
            if line is None:
                break
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} within {timeout}s:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        while self.readline(2.0) is not None:
            pass
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()

"""Test support for tests/reliability: a hub with its plaintext port, raw MQTT sockets, RSS.

Speaks MQTT through edgehub's own codec over blocking sockets (bounded by timeouts) so an
attack can hold, flood or never read a socket; it asserts nothing itself.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edgehub.message import Identity
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import MQTT_311, ConnAck, Connect, Packet, Publish, Subscribe, Subscription
from tests.conformance.deployment import Deployment, DeploymentSpec, run_deployment
from tests.hubproc import free_port

LOOPBACK: Final = "127.0.0.1"
IO_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class RunningHub:
    """A deployment plus its plaintext port and the hub's process id."""

    deployment: Deployment
    plain_port: int
    https_port: int = 0

    @property
    def pid(self) -> int:
        process = self.deployment.hub.process
        assert process is not None
        return process.pid

    def connect_packet(self, identity: Identity, *, version: int = MQTT_311, password: str | None = None,
                       keep_alive: int = 60, clean: bool = True) -> bytes:
        secret = password if password is not None else self.deployment.password(identity)
        return encode(Connect(version, identity.id, clean, keep_alive, self.deployment.username(identity),
                              secret.encode()), version)

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.deployment.ca_file))
        context.check_hostname = False
        return context


@contextmanager
def running_hub(folder: Path, routes: Mapping[str, str], identities: Sequence[Identity],
                env: Mapping[str, str] | None = None, store_limit_bytes: int | None = None,
                https_port: int | None = None, known_errors: tuple[str, ...] = ()) -> Iterator[RunningHub]:
    """A real hub (TLS on a free port, plaintext on loopback) that must exit 0 and log no error
    but the ``known_errors`` (substrings of error lines of bugs reported elsewhere)."""
    plain = free_port()
    spec = DeploymentSpec(routes, identities, env={"mqttSettings__plainPort": str(plain)} | dict(env or {}),
                          store_limit_bytes=store_limit_bytes, https_port=https_port)
    try:
        with run_deployment(folder, spec) as deployment:
            yield RunningHub(deployment, plain, https_port or 0)
    except AssertionError as exc:
        header, _, problems = str(exc).partition("\n")
        if not known_errors or header != "the hub logged errors:" or not all(
            any(known in line for known in known_errors) for line in problems.splitlines() if line.strip()
        ):
            raise


@dataclass
class RawClient:
    """One blocking MQTT socket: send packets, read the server's (bounded by IO_TIMEOUT)."""

    sock: socket.socket
    version: int = MQTT_311
    decoder: Decoder = field(default_factory=Decoder)
    received: list[Packet] = field(default_factory=list)

    @classmethod
    def open(cls, port: int, *, source: str = LOOPBACK, context: ssl.SSLContext | None = None,
             version: int = MQTT_311, host: str = LOOPBACK) -> RawClient:
        sock = socket.create_connection((host, port), timeout=IO_TIMEOUT, source_address=(source, 0))
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        return cls(sock, version, Decoder(version=version))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = IO_TIMEOUT) -> Packet | None:
        """The next packet; None when the server closed the connection."""
        deadline = time.monotonic() + timeout
        while not self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the hub")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not data:
                return None
            self.received.extend(self.decoder.feed(data))
        return self.received.pop(0)

    def connect(self, hub: RunningHub, identity: Identity, **kwargs: object) -> ConnAck | None:
        self.send(hub.connect_packet(identity, version=self.version, **kwargs))  # type: ignore[arg-type]
        packet = self.read()
        assert packet is None or isinstance(packet, ConnAck), packet
        return packet

    def publish(self, topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> None:
        self.send(encode(Publish(topic, payload, qos, packet_id=packet_id), self.version))

    def subscribe(self, topic_filter: str, qos: int = 1, packet_id: int = 1) -> Packet | None:
        self.send(encode(Subscribe(packet_id, (Subscription(topic_filter, qos),)), self.version))
        return self.read()

    def closed_by_server(self, timeout: float = IO_TIMEOUT) -> bool:
        """True when the server closes the socket within ``timeout`` (anything it sends is skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB: the resident set now and its peak."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took. AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def report(name: str, **figures: object) -> None:
    """One line on stdout (pytest -s, and the -rA summary) with a test's measured figures."""
    print(f"[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))

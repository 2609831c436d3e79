"""A trivial MQTT 3.1.1 server that acknowledges everything and keeps nothing: the load generator's yardstick.

CONNECT → CONNACK, PUBLISH QoS 1 → PUBACK, QoS 2 → PUBREC / PUBREL → PUBCOMP, SUBSCRIBE → SUBACK,
PINGREQ → PINGRESP; no routing, no storage, no authentication. Several processes share the port
(SO_REUSEPORT), so the server is not what limits a measurement of the load generator's ceiling.

    python -m bench.ack_server PORT [PROCESSES]
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import struct
import sys

from bench.mqtt_loadgen import PacketReader

_CONNACK = b"\x20\x02\x00\x00"
_PINGRESP = b"\xd0\x00"


def answer(first: int, body: bytes) -> bytes:
    """The reply to one packet (fixed header's first byte, body), or b"" when none is due."""
    kind = first >> 4
    if kind == 1:
        return _CONNACK
    if kind == 3:
        qos = (first >> 1) & 3
        if not qos:
            return b""
        topic_len = struct.unpack_from("!H", body)[0]
        packet_id = body[2 + topic_len : 4 + topic_len]
        return (b"\x40\x02" if qos == 1 else b"\x50\x02") + packet_id  # [MQTT-4.3.2-2], [MQTT-4.3.3-2]
    if kind == 6:
        return b"\x70\x02" + body[:2]  # PUBREL → PUBCOMP
    if kind == 8:
        granted, pos = bytearray(), 2
        while pos < len(body):
            length = struct.unpack_from("!H", body, pos)[0]
            granted.append(min(body[pos + 2 + length], 2))
            pos += 3 + length
        return bytes([0x90, 2 + len(granted)]) + body[:2] + bytes(granted)
    if kind == 12:
        return _PINGRESP
    return b""


class AckEverything(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = PacketReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        out = bytearray()
        for first, body in self.reader.feed(data):
            if first >> 4 == 14:  # DISCONNECT
                self.transport.close()
                return
            out += answer(first, body)
        if out:
            self.transport.write(bytes(out))


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _serve(port: int, children: list[int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(AckEverything, sock=_listening_socket(port))
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    server.close()


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the parent dies (PR_SET_PDEATHSIG), so none is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def serve(port: int, processes: int) -> None:
    children: list[int] = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            children = []
            break
        children.append(pid)
    try:
        import uvloop

        uvloop.run(_serve(port, children))
    except ImportError:
        asyncio.run(_serve(port, children))


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count() or 1)

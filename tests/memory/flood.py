"""A publisher process for tests/memory: devices over plaintext MQTT publishing QoS 1 telemetry
as fast as the hub acks it, through edgehub's own codec on blocking sockets.

``python -m tests.memory.flood`` reads a JSON job on stdin (port, messages per device, and each
device's client id, topic, username and password), connects every device, publishes in windows
of in-flight messages, prints one JSON line with the sequence numbers the hub acked, then keeps
the connections open until stdin closes. It asserts nothing itself.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass, field
from typing import Final

from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import MQTT_311, ConnAck, Connect, Packet, PubAck, Publish

WINDOW: Final = 64
"""QoS 1 publishes in flight per device before its PUBACKs are awaited."""
IO_TIMEOUT: Final = 30.0


@dataclass
class Device:
    """One device connection and the sequence numbers of its messages in flight."""

    sock: socket.socket
    topic: str
    first_seq: int
    decoder: Decoder = field(default_factory=Decoder)
    pending: dict[int, int] = field(default_factory=dict)
    """packet id → sequence number awaiting its PUBACK."""

    def read(self) -> list[Packet]:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the hub closed the connection")
        return self.decoder.feed(data)


def body(seq: int, size: int) -> bytes:
    """A message body carrying its sequence number, padded to ``size`` bytes."""
    return f"{seq:010d}".encode().ljust(size, b".")


def connect(port: int, client_id: str, username: str, password: str, topic: str, first_seq: int) -> Device:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    device = Device(sock, topic, first_seq)
    sock.sendall(encode(Connect(MQTT_311, client_id, True, 0, username, password.encode())))
    packets: list[Packet] = []
    while not packets:
        packets = device.read()
    if not isinstance(packets[0], ConnAck) or packets[0].reason_code != 0:
        raise ConnectionError(f"{client_id} refused: {packets[0]}")
    return device


def publish_all(devices: list[Device], count: int, size: int) -> list[int]:
    """Publish ``count`` messages from every device, WINDOW at a time each; the acked sequences."""
    acked: list[int] = []
    for start in range(0, count, WINDOW):
        window = range(start, min(start + WINDOW, count))
        for device in devices:
            packets = []
            for offset, index in enumerate(window):
                packet_id = offset + 1
                device.pending[packet_id] = device.first_seq + index
                packets.append(encode(Publish(device.topic, body(device.first_seq + index, size), 1,
                                              packet_id=packet_id)))
            device.sock.sendall(b"".join(packets))
        for device in devices:
            while device.pending:
                acked.extend(device.pending.pop(packet.packet_id) for packet in device.read()
                             if isinstance(packet, PubAck) and packet.reason_code < 0x80)
    return acked


def main() -> None:
    job = json.loads(sys.stdin.readline())
    devices = [connect(job["port"], d["client_id"], d["username"], d["password"], d["topic"], d["first_seq"])
               for d in job["devices"]]
    print(json.dumps({"connected": len(devices)}), flush=True)
    acked = publish_all(devices, job["count"], job["size"])
    print(json.dumps({"acked": acked}), flush=True)
    sys.stdin.read()  # the devices stay connected until the test closes stdin
    for device in devices:
        device.sock.close()


if __name__ == "__main__":
    main()

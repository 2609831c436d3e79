"""The client side of RFC 6455 for MQTT over WebSocket: the upgrade request and its check, binary framing.

Sans-I/O: bytes in, the byte stream the frames carry out (MQTT needs no message boundaries, MQTT 3.1.1 §6),
pongs and the close reply queued for ``data_to_send``; no sockets, no asyncio, no MQTT here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Final

from edgehub.errors import ProtocolError
from edgehub.upstream.http1 import ResponseHead

MQTT_SUBPROTOCOL: Final = "mqtt"
"""[MQTT-6.0.0-3]: the client offers ``mqtt``; IoT Hub and this hub's HTTP head select it."""
_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_FRAME_PAYLOAD: Final = 65_536
"""Outgoing data is cut into frames of at most this many bytes (a parent bounds the frames it takes)."""
MAX_INCOMING_FRAME: Final = 16 * 1024 * 1024

_OP_CONTINUATION: Final = 0x0
_OP_TEXT: Final = 0x1
_OP_BINARY: Final = 0x2
_OP_CLOSE: Final = 0x8
_OP_PING: Final = 0x9
_OP_PONG: Final = 0xA
_FIN: Final = 0x80
_MASKED: Final = 0x80
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")


class WebSocketError(ProtocolError):
    """The parent refused the upgrade or broke RFC 6455."""


def new_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 §4.1)."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer ``key`` with (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(key.encode() + _ACCEPT_GUID).digest()  # RFC 6455 fixes SHA-1
    return base64.b64encode(digest).decode()


def upgrade_request(host: str, port: int, path: str, key: str, *, tls: bool,
                    subprotocol: str = MQTT_SUBPROTOCOL) -> bytes:
    """The opening handshake (RFC 6455 §4.1), offering ``subprotocol``."""
    default = 443 if tls else 80
    authority = _authority(host, port if port != default else None)
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {authority}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        "\r\n"
    ).encode()


def check_upgrade(head: ResponseHead, key: str, subprotocol: str = MQTT_SUBPROTOCOL) -> None:
    """WebSocketError unless ``head`` completes the handshake for ``key`` with ``subprotocol``
    (RFC 6455 §4.1, client requirements 1-6)."""
    if head.status != 101:
        raise WebSocketError(f"WebSocket upgrade refused: {head.status_line}")
    if head.header("upgrade").lower() != "websocket" or "upgrade" not in head.header("connection").lower():
        raise WebSocketError("the answer to the WebSocket upgrade is not an upgrade to websocket")
    if head.header("sec-websocket-accept") != accept_for(key):
        raise WebSocketError("wrong Sec-WebSocket-Accept in the WebSocket upgrade")
    if head.header("sec-websocket-protocol") != subprotocol:
        # [MQTT-6.0.0-4]: the server must select "mqtt"; anything else is not MQTT.
        selected = head.header("sec-websocket-protocol") or "none"
        raise WebSocketError(f"the parent selected WebSocket subprotocol {selected}, not {subprotocol}")


def _authority(host: str, port: int | None) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port is None else f"{name}:{port}"


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (RFC 6455 §5.3), as one big-integer operation."""
    size = len(data)
    if not size:
        return data
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(size, "little")


def _header(opcode: int, size: int, key: bytes) -> bytes:
    first = _FIN | opcode
    if size < 126:
        return bytes((first, _MASKED | size)) + key
    if size < 65_536:
        return bytes((first, _MASKED | 126)) + _U16.pack(size) + key
    return bytes((first, _MASKED | 127)) + _U64.pack(size) + key


def frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final, masked client frame (every client frame is masked, RFC 6455 §5.1)."""
    key = os.urandom(4) if key is None else key
    return _header(opcode, len(payload), key) + mask(payload, key)


class WebSocketClient:
    """Frames an open WebSocket connection's byte stream, client side.

    ``send(data)`` returns the frames that carry ``data`` (binary frames [MQTT-6.0.0-1]);
    ``receive_data(data)`` returns the payload bytes of every complete data frame, queues a pong for a
    ping and the close reply for a close (take them with ``data_to_send``), and raises WebSocketError for
    a text or masked frame [MQTT-6.0.0-1], RFC 6455 §5.1. ``closed`` holds the parent's close code and reason.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._control: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    @property
    def close_received(self) -> bool:
        return self.closed is not None

    def send(self, data: bytes) -> bytes:
        if len(data) <= MAX_FRAME_PAYLOAD:
            return frame(_OP_BINARY, data)
        view = memoryview(data)
        return b"".join(
            frame(_OP_BINARY, bytes(view[pos:pos + MAX_FRAME_PAYLOAD]))
            for pos in range(0, len(data), MAX_FRAME_PAYLOAD)
        )

    def close_frame(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
        return frame(_OP_CLOSE, _U16.pack(code) + reason.encode()[:120])

    def data_to_send(self) -> bytes:
        """Pongs and the close reply owed to the parent."""
        control, self._control = self._control, []
        return b"".join(control)

    def receive_data(self, data: bytes) -> bytes:
        if self.closed is not None:
            return b""
        buf = self._buffer + data if self._buffer else data
        pos, end = 0, len(buf)
        payloads: list[bytes] = []
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            if second & _MASKED:
                raise WebSocketError("the parent sent a masked frame (RFC 6455 §5.1)")
            size = second & 0x7F
            start = pos + 2
            if size == 126:
                if end - start < 2:
                    break
                (size,) = _U16.unpack_from(buf, start)
                start += 2
            elif size == 127:
                if end - start < 8:
                    break
                (size,) = _U64.unpack_from(buf, start)
                start += 8
            if size > MAX_INCOMING_FRAME:
                raise WebSocketError(f"a WebSocket frame of {size} bytes (more than {MAX_INCOMING_FRAME})")
            if end - start < size:
                break
            self._frame(first, buf[start:start + size], payloads)
            pos = start + size
            if self.close_received:
                break
        self._buffer = buf[pos:] if pos < end else b""
        if len(payloads) == 1:
            return payloads[0]
        return b"".join(payloads)

    def _frame(self, first: int, payload: bytes, payloads: list[bytes]) -> None:
        opcode = first & 0x0F
        if first & 0x70:
            raise WebSocketError("a WebSocket frame with reserved bits set (no extension was agreed)")
        if opcode in (_OP_BINARY, _OP_CONTINUATION):
            payloads.append(payload)  # a byte stream: fragments need no reassembly
        elif opcode == _OP_PING:
            self._control.append(frame(_OP_PONG, payload))  # RFC 6455 §5.5.2
        elif opcode == _OP_CLOSE:
            code = _U16.unpack_from(payload)[0] if len(payload) >= 2 else CLOSE_NORMAL
            self.closed = (code, payload[2:].decode("utf-8", "replace"))
            self._control.append(frame(_OP_CLOSE, payload[:2]))  # echo the code (RFC 6455 §5.5.1)
        elif opcode == _OP_TEXT:
            raise WebSocketError("the parent sent a text frame; MQTT travels in binary frames [MQTT-6.0.0-1]")
        elif opcode != _OP_PONG:
            raise WebSocketError(f"unknown WebSocket opcode 0x{opcode:X}")

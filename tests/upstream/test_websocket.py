"""Tests of edgehub.upstream.websocket: the upgrade request and its check, client framing both ways
(frames decoded here as a server would, RFC 6455 §5.2), control frames and refusals."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.upstream.http1 import ResponseHead, parse_response_head
from edgehub.upstream.websocket import (
    MAX_FRAME_PAYLOAD,
    WebSocketClient,
    WebSocketError,
    accept_for,
    check_upgrade,
    mask,
    upgrade_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked frame, as a server sends it."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return bytes((first, 126)) + struct.pack(">H", size) + payload
    return bytes((first, 127)) + struct.pack(">Q", size) + payload


def read_client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of each client frame; every one must be final and masked."""
    frames, pos = [], 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert first & 0x80  # FIN
        assert second & 0x80  # MASK (RFC 6455 §5.1)
        size, pos = second & 0x7F, pos + 2
        if size == 126:
            (size,), pos = struct.unpack_from(">H", data, pos), pos + 2
        elif size == 127:
            (size,), pos = struct.unpack_from(">Q", data, pos), pos + 8
        key, pos = data[pos:pos + 4], pos + 4
        frames.append((first & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data[pos:pos + size]))))
        pos += size
    return frames


def test_the_accept_value_is_rfc_6455_s_example() -> None:
    assert accept_for(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_the_upgrade_request_offers_mqtt_and_names_a_non_default_port() -> None:
    request = upgrade_request("parent", 8443, "/$iothub/websocket", KEY, tls=True).decode()
    assert request.startswith("GET /$iothub/websocket HTTP/1.1\r\nHost: parent:8443\r\n")
    assert "Sec-WebSocket-Protocol: mqtt\r\n" in request
    assert "Sec-WebSocket-Version: 13\r\n" in request
    assert request.endswith("\r\n\r\n")
    assert "Host: parent\r\n" in upgrade_request("parent", 443, "/", KEY, tls=True).decode()


def answer(status: str = "101 Switching Protocols", **headers: str) -> ResponseHead:
    fields = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept_for(KEY),
              "Sec-WebSocket-Protocol": "mqtt"} | {k.replace("_", "-"): v for k, v in headers.items()}
    raw = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v) + "\r\n"
    parsed = parse_response_head(raw.encode())
    assert parsed is not None
    return parsed[0]


def test_a_complete_upgrade_passes() -> None:
    check_upgrade(answer(), KEY)


@pytest.mark.parametrize(("head", "message"), [
    (answer("400 Bad Request"), "upgrade refused: HTTP/1.1 400 Bad Request"),
    (answer(Sec_WebSocket_Accept="wrong"), "wrong Sec-WebSocket-Accept"),
    (answer(Sec_WebSocket_Protocol=""), "subprotocol none, not mqtt"),
    (answer(Upgrade="h2c"), "not an upgrade to websocket"),
])
def test_an_incomplete_upgrade_is_refused_clearly(head: ResponseHead, message: str) -> None:
    with pytest.raises(WebSocketError, match=message):
        check_upgrade(head, KEY)


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_masking_is_xor_with_the_repeated_key_and_its_own_inverse(data: bytes, key: bytes) -> None:
    masked = mask(data, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert mask(masked, key) == data


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 3 * MAX_FRAME_PAYLOAD + 7])
def test_sent_data_leaves_in_masked_binary_frames_of_bounded_size(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frames = read_client_frames(WebSocketClient().send(data))
    assert all(opcode == 0x2 and len(payload) <= MAX_FRAME_PAYLOAD for opcode, payload in frames)
    assert b"".join(payload for _, payload in frames) == data


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5), st.integers(1, 50))
def test_received_frames_yield_their_byte_stream_however_the_bytes_are_split(
    payloads: list[bytes], step: int
) -> None:
    # Fragments (continuation frames) and whole frames: MQTT is a byte stream over them [MQTT-6.0.0-2].
    wire = b"".join(server_frame(0x2 if i == 0 else 0x0, p, fin=i == len(payloads) - 1)
                    for i, p in enumerate(payloads))
    client = WebSocketClient()
    received = b"".join(client.receive_data(wire[pos:pos + step]) for pos in range(0, len(wire), step))
    assert received == b"".join(payloads)


def test_a_large_frame_with_a_64_bit_length_is_read() -> None:
    payload = b"x" * 70_000
    assert WebSocketClient().receive_data(server_frame(0x2, payload)) == payload


def test_a_ping_is_answered_with_a_pong_carrying_its_payload() -> None:
    client = WebSocketClient()
    assert client.receive_data(server_frame(0x9, b"hb") + server_frame(0x2, b"mqtt")) == b"mqtt"
    assert read_client_frames(client.data_to_send()) == [(0xA, b"hb")]


def test_a_close_is_echoed_and_reported_with_code_and_reason() -> None:
    client = WebSocketClient()
    assert client.receive_data(server_frame(0x8, struct.pack(">H", 1001) + b"going away")) == b""
    assert client.closed == (1001, "going away")
    assert read_client_frames(client.data_to_send()) == [(0x8, struct.pack(">H", 1001))]
    assert client.receive_data(server_frame(0x2, b"after")) == b""


@pytest.mark.parametrize(("frame", "message"), [
    (server_frame(0x1, b"text"), "text frame"),
    (bytes((0x82, 0x81)) + b"abcd" + b"x", "masked frame"),
    (bytes((0xC2, 0x01)) + b"x", "reserved bits"),
    (server_frame(0x3, b""), "unknown WebSocket opcode"),
])
def test_what_a_server_must_not_send_is_a_websocket_error(frame: bytes, message: str) -> None:
    with pytest.raises(WebSocketError, match=message):
        WebSocketClient().receive_data(frame)

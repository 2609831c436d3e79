"""Tests of what only the native upstream client promises: one write per loop turn, transport backpressure,
PUBACKs settled however the bytes are split, and refusal of what MQTT cannot carry or a parent must not send.

Real sockets on 127.0.0.1 (ConnectRecorder never PUBACKs, so the tests feed the parent's bytes themselves);
the protocol rules are tested sans-I/O in tests/mqtt/test_client.py, transports in test_transport.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvloop

from edgehub.upstream.connection import IncomingPublish
from edgehub.upstream.native import NativeMqttConnection
from tests.upstream.broker import eventually
from tests.upstream.test_connection import ConnectRecorder, config_for, ignore

TOPIC = "devices/d/messages/events/"


class WriteSpy:
    """Counts ``transport.write`` calls of an open connection (and lets them through)."""

    def __init__(self, connection: NativeMqttConnection) -> None:
        transport = connection._transport  # the write count is the behaviour under test
        assert transport is not None
        self.writes: list[bytes] = []
        write = transport.write

        def spy(data: Any) -> None:
            self.writes.append(bytes(data))
            write(data)

        transport.write = spy  # type: ignore[method-assign]  # instrumenting the real transport


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectRecorder]:
    async with ConnectRecorder() as broker:
        yield broker


@pytest.fixture
async def connection(recorder: ConnectRecorder) -> AsyncIterator[NativeMqttConnection]:
    client = NativeMqttConnection(config_for(recorder.port), "token", ignore)
    await client.open()
    yield client
    await client.close()


async def next_turns() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_publishes_of_one_loop_turn_leave_in_one_write(
    connection: NativeMqttConnection, recorder: ConnectRecorder
) -> None:
    spy = WriteSpy(connection)
    acks = [connection.publish(TOPIC, b"%d" % index) for index in range(50)]
    connection.ack(7)  # a downstream PUBACK joins the same write
    await next_turns()
    assert len(spy.writes) == 1
    assert spy.writes[0].endswith(b"\x40\x02\x00\x07")
    await eventually(lambda: len(recorder.received) >= len(spy.writes[0]), what="bytes at the parent")
    assert not any(acked.done() for acked in acks)


async def test_a_paused_transport_holds_the_output_until_it_resumes(connection: NativeMqttConnection) -> None:
    spy = WriteSpy(connection)
    connection.pause_writing()
    connection.publish(TOPIC, b"a")
    connection.publish(TOPIC, b"b")
    await next_turns()
    assert spy.writes == []
    connection.resume_writing()
    assert len(spy.writes) == 1
    assert spy.writes[0].count(TOPIC.encode()) == 2


async def test_pubacks_settle_their_publishes_however_the_bytes_are_split(
    connection: NativeMqttConnection,
) -> None:
    acks = [connection.publish(TOPIC, b"x") for _ in range(5)]
    connection.data_received(b"\x40\x02\x00\x02\x40\x02\x00\x01")  # the fast path, out of order
    assert [acked.done() for acked in acks] == [True, True, False, False, False]
    connection.data_received(b"\xd0\x00\x40\x02\x00\x03\x40")  # PINGRESP first: the codec's path
    connection.data_received(b"\x02\x00")
    assert not acks[3].done()
    connection.data_received(b"\x04\x40\x02\x00\x05")
    assert all(acked.done() and acked.result() for acked in acks)
    assert connection.is_open


async def test_incoming_qos1_publish_reaches_the_link_and_is_not_acked_by_itself(
    recorder: ConnectRecorder,
) -> None:
    received: list[IncomingPublish] = []
    client = NativeMqttConnection(config_for(recorder.port), "token", received.append)
    await client.open()
    try:
        topic = b"devices/leaf1/messages/devicebound/"
        client.data_received(b"\x32" + bytes([2 + len(topic) + 2 + 3]) + b"\x00" + bytes([len(topic)])
                             + topic + b"\x00\x09c2d")
        assert received == [IncomingPublish(topic.decode(), b"c2d", 9, 1)]
        await next_turns()
        assert b"\x40\x02\x00\x09" not in recorder.received  # only the link's ack() sends it
    finally:
        await client.close()


@pytest.mark.parametrize("data", [b"\x00\x00", b"\x10\x00", b"\x34\x05\x00\x01a\x00\x01"])
async def test_a_malformed_or_unexpected_packet_drops_the_connection(
    connection: NativeMqttConnection, data: bytes
) -> None:
    acked = connection.publish(TOPIC, b"x")
    connection.data_received(data)
    reason = await asyncio.wait_for(connection.wait_closed(), 5)
    assert reason.startswith("protocol error")
    assert acked.result() is False
    assert not connection.is_open


@pytest.mark.parametrize("topic", ["", "devices/+/messages", "devices/#"])
async def test_a_topic_mqtt_cannot_carry_raises_value_error(
    connection: NativeMqttConnection, topic: str
) -> None:
    with pytest.raises(ValueError, match="topic"):
        connection.publish(topic, b"x")
    assert connection.is_open


async def test_a_too_long_topic_raises_value_error(connection: NativeMqttConnection) -> None:
    with pytest.raises(ValueError, match="too long"):
        connection.publish("t" * 65_536, b"x")


async def test_packet_ids_skip_those_still_awaiting_a_puback(connection: NativeMqttConnection) -> None:
    spy = WriteSpy(connection)
    first = connection.publish(TOPIC, b"x")  # packet id 1, never acknowledged
    connection._session._next_id = 1  # wrapped around (without 65535 publishes) to the unacked id 1
    connection.publish(TOPIC, b"y")
    await next_turns()
    packet_ids = [data[3 + len(TOPIC) : 5 + len(TOPIC)] for data in spy.writes[0].split(b"\x32")[1:]]
    assert packet_ids == [b"\x00\x01", b"\x00\x02"]
    assert not first.done()


def test_the_hub_s_uvloop_transport_carries_a_connection() -> None:
    """uvloop's transports do not subclass asyncio.Transport; the hub runs on uvloop."""

    async def scenario() -> bytes:
        async with ConnectRecorder() as broker:
            client = NativeMqttConnection(config_for(broker.port), "token", ignore)
            await client.open()
            client.publish(TOPIC, b"on uvloop")
            await client.close()
            await eventually(lambda: broker.received.endswith(b"\xe0\x00"), what="PUBLISH and DISCONNECT")
            return bytes(broker.received)

    assert b"on uvloop" in uvloop.run(scenario())

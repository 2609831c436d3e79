"""Tests of the $upstream endpoint: confirmed prefixes, PUBACK timeouts, rejections, wire order, byte window.

Virtual time (FakeClock) and a fake publish channel; the real broker is in test_mqtt_broker.py.
"""

from __future__ import annotations

import asyncio

import pytest

from edgehub.errors import EndpointUnavailable
from edgehub.message import Identity, Message, SystemProperty
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.testing.clock import FakeClock, settle
from edgehub.upstream.endpoint import PublishChannel, UpstreamEndpoint

EDGE = Identity("edge1", "$edgeHub")
ACK_TIMEOUT = 30.0


class FakeChannel:
    """Records every PUBLISH; the test settles each PUBACK future (or ``auto_ack`` does)."""

    def __init__(self, *, auto_ack: bool = False) -> None:
        self.auto_ack = auto_ack
        self.published: list[tuple[str, bytes]] = []
        self.acks: list[asyncio.Future[bool]] = []

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        if "#" in topic or "+" in topic:  # as paho's _raise_for_invalid_topic
            raise ValueError("Publish topic cannot contain wildcards.")
        if len(topic.encode()) > 65535:
            raise ValueError("Publish topic is too long.")
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            acked.set_result(True)
        self.published.append((topic, payload))
        self.acks.append(acked)
        return acked

    def settle(self, outcomes: list[bool]) -> None:
        for acked, outcome in zip(self.acks, outcomes, strict=False):
            if not acked.done():
                acked.set_result(outcome)


def batch(*bodies: bytes, sender: str = "sensor1", first_id: int = 1) -> list[QueuedMessage]:
    system = {SystemProperty.CONNECTION_DEVICE_ID: sender}
    return [
        QueuedMessage(first_id + i, QueueKey("$upstream"), 0, Message(body, {"n": str(first_id + i)}, system))
        for i, body in enumerate(bodies)
    ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timeouts() -> list[PublishChannel]:
    return []


@pytest.fixture
def endpoint(clock: FakeClock, timeouts: list[PublishChannel]) -> UpstreamEndpoint:
    return UpstreamEndpoint(
        clock, EDGE, max_batch_size=100, ack_timeout=ACK_TIMEOUT, max_message_bytes=1000,
        max_in_flight_bytes=10_000, on_ack_timeout=timeouts.append,
    )


async def test_every_message_goes_out_on_its_senders_topic_and_is_confirmed(
    endpoint: UpstreamEndpoint,
) -> None:
    channel = FakeChannel(auto_ack=True)
    endpoint.attach(channel)
    result = await endpoint.send(batch(b"a", b"b"))
    assert (result.delivered, result.rejected) == (2, False)
    assert channel.published == [
        ("devices/sensor1/messages/events/n=1", b"a"),
        ("devices/sensor1/messages/events/n=2", b"b"),
    ]


async def test_send_reports_only_the_prefix_confirmed_before_the_first_gap(
    endpoint: UpstreamEndpoint,
) -> None:
    channel = FakeChannel()
    endpoint.attach(channel)
    sending = asyncio.ensure_future(endpoint.send(batch(b"1", b"2", b"3", b"4", b"5")))
    await settle()
    channel.settle([True, True, True, False, True])  # the 4th was lost: the 5th's PUBACK does not count
    result = await sending
    assert (result.delivered, result.rejected) == (3, False)


async def test_send_while_disconnected_raises_unavailable(endpoint: UpstreamEndpoint) -> None:
    with pytest.raises(EndpointUnavailable):
        await endpoint.send(batch(b"a"))
    endpoint.attach(FakeChannel())
    endpoint.detach()
    with pytest.raises(EndpointUnavailable):
        await endpoint.send(batch(b"a"))


async def test_connection_lost_before_any_puback_raises_unavailable(endpoint: UpstreamEndpoint) -> None:
    channel = FakeChannel()
    endpoint.attach(channel)
    sending = asyncio.ensure_future(endpoint.send(batch(b"a", b"b")))
    await settle()
    endpoint.detach()
    channel.settle([False, False])
    with pytest.raises(EndpointUnavailable):
        await sending


async def test_puback_later_than_the_ack_timeout_counts_as_not_delivered(
    endpoint: UpstreamEndpoint, clock: FakeClock, timeouts: list[PublishChannel]
) -> None:
    channel = FakeChannel()
    endpoint.attach(channel)
    sending = asyncio.ensure_future(endpoint.send(batch(b"a", b"b", b"c")))
    await settle()
    channel.settle([True])
    await clock.advance(ACK_TIMEOUT - 1)
    assert not sending.done()
    await clock.advance(1)
    assert (await sending).delivered == 1
    assert timeouts == [channel]  # the link drops that connection: MQTT resends only after a reconnect


async def test_message_over_the_size_limit_is_rejected_after_the_confirmed_prefix(
    endpoint: UpstreamEndpoint,
) -> None:
    channel = FakeChannel(auto_ack=True)
    endpoint.attach(channel)
    result = await endpoint.send(batch(b"ok", b"x" * 1001, b"later"))
    assert (result.delivered, result.rejected) == (1, True)
    assert [payload for _, payload in channel.published] == [b"ok"]


async def test_message_mqtt_cannot_carry_is_rejected_first_in_batch(endpoint: UpstreamEndpoint) -> None:
    endpoint.attach(FakeChannel(auto_ack=True))
    [queued] = batch(b"bad")
    huge = Message(b"bad", {"note": "x" * 70_000}, queued.message.system_properties)  # topic > 64 KiB
    result = await endpoint.send([QueuedMessage(queued.id, queued.queue, 0, huge)])
    assert (result.delivered, result.rejected) == (0, True)


async def test_ids_with_topic_characters_go_out_percent_encoded(endpoint: UpstreamEndpoint) -> None:
    channel = FakeChannel(auto_ack=True)
    endpoint.attach(channel)
    result = await endpoint.send(batch(b"ok", sender="odd#device+1"))
    assert result.delivered == 1
    assert channel.published == [("devices/odd%23device%2B1/messages/events/n=1", b"ok")]


async def test_concurrent_sends_publish_in_call_order_even_when_waiting_for_room(clock: FakeClock) -> None:
    endpoint = UpstreamEndpoint(clock, EDGE, ack_timeout=ACK_TIMEOUT, max_in_flight_bytes=100)
    channel = FakeChannel()
    endpoint.attach(channel)
    first = asyncio.ensure_future(endpoint.send(batch(b"a" * 40, b"b" * 40, first_id=1)))
    second = asyncio.ensure_future(endpoint.send(batch(b"c" * 10, first_id=3)))
    await settle()
    # The window holds about one 40-byte message with its topic: the rest wait, in order.
    assert [p[:1] for _, p in channel.published] == [b"a"]
    while not (first.done() and second.done()):
        channel.settle([True] * len(channel.acks))
        await settle()
    assert [p[:1] for _, p in channel.published] == [b"a", b"b", b"c"]
    assert (await first).delivered == 2
    assert (await second).delivered == 1


async def test_unacknowledged_bytes_never_exceed_the_window(clock: FakeClock) -> None:
    endpoint = UpstreamEndpoint(clock, EDGE, ack_timeout=ACK_TIMEOUT, max_in_flight_bytes=300)
    channel = FakeChannel()
    endpoint.attach(channel)
    sending = asyncio.ensure_future(endpoint.send(batch(*[b"x" * 50] * 20)))
    peak = 0
    while not sending.done():
        await settle()
        peak = max(peak, endpoint.in_flight_bytes)
        channel.settle([True] * len(channel.acks))
    assert (await sending).delivered == 20
    assert 0 < peak <= 300
    assert endpoint.in_flight_bytes == 0


async def test_no_room_for_a_whole_ack_timeout_gives_up_and_reports_the_channel(
    clock: FakeClock, timeouts: list[PublishChannel]
) -> None:
    endpoint = UpstreamEndpoint(
        clock, EDGE, ack_timeout=ACK_TIMEOUT, max_in_flight_bytes=100, on_ack_timeout=timeouts.append
    )
    channel = FakeChannel()
    endpoint.attach(channel)
    sending = asyncio.ensure_future(endpoint.send(batch(b"a" * 60, b"b" * 60)))
    await settle()
    assert len(channel.published) == 1
    await clock.advance(ACK_TIMEOUT)
    assert timeouts == [channel]  # the link drops it, which ends the first PUBACK wait unconfirmed
    channel.settle([False])
    assert (await sending).delivered == 0
    assert len(channel.published) == 1
    assert endpoint.in_flight_bytes == 0


async def test_attaching_a_connection_notifies_reachable_listeners_at_once(
    endpoint: UpstreamEndpoint,
) -> None:
    calls: list[str] = []
    unsubscribe = endpoint.subscribe_reachable(lambda: calls.append("reachable"))
    endpoint.attach(FakeChannel())
    assert calls == ["reachable"]
    assert endpoint.reachable
    unsubscribe()
    endpoint.attach(FakeChannel())
    assert calls == ["reachable"]


async def test_wait_idle_returns_once_in_flight_sends_end(endpoint: UpstreamEndpoint) -> None:
    channel = FakeChannel()
    endpoint.attach(channel)
    sending = asyncio.ensure_future(endpoint.send(batch(b"a")))
    await settle()
    idle = asyncio.ensure_future(endpoint.wait_idle())
    await settle()
    assert not idle.done()
    channel.settle([True])
    await settle()
    assert idle.done()
    assert (await sending).delivered == 1

"""Tests of the upstream MQTT link's logic: reconnect backoff, reachability, metrics, token renewal,
subscriptions and storing downstream messages before acking them.

Virtual time (FakeClock) and fake connections; the real broker is in test_mqtt_broker.py.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from edgehub.endpoints.backoff import Backoff
from edgehub.errors import EndpointUnavailable, StoreFullError
from edgehub.message import Identity, Message, SystemProperty
from edgehub.metrics import INNER as REGISTRY
from edgehub.plugins import UpstreamLink
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.testing.clock import FakeClock, settle
from edgehub.upstream.config import SubscriptionScope, UpstreamConfig
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.mqtt import MqttUpstream
from tests.upstream.fakes import FakeHub, FakeParent

KEY = base64.b64encode(b"k" * 32).decode()
EDGE = Identity("edge1", "$edgeHub")
WILDCARDS = ["devices/+/messages/devicebound/#", "devices/edge1/modules/+/inputs/#"]
DEVICEBOUND = "devices/leaf1/messages/devicebound/%24.mid=c1&k=v"
FILTER_INPUT = "devices/edge1/modules/filter/inputs/input1/"

MakeLink = Callable[..., Awaitable[MqttUpstream]]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def offline_count() -> float:
    return metric("edgehub_offline_count_total", id=EDGE.id)


def offline_seconds() -> tuple[float, float]:
    return (
        metric("edgehub_offline_duration_seconds_count", id=EDGE.id),
        metric("edgehub_offline_duration_seconds_sum", id=EDGE.id),
    )


def telemetry(*bodies: bytes) -> list[QueuedMessage]:
    system = {SystemProperty.CONNECTION_DEVICE_ID: "sensor1"}
    return [QueuedMessage(i, QueueKey("$upstream"), 0, Message(b, {}, system)) for i, b in enumerate(bodies)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def parent() -> FakeParent:
    return FakeParent()


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def make_link(clock: FakeClock, parent: FakeParent, hub: FakeHub) -> AsyncIterator[MakeLink]:
    """Started links with exact (jitter-free) backoff; stopped after the test."""
    links: list[MqttUpstream] = []

    async def make(token_ttl: float = 3600, host: str = "parent.local", **options: Any) -> MqttUpstream:
        credentials = SasCredentials("myhub.azure-devices.net", EDGE, KEY, token_ttl=token_ttl)
        config = UpstreamConfig(credentials, host, 8883, **options)
        link = MqttUpstream(
            config, clock, connection_factory=parent.connect,
            backoff=Backoff(random=lambda: 0.0), store_backoff=lambda: Backoff(random=lambda: 0.0),
            probe_backoff=Backoff(initial=0.1, cap=1.0, random=lambda: 0.0),
        )
        await link.start(hub)
        links.append(link)
        await settle()
        return link

    yield make
    for link in links:
        await link.stop()


def test_link_is_an_upstream_link_for_the_hub(clock: FakeClock) -> None:
    config = UpstreamConfig(SasCredentials("hub", EDGE, KEY), "parent.local", 8883)
    link: UpstreamLink = MqttUpstream(config, clock)
    assert link.endpoint.name == "$upstream"


async def test_connects_subscribes_and_becomes_reachable(make_link: MakeLink, parent: FakeParent) -> None:
    link = await make_link()
    assert parent.attempts == 1
    assert link.upstream_endpoint.reachable
    assert parent.current.subscriptions == [WILDCARDS]
    assert parent.current.password.startswith("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2F")


async def test_unreachable_parent_is_probed_at_most_a_second_apart_so_delivery_resumes_within_a_second(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    parent.reachable = False
    link = await make_link()
    # 0.1 s doubling to a 1 s cap: attempts at 0, 0.1, 0.3, 0.7, 1.5, 2.5, 3.5, ... 600.5
    for at, attempts in [(0.05, 1), (0.15, 2), (0.35, 3), (0.75, 4), (1.55, 5), (2.55, 6), (600.55, 604)]:
        await clock.advance(at - clock.monotonic())
        assert parent.attempts == attempts, f"at {at} s"
    assert not link.upstream_endpoint.reachable
    parent.reachable = True
    await clock.advance(1)
    assert link.upstream_endpoint.reachable


async def test_refused_credentials_are_retried_after_1_2_4_seconds_up_to_a_60_second_cap(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    parent.refuse_credentials = True
    link = await make_link()
    for at, attempts in [(0.99, 1), (1, 2), (2.99, 2), (3, 3), (7, 4), (15, 5), (63, 7), (123, 8), (183, 9)]:
        await clock.advance(at - clock.monotonic())
        assert parent.attempts == attempts, f"at {at} s"
    assert not link.upstream_endpoint.reachable
    parent.refuse_credentials = False
    await clock.advance(60)
    assert link.upstream_endpoint.reachable


async def test_reconnect_tells_waiting_pumps_at_once(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    link = await make_link()
    calls: list[float] = []
    link.upstream_endpoint.subscribe_reachable(lambda: calls.append(clock.monotonic()))
    parent.current.drop()
    await settle()
    assert not link.upstream_endpoint.reachable
    with pytest.raises(EndpointUnavailable):
        await link.upstream_endpoint.send(telemetry(b"x"))
    await clock.advance(1)
    assert calls == [pytest.approx(0.1)]  # the first probe after the drop reconnects
    assert len(parent.connections) == 2
    assert parent.current.subscriptions == [WILDCARDS]  # again: the parent may have lost the session
    assert (await link.upstream_endpoint.send(telemetry(b"x"))).delivered == 1


async def test_each_outage_counts_once_and_its_duration_is_observed_on_reconnect(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    await make_link()
    count, (observed, seconds) = offline_count(), offline_seconds()
    parent.current.drop()
    parent.reachable = False
    await clock.advance(1)  # one failed attempt: still the same outage
    assert offline_count() == count + 1
    assert offline_seconds() == (observed, seconds)
    parent.reachable = True
    await clock.advance(2)  # probes at 0.1, 0.3, 0.7 failed; the one at 1.5 s succeeds
    assert offline_count() == count + 1
    assert offline_seconds()[0] == observed + 1
    assert offline_seconds()[1] == pytest.approx(seconds + 1.5)


async def test_refused_credentials_are_retried_with_backoff_and_count_as_offline(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    parent.refuse_credentials = True
    count = offline_count()
    link = await make_link()
    assert offline_count() == count + 1
    await clock.advance(1)
    assert parent.attempts == 2
    assert not link.upstream_endpoint.reachable


async def test_unexpected_error_while_connecting_is_logged_and_retried(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    parent.crash_with = [RuntimeError("bug")]
    link = await make_link()
    assert "connecting to mqtts://parent.local:8883 failed unexpectedly" in caplog.text
    assert not link.upstream_endpoint.reachable
    await clock.advance(1)
    assert link.upstream_endpoint.reachable


async def test_token_is_renewed_at_80_percent_of_its_life_without_going_offline(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    link = await make_link(token_ttl=100)
    first = parent.current
    count = offline_count()
    await clock.advance(79.9)
    assert len(parent.connections) == 1
    await clock.advance(0.1)
    assert len(parent.connections) == 2
    assert first.closed_reason == "closed by the hub"
    assert parent.current.password != first.password
    assert link.upstream_endpoint.reachable
    assert offline_count() == count
    await clock.advance(80)
    assert len(parent.connections) == 3
    assert link.connects == 3


async def test_renewal_lets_in_flight_sends_finish_before_disconnecting(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    parent.auto_ack = False
    link = await make_link(token_ttl=100)
    first = parent.current
    await clock.advance(79.5)
    sending = asyncio.ensure_future(link.upstream_endpoint.send(telemetry(b"a")))
    await clock.advance(0.5)
    assert first.is_open  # waits for the send's PUBACK
    with pytest.raises(EndpointUnavailable):
        await link.upstream_endpoint.send(telemetry(b"b"))
    first.acks[0].set_result(True)
    assert (await sending).delivered == 1
    await settle()
    assert first.closed_reason == "closed by the hub"
    assert parent.current.is_open
    assert link.upstream_endpoint.reachable


async def test_missing_puback_drops_the_connection_and_reconnects(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    parent.auto_ack = False
    link = await make_link(ack_timeout=30)
    first = parent.current
    sending = asyncio.ensure_future(link.upstream_endpoint.send(telemetry(b"a")))
    await clock.advance(30)
    assert (await sending).delivered == 0
    assert first.closed_reason == "no PUBACK within MessageAckTimeoutSecs"
    await clock.advance(1)
    assert parent.current is not first
    assert link.upstream_endpoint.reachable


async def test_iot_hub_gets_no_downstream_subscriptions(make_link: MakeLink, parent: FakeParent) -> None:
    await make_link(host="myhub.azure-devices.net")
    assert parent.current.subscriptions == []


async def test_refused_wildcards_fall_back_to_the_hubs_own_topic(
    make_link: MakeLink, parent: FakeParent
) -> None:
    parent.refused_filters = set(WILDCARDS)
    await make_link()
    assert parent.current.subscriptions == [WILDCARDS, ["devices/edge1/modules/%24edgeHub/inputs/#"]]


async def test_own_scope_subscribes_to_the_hubs_own_topic_only(
    make_link: MakeLink, parent: FakeParent
) -> None:
    await make_link(subscription_scope=SubscriptionScope.OWN)
    assert parent.current.subscriptions == [["devices/edge1/modules/%24edgeHub/inputs/#"]]


async def test_downstream_message_is_acked_only_after_the_hub_stored_it(
    make_link: MakeLink, parent: FakeParent, hub: FakeHub
) -> None:
    await make_link()
    hub.gate.clear()
    parent.current.deliver(DEVICEBOUND, b"c2d", mid=7)
    await settle()
    assert hub.attempts == 1
    assert parent.current.acked_mids == []
    hub.gate.set()
    await settle()
    assert hub.stored == [(
        "/devices/leaf1/messages/devicebound",
        [Message(b"c2d", {"k": "v"}, {SystemProperty.MESSAGE_ID: "c1"})],
    )]
    assert parent.current.acked_mids == [7]


async def test_full_store_leaves_messages_unacked_and_retries_with_backoff(
    make_link: MakeLink, parent: FakeParent, hub: FakeHub, clock: FakeClock
) -> None:
    await make_link()
    hub.fail_with = [StoreFullError("full"), StoreFullError("full")]
    parent.current.deliver(FILTER_INPUT, b"m", mid=3)
    await settle()
    assert (hub.attempts, parent.current.acked_mids) == (1, [])
    await clock.advance(1)
    assert (hub.attempts, parent.current.acked_mids) == (2, [])
    await clock.advance(2)
    assert hub.attempts == 3
    assert hub.stored == [("/modules/filter/inputs/input1", [Message(b"m")])]
    assert parent.current.acked_mids == [3]


async def test_message_whose_connection_ended_is_not_acked_and_not_stored_if_still_waiting(
    make_link: MakeLink, parent: FakeParent, hub: FakeHub
) -> None:
    await make_link()
    connection = parent.current
    hub.gate.clear()
    connection.deliver(DEVICEBOUND, b"first", mid=1)
    await settle()
    connection.deliver(DEVICEBOUND, b"second", mid=2)
    connection.drop()
    hub.gate.set()
    await settle()
    # "first" was being stored when the connection ended: stored, but its PUBACK cannot go
    # (the parent sends it again: a duplicate, never a loss); "second" waits for that resend.
    assert [m.body for _, messages in hub.stored for m in messages] == [b"first"]
    assert connection.acked_mids == []


async def test_message_for_no_local_queue_is_acked_and_counted_as_dropped(
    make_link: MakeLink, parent: FakeParent, hub: FakeHub
) -> None:
    await make_link()
    unroutable = {"reason": "no_route", "from": "$upstream", "from_route_output": ""}
    dropped = metric("edgehub_messages_dropped_total", **unroutable)
    parent.current.deliver("devices/other-edge/modules/filter/inputs/input1/", b"m", mid=9)
    await settle()
    assert hub.stored == []
    assert parent.current.acked_mids == [9]
    assert metric("edgehub_messages_dropped_total", **unroutable) == dropped + 1


async def test_downstream_messages_are_stored_in_arrival_order_grouped_by_endpoint(
    make_link: MakeLink, parent: FakeParent, hub: FakeHub
) -> None:
    await make_link()
    connection = parent.current
    hub.gate.clear()
    connection.deliver(DEVICEBOUND, b"a", mid=1)
    await settle()
    connection.deliver(DEVICEBOUND, b"b", mid=2)
    connection.deliver(DEVICEBOUND, b"c", mid=3)
    connection.deliver(FILTER_INPUT, b"d", mid=4)
    connection.deliver(DEVICEBOUND, b"e", mid=5)
    hub.gate.set()
    await settle()
    assert [(endpoint.split("/")[-1], [m.body for m in messages]) for endpoint, messages in hub.stored] == [
        ("devicebound", [b"a"]), ("devicebound", [b"b", b"c"]), ("input1", [b"d"]), ("devicebound", [b"e"]),
    ]
    assert connection.acked_mids == [1, 2, 3, 4, 5]


async def test_stop_disconnects_and_stops_reconnecting(
    make_link: MakeLink, parent: FakeParent, clock: FakeClock
) -> None:
    link = await make_link()
    await link.stop()
    assert parent.current.closed_reason == "closed by the hub"
    assert not link.upstream_endpoint.reachable
    await clock.advance(120)
    assert parent.attempts == 1

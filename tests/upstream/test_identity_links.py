"""Tests of edgehub.upstream.identity_links: a connection per sender, opened on demand, in virtual
time against fake parent connections."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgehub.message import Identity, Message, SystemProperty
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.testing.clock import FakeClock, settle
from edgehub.twins.port import UnavailableMethods
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.connection import OnMessage
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.identity_links import IdentityLinks, PerIdentityEndpoint
from edgehub.upstream.mqtt import MqttUpstream
from edgehub.upstream.presented import PresentedTokens
from tests.upstream.fakes import FakeConnection, FakeHub, FakeParent
from tests.upstream.test_twin_sync import FakeCache

EDGE = Identity("edge", "$edgeHub")
KEYS = {Identity(d): base64.b64encode(d.encode() * 8).decode() for d in ("d1", "d2")}
HOST = "myhub.azure-devices.net"


def message(n: int, device: str) -> QueuedMessage:
    system = {SystemProperty.CONNECTION_DEVICE_ID: device}
    return QueuedMessage(n, QueueKey("$upstream"), 0, Message(b"%d" % n, {}, system))


class Recording:
    """A connection factory that remembers which identity each connection is for."""

    def __init__(self, parent: FakeParent) -> None:
        self.parent = parent
        self.identities: list[Identity] = []

    def __call__(self, config: UpstreamConfig, password: str, on_message: OnMessage) -> FakeConnection:
        self.identities.append(config.identity)
        return self.parent.connect(config, password, on_message)

    def of(self, identity: Identity) -> FakeConnection:
        return self.parent.connections[max(i for i, who in enumerate(self.identities) if who == identity)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def setup(clock: FakeClock) -> AsyncIterator[tuple[PerIdentityEndpoint, IdentityLinks, Recording, Any]]:
    parent = FakeParent()
    factory = Recording(parent)
    base = UpstreamConfig(SasCredentials(HOST, EDGE, base64.b64encode(b"e" * 32).decode()), HOST, 8883)
    own = MqttUpstream(base, clock, connection_factory=factory)
    presented = PresentedTokens()
    links = IdentityLinks(base, clock, keys=lambda: KEYS.get, presented=presented, factory=factory,
                          twins=FakeCache(), methods=UnavailableMethods(), idle_timeout=600, max_links=2)
    hub = FakeHub()
    await links.start(hub)
    await own.start(hub)
    await settle()
    endpoint = PerIdentityEndpoint(links, own, clock, max_batch_size=100)
    yield endpoint, links, factory, presented
    await links.stop()
    await own.stop()


async def test_each_sender_goes_up_on_a_connection_of_its_own(setup: Any) -> None:
    endpoint, _, factory, _ = setup
    result = await endpoint.send([message(1, "d1"), message(2, "d2"), message(3, "d1")])
    assert result.delivered == 3
    assert [t for t, _ in factory.of(Identity("d1")).published] == [
        "devices/d1/messages/events/", "devices/d1/messages/events/"]
    assert [t for t, _ in factory.of(Identity("d2")).published] == ["devices/d2/messages/events/"]
    assert "devices%2Fd1" in factory.of(Identity("d1")).password  # signed with d1's own key


async def test_a_device_connection_subscribes_to_its_own_cloud_to_device_messages(setup: Any) -> None:
    endpoint, _, factory, _ = setup
    await endpoint.send([message(1, "d1")])
    assert factory.of(Identity("d1")).subscriptions == [["devices/d1/messages/devicebound/#"]]


async def test_a_sender_without_credentials_waits_and_the_others_are_not_sent_twice(
    setup: Any, clock: FakeClock,
) -> None:
    endpoint, _, factory, _ = setup
    batch = [message(1, "d1"), message(2, "stranger"), message(3, "d1")]
    first = await endpoint.send(batch)
    assert first.delivered == 1  # d1's first; the stranger has no key nor presented token
    again = await endpoint.send(batch[1:])
    assert again.delivered == 0
    assert len(factory.of(Identity("d1")).published) == 2  # message 3 not published again


async def test_a_presented_token_serves_an_identity_without_a_key(setup: Any, clock: FakeClock) -> None:
    endpoint, links, factory, presented = setup
    presented.record(Identity("guest"), "SharedAccessSignature sr=x&sig=y&se=1", clock.time() + 3600)
    result = await endpoint.send([message(1, "guest")])
    assert result.delivered == 1
    assert factory.of(Identity("guest")).password.startswith("SharedAccessSignature sr=x")
    assert links.credentials(Identity("nobody")) is None


async def test_at_the_cap_the_least_recently_used_idle_connection_makes_room(
    setup: Any, clock: FakeClock,
) -> None:
    endpoint, links, factory, presented = setup
    presented.record(Identity("d3"), "SharedAccessSignature sr=z&sig=y&se=1", clock.time() + 3600)
    await endpoint.send([message(1, "d1")])
    await clock.advance(1)
    await endpoint.send([message(2, "d2")])
    await clock.advance(1)
    assert (await endpoint.send([message(3, "d3")])).delivered == 1
    await settle()
    assert len(links) == 2
    assert factory.of(Identity("d1")).closed_reason is not None  # least recently used, closed
    assert factory.of(Identity("d2")).closed_reason is None


async def test_an_idle_connection_closes_after_the_idle_timeout(setup: Any, clock: FakeClock) -> None:
    endpoint, links, factory, _ = setup
    await endpoint.send([message(1, "d1")])
    await clock.advance(599)
    assert len(links) == 1
    await clock.advance(61)
    await settle()
    assert len(links) == 0
    assert factory.of(Identity("d1")).closed_reason is not None


async def test_hub_own_messages_go_on_its_own_connection(setup: Any) -> None:
    endpoint, links, factory, _ = setup
    own = QueuedMessage(9, QueueKey("$upstream"), 0, Message(b"x", {}, {}))
    assert (await endpoint.send([own])).delivered == 1
    assert len(links) == 0
    assert factory.of(EDGE).published[0][0] == "devices/edge/modules/%24edgeHub/messages/events/"


async def test_a_followed_identitys_twin_is_read_on_its_own_connection_in_iot_hubs_own_dialect(
    setup: Any,
) -> None:
    _, links, factory, _ = setup
    links.follow(Identity("d1"))
    for _ in range(5):
        await settle()
    connection = factory.of(Identity("d1"))
    assert ["$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#"] in connection.subscriptions
    assert [t for t, _ in connection.published] == ["$iothub/twin/GET/?$rid=1"]


async def test_telemetry_only_senders_cause_no_twin_traffic(setup: Any) -> None:
    endpoint, _, factory, _ = setup
    await endpoint.send([message(1, "d2")])
    assert all(not t.startswith("$iothub/") for t, _ in factory.of(Identity("d2")).published)

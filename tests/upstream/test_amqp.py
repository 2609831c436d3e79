"""Tests of the upstream AMQP link against an in-memory proton parent (tests/upstream/amqp_peer.py, no
sockets): CBS put-token per identity and its renewal, a sender link per sender, outcomes to SendResult,
the Amqp -> AmqpWs fallback, and cloud-to-device messages accepted only after the durable write.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from proton import Delivery
from proton import Message as AmqpMessage

from edgehub.amqp.messages import body_bytes, from_amqp
from edgehub.endpoints.backoff import Backoff
from edgehub.errors import EndpointUnavailable, StoreFullError
from edgehub.message import Identity, Message, SystemProperty
from edgehub.plugins import UpstreamLink
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.testing.clock import FakeClock, settle
from edgehub.upstream.amqp import AmqpUpstream
from edgehub.upstream.amqp_session import Outcome
from edgehub.upstream.config import UpstreamConfig, UpstreamTransport
from edgehub.upstream.credentials import Credentials, SasCredentials
from tests.upstream.amqp_peer import PeerState
from tests.upstream.fakes import FakeHub

KEY = base64.b64encode(b"k" * 32).decode()
HUB = "myhub.azure-devices.net"
EDGE = Identity("edge1", "$edgeHub")
SENSOR = Identity("sensor1")
FILTER = Identity("edge1", "filter")
EDGE_AUDIENCE = f"{HUB}/devices/edge1/modules/$edgeHub"

MakeLink = Callable[..., Awaitable[AmqpUpstream]]


def queued(*items: tuple[Identity, bytes], start: int = 0) -> list[QueuedMessage]:
    out = []
    for offset, (sender, body) in enumerate(items):
        system = {SystemProperty.CONNECTION_DEVICE_ID: sender.device_id}
        if sender.module_id:
            system[SystemProperty.CONNECTION_MODULE_ID] = sender.module_id
        system[SystemProperty.MESSAGE_ID] = f"m{offset}"
        out.append(QueuedMessage(start + offset, QueueKey("$upstream"), 0, Message(body, {"k": "v"}, system)))
    return out


def own_links_only(address: str, audiences: set[str]) -> str | None:
    """IoT Hub's rule: a link only under the identity of a token put on the connection."""
    if any(address.startswith(audience[len(HUB):] + "/") for audience in audiences):
        return None
    return "amqp:unauthorized-access"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def parent() -> PeerState:
    return PeerState()


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def make_link(clock: FakeClock, parent: PeerState, hub: FakeHub) -> AsyncIterator[MakeLink]:
    links: list[AmqpUpstream] = []

    async def make(*, on_behalf: bool = True, token_ttl: float = 3600,
                   keys: dict[Identity, str] | None = None, fallback: bool = False,
                   **options: Any) -> AmqpUpstream:
        config = UpstreamConfig(SasCredentials(HUB, EDGE, KEY, token_ttl=token_ttl), "parent.local", 5671,
                                **options)

        def credentials(identity: Identity) -> Credentials | None:
            key = (keys or {}).get(identity)
            return SasCredentials(HUB, identity, key, token_ttl=token_ttl) if key else None

        websocket = dataclasses.replace(config, transport=UpstreamTransport.WEBSOCKETS, port=443)
        link = AmqpUpstream(
            config, clock, on_behalf=on_behalf, sender_credentials=credentials,
            websocket_fallback=websocket if fallback else None, opener=parent.opener,
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


def test_amqp_link_is_an_upstream_link_for_the_hub(clock: FakeClock) -> None:
    config = UpstreamConfig(SasCredentials(HUB, EDGE, KEY), "parent.local", 5671)
    link: UpstreamLink = AmqpUpstream(config, clock, on_behalf=True)
    assert link.endpoint.name == "$upstream"


async def test_connects_with_the_hubs_own_cbs_token_and_becomes_reachable(
        make_link: MakeLink, parent: PeerState) -> None:
    link = await make_link()
    assert link.connected
    assert [audience for audience, _ in parent.puts] == [EDGE_AUDIENCE]
    assert parent.puts[0][1].startswith("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fedge1")
    assert parent.last.connection.remote_hostname == HUB
    assert parent.last.connection.remote_container == "edge1/$edgeHub"


async def test_on_behalf_each_sender_gets_its_own_link_under_the_hubs_token(
        make_link: MakeLink, parent: PeerState) -> None:
    link = await make_link(on_behalf=True)
    result = await link.endpoint.send(queued((SENSOR, b"a"), (FILTER, b"b"), (SENSOR, b"c")))
    assert result.delivered == 3
    assert not result.rejected
    assert [(address, body_bytes(m)) for address, m in parent.received] == [
        ("/devices/sensor1/messages/events", b"a"),
        ("/devices/sensor1/messages/events", b"c"),
        ("/devices/edge1/modules/filter/messages/events", b"b"),
    ]
    assert [audience for audience, _ in parent.puts] == [EDGE_AUDIENCE]  # one token for everyone
    first = from_amqp(parent.received[0][1])
    assert first.properties == {"k": "v"}
    assert first.system_properties[SystemProperty.MESSAGE_ID] == "m0"


async def test_per_identity_each_sender_is_authorized_by_its_own_token_before_its_link(
        make_link: MakeLink, parent: PeerState) -> None:
    parent.authorize = own_links_only
    link = await make_link(on_behalf=False, keys={SENSOR: KEY})
    result = await link.endpoint.send(queued((SENSOR, b"a")))
    assert result.delivered == 1
    assert [audience for audience, _ in parent.puts] == [EDGE_AUDIENCE, f"{HUB}/devices/sensor1"]


async def test_a_sender_without_credentials_waits_and_the_leading_run_is_reported(
        make_link: MakeLink, parent: PeerState) -> None:
    link = await make_link(on_behalf=False, keys={SENSOR: KEY})
    batch = queued((Identity("stranger"), b"x"), (SENSOR, b"a"))
    with pytest.raises(EndpointUnavailable):
        await link.endpoint.send(batch[:1])
    result = await link.endpoint.send(batch)
    assert result.delivered == 0
    assert not result.rejected
    assert parent.bodies == [b"a"]
    again = await link.endpoint.send(batch[1:])
    assert again.delivered == 1
    assert parent.bodies == [b"a"]


async def test_rejected_message_is_reported_for_dropping_and_the_rest_is_retried(
        make_link: MakeLink, parent: PeerState) -> None:
    parent.outcome = lambda m: Delivery.REJECTED if body_bytes(m) == b"bad" else Delivery.ACCEPTED
    link = await make_link()
    result = await link.endpoint.send(queued((SENSOR, b"a"), (SENSOR, b"bad"), (SENSOR, b"c")))
    assert result.delivered == 1
    assert result.rejected
    assert link.upstream_endpoint.outcomes[Outcome.REJECTED] == 1


@pytest.mark.parametrize("outcome", [Delivery.RELEASED, Delivery.MODIFIED])
async def test_released_or_modified_messages_are_not_delivered_and_go_again(
        make_link: MakeLink, parent: PeerState, outcome: int) -> None:
    parent.outcome = lambda m: outcome if body_bytes(m) == b"busy" else Delivery.ACCEPTED
    link = await make_link()
    batch = queued((SENSOR, b"a"), (SENSOR, b"busy"), (SENSOR, b"c"))
    result = await link.endpoint.send(batch)
    assert result.delivered == 1
    assert not result.rejected
    parent.outcome = lambda m: Delivery.ACCEPTED
    assert (await link.endpoint.send(batch[1:])).delivered == 2
    assert parent.bodies == [b"a", b"busy", b"c", b"busy", b"c"]


async def test_a_message_over_the_size_limit_is_rejected_without_sending(
        make_link: MakeLink, parent: PeerState) -> None:
    link = await make_link(max_message_bytes=4)
    result = await link.endpoint.send(queued((SENSOR, b"ok"), (SENSOR, b"too large")))
    assert result.delivered == 1
    assert result.rejected
    assert parent.bodies == [b"ok"]


async def test_unsettled_transfers_count_as_not_delivered_when_the_connection_drops(
        make_link: MakeLink, parent: PeerState, clock: FakeClock) -> None:
    parent.outcome = lambda m: None  # held: no disposition
    link = await make_link()
    sending = asyncio.ensure_future(link.endpoint.send(queued((SENSOR, b"a"), (SENSOR, b"b"))))
    await settle()
    assert parent.bodies == [b"a", b"b"]
    parent.last.drop()
    with pytest.raises(EndpointUnavailable):
        await sending
    await clock.advance(0.2)  # reconnects (probe backoff)
    assert len(parent.connections) == 2
    assert link.connected


async def test_no_disposition_within_the_ack_timeout_drops_the_connection(
        make_link: MakeLink, parent: PeerState, clock: FakeClock) -> None:
    parent.outcome = lambda m: None
    link = await make_link(ack_timeout=5.0)
    sending = asyncio.ensure_future(link.endpoint.send(queued((SENSOR, b"a"))))
    await settle()
    await clock.advance(5.0)
    with pytest.raises(EndpointUnavailable):
        await sending
    await settle()
    assert parent.last.transport.closed


async def test_refused_own_token_is_retried_with_backoff_and_never_reachable(
        make_link: MakeLink, parent: PeerState, clock: FakeClock) -> None:
    parent.tokens = lambda audience, token: 401
    link = await make_link()
    assert not link.connected
    await clock.advance(1.0)
    assert len(parent.connections) == 2
    parent.tokens = lambda audience, token: 200
    await clock.advance(2.0)
    assert link.connected


async def test_tokens_are_put_again_at_80_percent_of_their_life_on_the_same_connection(
        make_link: MakeLink, parent: PeerState, clock: FakeClock) -> None:
    link = await make_link(on_behalf=False, token_ttl=100, keys={SENSOR: KEY})
    await link.endpoint.send(queued((SENSOR, b"a")))
    await clock.advance(80.5)
    assert [a for a, _ in parent.puts].count(EDGE_AUDIENCE) == 2
    assert [a for a, _ in parent.puts].count(f"{HUB}/devices/sensor1") == 2
    assert len(parent.connections) == 1
    assert link.connected
    assert parent.puts[0][1] != parent.puts[-1][1]


async def test_a_link_the_parent_detaches_is_attached_again_on_the_next_send(
        make_link: MakeLink, parent: PeerState) -> None:
    link = await make_link()
    await link.endpoint.send(queued((SENSOR, b"a")))
    parent.last.detach("/devices/sensor1/messages/events", "amqp:unauthorized-access")
    await settle()
    assert (await link.endpoint.send(queued((SENSOR, b"b"), start=1))).delivered == 1
    assert parent.bodies == [b"a", b"b"]


async def test_unreachable_tls_port_falls_back_to_amqp_over_websocket(
        make_link: MakeLink, parent: PeerState) -> None:
    opened = parent.opener

    async def tls_refused(config: UpstreamConfig, protocol: Any, subprotocol: str) -> Any:
        if config.transport is UpstreamTransport.TCP:
            parent.subprotocols.append("tcp refused")
            raise EndpointUnavailable("cannot connect to parent.local:5671: refused")
        return await opened(config, protocol, subprotocol)

    parent.opener = tls_refused  # type: ignore[method-assign]
    link = await make_link(fallback=True)
    assert parent.subprotocols == ["tcp refused", "websockets:AMQPWSB10"]
    assert link.connected
    assert link.url == "wss://parent.local:443/$iothub/websocket"


async def test_without_fallback_an_unreachable_tls_port_stays_offline(
        make_link: MakeLink, parent: PeerState) -> None:
    parent.reachable = False
    link = await make_link(fallback=False)
    assert not link.connected
    assert parent.subprotocols == ["tcp:AMQPWSB10"]


async def test_cloud_to_device_message_is_accepted_only_after_the_durable_write(
        make_link: MakeLink, parent: PeerState, hub: FakeHub) -> None:
    link = await make_link()
    link.client_connected(SENSOR)
    await settle()
    hub.gate.clear()
    delivery = parent.last.send_down("sensor1", AmqpMessage(body=b"hi", id="c1", properties={"p": "1"}))
    await settle()
    assert hub.stored == []
    assert not delivery.remote_state
    hub.gate.set()
    await settle()
    assert [(endpoint, [m.body for m in messages]) for endpoint, messages in hub.stored] == [
        ("/devices/sensor1/messages/devicebound", [b"hi"])]
    stored = hub.stored[0][1][0]
    assert stored.properties == {"p": "1"}
    assert stored.system_properties[SystemProperty.MESSAGE_ID] == "c1"
    assert delivery.remote_state == Delivery.ACCEPTED


async def test_cloud_to_device_message_stays_unsettled_while_the_store_is_full(
        make_link: MakeLink, parent: PeerState, hub: FakeHub, clock: FakeClock) -> None:
    link = await make_link()
    link.client_connected(SENSOR)
    await settle()
    hub.fail_with = [StoreFullError("full"), StoreFullError("full")]
    delivery = parent.last.send_down("sensor1", AmqpMessage(body=b"hi"))
    await settle()
    assert not delivery.remote_state
    assert hub.attempts == 1
    await clock.advance(10)
    assert hub.attempts == 3
    assert delivery.remote_state == Delivery.ACCEPTED


async def test_devicebound_links_are_attached_again_after_a_reconnect(
        make_link: MakeLink, parent: PeerState, clock: FakeClock) -> None:
    link = await make_link()
    link.client_connected(SENSOR)
    await settle()
    parent.last.drop()
    await clock.advance(0.2)
    assert len(parent.connections) == 2
    assert link.connected
    await settle()
    assert "/devices/sensor1/messages/devicebound" in parent.last.links


async def test_a_cloud_to_device_message_without_a_binary_or_text_body_is_rejected_and_not_stored(
        make_link: MakeLink, parent: PeerState, hub: FakeHub) -> None:
    link = await make_link()
    link.client_connected(SENSOR)
    await settle()
    delivery = parent.last.send_down("sensor1", AmqpMessage(body=5))  # an amqp-value int
    await settle()
    assert delivery.remote_state == Delivery.REJECTED
    assert hub.stored == []
    assert link.connected


async def test_the_parent_closing_the_connection_with_an_error_is_an_outage_and_reconnects(
        make_link: MakeLink, parent: PeerState, clock: FakeClock) -> None:
    link = await make_link()
    parent.last.close("amqp:internal-error")
    await settle()
    with pytest.raises(EndpointUnavailable):
        await link.endpoint.send(queued((SENSOR, b"during")))
    await clock.advance(0.2)
    assert link.connected
    assert link.connects == 2
    assert (await link.endpoint.send(queued((SENSOR, b"after")))).delivered == 1


async def test_a_sender_whose_credentials_appear_later_gets_its_link_then(
        make_link: MakeLink, parent: PeerState) -> None:
    keys: dict[Identity, str] = {}
    link = await make_link(on_behalf=False, keys=keys)
    with pytest.raises(EndpointUnavailable):
        await link.endpoint.send(queued((SENSOR, b"a")))
    keys[SENSOR] = KEY  # e.g. the config file's identities changed, or the device presented a token
    assert (await link.endpoint.send(queued((SENSOR, b"a")))).delivered == 1
    assert parent.bodies == [b"a"]


async def test_concurrent_links_of_one_identity_share_one_put_token(
        make_link: MakeLink, parent: PeerState) -> None:
    link = await make_link(on_behalf=False, keys={SENSOR: KEY})
    link.client_connected(SENSOR)  # its devicebound receiver and its sender link at once
    results = await asyncio.gather(link.endpoint.send(queued((SENSOR, b"a"))))
    await settle()
    assert results[0].delivered == 1
    assert [audience for audience, _ in parent.puts].count(f"{HUB}/devices/sensor1") == 1
    assert "/devices/sensor1/messages/devicebound" in parent.last.links


async def test_after_falling_back_reconnects_try_websocket_first_and_tls_if_it_fails(
        make_link: MakeLink, parent: PeerState, clock: FakeClock) -> None:
    opened = parent.opener
    refused = {UpstreamTransport.TCP}
    attempts: list[str] = []

    async def some_refused(config: UpstreamConfig, protocol: Any, subprotocol: str) -> Any:
        attempts.append(config.transport.value)
        if config.transport in refused:
            raise EndpointUnavailable(f"cannot connect to {config.url}: refused")
        return await opened(config, protocol, subprotocol)

    parent.opener = some_refused  # type: ignore[method-assign]
    link = await make_link(fallback=True)
    parent.last.drop()
    await clock.advance(0.2)
    assert attempts == ["tcp", "websockets", "websockets"]  # no wait on 5671 again
    refused = {UpstreamTransport.WEBSOCKETS}
    parent.last.drop()
    await clock.advance(0.2)
    assert attempts[3:] == ["websockets", "tcp"]
    assert link.connected
    assert link.url == "amqps://parent.local:5671"

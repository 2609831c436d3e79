"""Tests of the twin and method topics in edgehub.heads.mqtt.session: requests become events,
feeds are granted per identity, answers go out at QoS 0 only on a subscribed feed."""

from __future__ import annotations

import pytest

from edgehub.heads.mqtt.events import FeedChanged, ServiceRequested
from edgehub.heads.mqtt.sessions import SessionTable
from edgehub.iothub.twin_topics import Feed, Operation, ServiceRequest
from edgehub.message import Identity
from edgehub.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    PubAck,
    Publish,
    PubRec,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from tests.heads.mqtt.test_session import MODULE, Peer

CHILD_HUB = Identity("child", "$edgeHub")
BELOW_CHILD = Identity("child", "filter")

both_versions = pytest.mark.parametrize("version", [MQTT_311, MQTT_5])


@both_versions
def test_twin_get_is_acked_and_becomes_a_request_event(version: int) -> None:
    peer = Peer(version)
    peer.connect()
    events = peer.send(Publish("$iothub/twin/GET/?$rid=7", b"", 1, packet_id=3))
    assert events == [ServiceRequested(ServiceRequest(Operation.GET_TWIN, None, "7"), MODULE, b"")]
    assert peer.received() == [PubAck(3)]
    assert not peer.closed


def test_reported_patch_carries_its_payload() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    events = peer.send(Publish("$iothub/twin/PATCH/properties/reported/?$rid=r1", b'{"a":1}', 0))
    assert events == [
        ServiceRequested(ServiceRequest(Operation.PATCH_REPORTED, None, "r1"), MODULE, b'{"a":1}')
    ]


def test_method_response_carries_its_status() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    events = peer.send(Publish("$iothub/methods/res/201/?$rid=9", b'"done"', 1, packet_id=1))
    assert events == [
        ServiceRequested(ServiceRequest(Operation.METHOD_RESPONSE, None, "9", 201), MODULE, b'"done"')
    ]


def test_qos2_twin_request_resent_before_pubrel_acts_once() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    first = peer.send(Publish("$iothub/twin/GET/?$rid=1", b"", 2, packet_id=5))
    again = peer.send(Publish("$iothub/twin/GET/?$rid=1", b"", 2, packet_id=5, dup=True))
    assert len(first) == 1
    assert again == []
    assert peer.received() == [PubRec(5), PubRec(5)]


def test_module_may_not_use_another_identitys_twin_topics() -> None:
    peer = Peer(MQTT_311)
    peer.connect()
    peer.send(Publish("$iothub/edge/other/twin/get/?$rid=1", b"", 1, packet_id=1))
    assert peer.closed  # MQTT 3.1.1: a refused publish closes the connection


@both_versions
def test_subscribing_to_twin_feeds_is_granted_and_reported(version: int) -> None:
    peer = Peer(version)
    peer.connect()
    events = peer.send(
        Subscribe(
            1,
            (
                Subscription("$iothub/twin/res/#", 1),
                Subscription("$iothub/twin/PATCH/properties/desired/#", 1),
                Subscription("$iothub/methods/POST/#", 0),
            ),
        )
    )
    assert peer.received() == [SubAck(1, (1, 1, 0))]
    assert events == [
        FeedChanged(Feed.TWIN_RESPONSES, MODULE, True),
        FeedChanged(Feed.DESIRED_PATCHES, MODULE, True),
        FeedChanged(Feed.METHOD_REQUESTS, MODULE, True),
    ]


def test_publish_feed_sends_qos0_only_when_subscribed() -> None:
    peer = Peer(MQTT_311)
    peer.connect()
    assert not peer.session.publish_feed(Feed.TWIN_RESPONSES, MODULE, "$iothub/twin/res/200/?$rid=1", b"{}")
    assert peer.received() == []
    peer.send(Subscribe(1, (Subscription("$iothub/twin/res/#", 1),)))
    peer.received()
    assert peer.session.publish_feed(Feed.TWIN_RESPONSES, MODULE, "$iothub/twin/res/200/?$rid=1", b"{}")
    assert peer.received() == [Publish("$iothub/twin/res/200/?$rid=1", b"{}", 0)]


def test_unsubscribing_a_feed_reports_it_inactive() -> None:
    peer = Peer(MQTT_5)
    peer.connect()
    peer.send(Subscribe(1, (Subscription("$iothub/methods/POST/#", 1),)))
    events = peer.send(Unsubscribe(2, ("$iothub/methods/POST/#",)))
    assert events == [FeedChanged(Feed.METHOD_REQUESTS, MODULE, False)]
    assert peer.received()[-1] == UnsubAck(2, (ReasonCode.SUCCESS,))


def test_child_hub_uses_the_indirect_dialect_for_identities_below_it() -> None:
    peer = Peer(MQTT_311)
    peer.connect(CHILD_HUB.id)
    events = peer.send(
        Subscribe(
            1,
            (
                Subscription("$iothub/child/filter/twin/res/#", 1),
                Subscription("$iothub/child/filter/methods/post/#", 1),
            ),
        ),
        Publish("$iothub/child/filter/twin/get/?$rid=4", b"", 1, packet_id=2),
    )
    assert events == [
        FeedChanged(Feed.TWIN_RESPONSES, BELOW_CHILD, True),
        FeedChanged(Feed.METHOD_REQUESTS, BELOW_CHILD, True),
        ServiceRequested(ServiceRequest(Operation.GET_TWIN, BELOW_CHILD, "4"), BELOW_CHILD, b""),
    ]
    assert peer.received() == [SubAck(1, (1, 1)), PubAck(2)]


def test_persistent_session_restores_its_feeds() -> None:
    table = SessionTable()
    first = Peer(MQTT_311, table=table)
    first.connect(clean=False)
    first.send(Subscribe(1, (Subscription("$iothub/twin/PATCH/properties/desired/#", 1),)))
    first.session.connection_lost(1.0)
    second = Peer(MQTT_311, table=table)
    second.connect(clean=False)
    assert FeedChanged(Feed.DESIRED_PATCHES, MODULE, True) in second.events

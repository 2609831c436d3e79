"""paho-mqtt 2.x against a real hub over TLS with SAS tokens, as MQTT 3.1.1 and as MQTT 5.

Every test runs for both protocol versions, each with identities of its own, so one hub
serves the whole module without one test's messages reaching another.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from edgehub.message import Identity
from tests.conformance.deployment import (
    Deployment,
    DeploymentSpec,
    events_topic,
    inputs_topic,
    module,
    property_bag,
    random_key,
    run_deployment,
)
from tests.conformance.paho_peer import (
    PahoPeer,
    publish_properties,
    received_property,
    wait_for_messages,
    wait_until,
)

pytestmark = pytest.mark.conformance

VERSIONS = {"311": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}
SESSIONS = ("clean", "kept")
"""How an offline module comes back: a clean session that subscribes again, or its kept session."""
NOT_AUTHORIZED = 0x87
BAD_USER_NAME_OR_PASSWORD = 0x86


def sensor(v: str) -> Identity:
    return Identity(f"sensor-{v}")


def rogue(v: str) -> Identity:
    return Identity(f"rogue-{v}")


def victim(v: str) -> Identity:
    """A device that never connects: the rogue tries to publish as it."""
    return Identity(f"victim-{v}")


def routes(v: str) -> dict[str, str]:
    return {
        f"telemetry{v}": f"FROM /messages/* WHERE $connectionDeviceId = 'sensor-{v}' "
                         f"INTO BrokeredEndpoint(\"/modules/monitor-{v}/inputs/telemetry\")",
        f"guard{v}": f"FROM /messages/* WHERE $connectionDeviceId = 'rogue-{v}' "
                     f"OR $connectionDeviceId = 'victim-{v}' "
                     f"INTO BrokeredEndpoint(\"/modules/guard-{v}/inputs/seen\")",
        f"pipeline{v}": f"FROM /messages/modules/filter-{v}/outputs/out "
                        f"INTO BrokeredEndpoint(\"/modules/sink-{v}/inputs/in1\")",
        **{
            f"queued{v}{session}": f"FROM /messages/modules/filter-{v}/outputs/{session} "
                                   f"INTO BrokeredEndpoint(\"/modules/offline-{session}-{v}/inputs/queued\")"
            for session in SESSIONS
        },
    }


def identities(v: str) -> list[Identity]:
    modules = ["monitor", "guard", "filter", "sink", *(f"offline-{session}" for session in SESSIONS)]
    return [sensor(v), rogue(v), victim(v), *(module(f"{m}-{v}") for m in modules)]


SPEC = DeploymentSpec(
    routes={name: route for v in VERSIONS for name, route in routes(v).items()},
    identities=[identity for v in VERSIONS for identity in identities(v)],
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("paho"), SPEC) as running:
        yield running


@pytest.fixture(params=sorted(VERSIONS), ids=lambda v: f"mqtt{v}")
def v(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


def peer(deployment: Deployment, identity: Identity, v: str, password: str | None = None, *,
         persistent: bool = False) -> PahoPeer:
    return PahoPeer(deployment, identity, VERSIONS[v], password, persistent)


def test_device_telemetry_with_a_property_bag_is_acked_and_routed_with_its_properties(
    deployment: Deployment, v: str,
) -> None:
    body = json.dumps({"temperature": 21.5}).encode()
    bag = f"$.ct=application%2Fjson&$.ce=utf-8&$.mid=t-{v}&unit={quote('°C', safe='')}&zone=a%20b"
    with peer(deployment, module(f"monitor-{v}"), v).connected() as monitor, \
            peer(deployment, sensor(v), v).connected() as device:
        monitor.subscribed(inputs_topic(monitor.identity) + "#")

        ack = device.publish_acked(events_topic(device.identity) + bag, body)

        assert ack.value == 0
        [received] = wait_for_messages(monitor, 1, others=[device])
    prefix = inputs_topic(monitor.identity) + "telemetry/"
    assert property_bag(received.topic, prefix) == {
        "$.mid": f"t-{v}", "$.ct": "application/json", "$.ce": "utf-8", "$.cdid": sensor(v).device_id,
        "unit": "°C", "zone": "a b",
    }
    assert received.payload == body
    assert received.qos == 1


def test_module_output_reaches_the_routed_module_input_in_order_with_properties_intact(
    deployment: Deployment, v: str,
) -> None:
    with peer(deployment, module(f"sink-{v}"), v).connected() as sink, \
            peer(deployment, module(f"filter-{v}"), v).connected() as source:
        sink.subscribed(inputs_topic(sink.identity) + "#")
        bags = [
            f"$.on=out&$.mid=m-{n}&$.ct=application%2Fjson&$.ce=utf-8&seq={n}&label=x%26y%3Dz%2F%C3%A9"
            for n in range(3)
        ]
        # All three in flight at once, as a module sends a burst.
        mids = [source.publish(events_topic(source.identity) + bag, b'{"n": %d}' % n)
                for n, bag in enumerate(bags)]
        received = wait_for_messages(sink, 3, others=[source])
        wait_until([source], lambda: all(mid in source.pubacks for mid in mids), "PUBACKs")

        assert [source.pubacks[mid].value for mid in mids] == [0, 0, 0]
    prefix = inputs_topic(sink.identity) + "in1/"
    assert [property_bag(m.topic, prefix) for m in received] == [
        {"$.mid": f"m-{n}", "$.ct": "application/json", "$.ce": "utf-8", "$.cdid": "edge",
         "$.cmid": f"filter-{v}", "seq": str(n), "label": "x&y=z/é"}
        for n in range(3)
    ]
    assert [m.payload for m in received] == [b'{"n": %d}' % n for n in range(3)]
    if v == "5":  # the MQTT 5 Content Type property carries $.ct too
        assert [received_property(m, "ContentType") for m in received] == ["application/json"] * 3


def test_mqtt5_user_properties_content_type_and_correlation_data_become_message_properties(
    deployment: Deployment,
) -> None:
    v = "5"
    properties = publish_properties("text/plain", b"req-42", [("colour", "blue"), ("shape", "round box")])
    with peer(deployment, module(f"sink-{v}"), v).connected() as sink, \
            peer(deployment, module(f"filter-{v}"), v).connected() as source:
        sink.subscribed(inputs_topic(sink.identity) + "#")

        topic = events_topic(source.identity) + "$.on=out&$.mid=v5-props"
        ack = source.publish_acked(topic, b"hello", properties)

        assert ack.value == 0
        [received] = wait_for_messages(sink, 1, others=[source])
    assert property_bag(received.topic, inputs_topic(sink.identity) + "in1/") == {
        "$.mid": "v5-props", "$.cid": "req-42", "$.ct": "text/plain", "$.cdid": "edge", "$.cmid": "filter-5",
        "colour": "blue", "shape": "round box",
    }
    assert received_property(received, "ContentType") == "text/plain"
    assert received_property(received, "CorrelationData") == b"req-42"


def test_a_device_publishing_as_another_device_is_refused_and_nothing_is_stored(
    deployment: Deployment, v: str,
) -> None:
    spoofed = events_topic(victim(v)) + "$.mid=spoofed"
    with peer(deployment, module(f"guard-{v}"), v).connected() as guard:
        guard.subscribed(inputs_topic(guard.identity) + "#")
        with peer(deployment, rogue(v), v).connected() as attacker:
            mid = attacker.publish(spoofed, b"forged")
            if v == "5":  # MQTT 5: PUBACK 0x87 Not authorized, the connection stays up
                wait_until([attacker], lambda: mid in attacker.pubacks, "PUBACK of the spoofed publish")
                assert attacker.pubacks[mid].value == NOT_AUTHORIZED
                assert not attacker.disconnected
            else:  # MQTT 3.1.1 has no negative PUBACK: the hub closes the connection
                wait_until([attacker], lambda: attacker.disconnected, "disconnect after the spoofed publish")
                assert mid not in attacker.pubacks
        # The guard input receives everything sent as rogue or victim, in ingest order: if the
        # forged message had been stored it would arrive before the genuine one.
        with peer(deployment, rogue(v), v).connected() as honest:
            ack = honest.publish_acked(events_topic(rogue(v)) + "$.mid=genuine", b"real")
            assert ack.value == 0
            [first] = wait_for_messages(guard, 1, others=[honest])
    bag = property_bag(first.topic, inputs_topic(guard.identity) + "seen/")
    assert (bag["$.mid"], bag["$.cdid"], first.payload) == ("genuine", rogue(v).device_id, b"real")


@pytest.mark.parametrize("credential", ["wrong-key", "expired", "other-identity", "not-a-token"])
def test_a_bad_sas_token_is_refused_at_connect(deployment: Deployment, v: str, credential: str) -> None:
    identity = sensor(v)
    password = {
        "wrong-key": deployment.password(identity, key=random_key()),
        "expired": deployment.password(identity, expiry=int(time.time()) - 60),
        "other-identity": deployment.password(rogue(v)),
        "not-a-token": "hunter2",
    }[credential]
    with peer(deployment, identity, v, password) as refused:
        reason = refused.connect()
        # 3.1.1 CONNACK 0x05 "not authorized" (paho reports it as 0x87); MQTT 5 CONNACK 0x86.
        assert reason.value == (BAD_USER_NAME_OR_PASSWORD if v == "5" else NOT_AUTHORIZED)
        wait_until([refused], lambda: refused.disconnected, "close after the refused CONNECT")


@pytest.mark.parametrize("session", SESSIONS)
def test_an_offline_module_gets_its_queued_inputs_in_order_when_it_reconnects(
    deployment: Deployment, v: str, session: str,
) -> None:
    late = module(f"offline-{session}-{v}")
    kept = session == "kept"
    with peer(deployment, late, v, persistent=kept).connected() as first_visit:
        first_visit.subscribed(inputs_topic(late) + "#")
    count = 5
    with peer(deployment, module(f"filter-{v}"), v).connected() as source:
        topics = [events_topic(source.identity) + f"$.on={session}&$.mid=q-{n}&seq={n}" for n in range(count)]
        acks = [source.publish_acked(topic, b"%d" % n) for n, topic in enumerate(topics)]
    assert [ack.value for ack in acks] == [0] * count

    with peer(deployment, late, v, persistent=kept).connected() as back:
        assert back.session_present is kept
        if not kept:  # a kept session still holds the subscription [MQTT-3.1.2-4]
            back.subscribed(inputs_topic(late) + "#")
        received = wait_for_messages(back, count)
    prefix = inputs_topic(late) + "queued/"
    assert [(property_bag(m.topic, prefix)["$.mid"], m.payload) for m in received] == [
        (f"q-{n}", b"%d" % n) for n in range(count)
    ]

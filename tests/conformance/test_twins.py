"""Module twins over MQTT with paho-mqtt 2.x against a real hub: IoT Hub's twin topics, desired
properties from the deployment manifest (and their patches when it changes), reported properties
kept across a restart, twin change notifications routed, and the error statuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from edgehub.message import Identity
from tests.conformance.deployment import Deployment, DeploymentSpec, inputs_topic, module, run_deployment
from tests.conformance.paho_peer import PahoPeer, wait_until
from tests.hubproc import free_port

pytestmark = pytest.mark.conformance

V311, V5 = MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5
CONFIGURED = module("configured")
REPORTER = module("reporter")
SINK = module("sink")
OTHER = module("other")
NOT_AUTHORIZED = 0x87

SPEC = DeploymentSpec(
    routes={
        "twinChanges": 'FROM /twinChangeNotifications INTO BrokeredEndpoint("/modules/sink/inputs/twin")'
    },
    identities=[CONFIGURED, REPORTER, SINK, OTHER],
    module_desired={"configured": {"rate": 5, "mode": {"fast": True, "level": 2}}},
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("twins"), SPEC) as running:
        yield running


def twin_client(deployment: Deployment, identity: Identity, version: MQTTProtocolVersion = V311) -> PahoPeer:
    peer = PahoPeer(deployment, identity, version).connected()
    peer.subscribed("$iothub/twin/res/#")
    return peer


def request(peer: PahoPeer, topic: str, payload: bytes, rid: str) -> tuple[int, dict[str, str], bytes]:
    """Publish a twin request and wait for its response: (status, query parameters, body)."""
    peer.publish(topic, payload)
    marker = f"$rid={rid}"

    def answered() -> bool:
        return any(marker in m.topic for m in peer.received)

    wait_until([peer], answered, f"twin response {rid}")
    message = next(m for m in peer.received if marker in m.topic)
    status = int(message.topic.split("/")[3])
    query = dict(pair.split("=", 1) for pair in message.topic.split("?", 1)[1].split("&"))
    return status, query, bytes(message.payload)


def get_twin(peer: PahoPeer, rid: str) -> dict[str, Any]:
    status, _, body = request(peer, f"$iothub/twin/GET/?$rid={rid}", b"", rid)
    assert status == 200, body
    twin: dict[str, Any] = json.loads(body)
    return twin



def test_get_twin_returns_the_manifest_desired_properties(deployment: Deployment) -> None:
    with twin_client(deployment, CONFIGURED) as peer:
        twin = get_twin(peer, "g1")
    assert twin["desired"]["rate"] == 5
    assert twin["desired"]["mode"] == {"fast": True, "level": 2}
    assert isinstance(twin["desired"]["$version"], int)
    assert twin["reported"]["$version"] >= 1


@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_reported_patch_is_answered_204_with_its_version_and_read_back(
    deployment: Deployment,
    version: MQTTProtocolVersion,
) -> None:
    with twin_client(deployment, REPORTER, version) as peer:
        before = get_twin(peer, f"b{version}")["reported"]["$version"]
        status, query, _ = request(
            peer,
            f"$iothub/twin/PATCH/properties/reported/?$rid=p{version}",
            json.dumps({"temperature": 21.5, "fw": {"v": str(version)}}).encode(),
            f"p{version}",
        )
        assert status == 204
        assert int(query["$version"]) == before + 1
        reported = get_twin(peer, f"a{version}")["reported"]
    assert reported["temperature"] == 21.5
    assert reported["fw"] == {"v": str(version)}
    assert reported["$version"] == before + 1


def test_malformed_and_oversize_patches_are_refused_and_change_nothing(deployment: Deployment) -> None:
    with twin_client(deployment, OTHER) as peer:
        before = get_twin(peer, "o1")["reported"]
        status, _, body = request(
            peer, "$iothub/twin/PATCH/properties/reported/?$rid=bad1", b"{not json", "bad1"
        )
        assert status == 400, body
        huge = json.dumps({"blob": "x" * 40_000}).encode()
        status, _, body = request(peer, "$iothub/twin/PATCH/properties/reported/?$rid=bad2", huge, "bad2")
        assert 400 <= status < 500, body
        assert get_twin(peer, "o2")["reported"] == before


def test_another_modules_twin_topics_are_refused(deployment: Deployment) -> None:
    with PahoPeer(deployment, OTHER, V5).connected() as peer:
        refused = peer.subscribe("$iothub/edge/configured/twin/res/#")
        assert [r.value for r in refused] == [NOT_AUTHORIZED]
        assert peer.publish_acked("$iothub/edge/configured/twin/get/?$rid=1", b"").value == NOT_AUTHORIZED


def test_reported_change_becomes_a_routed_twin_change_notification(deployment: Deployment) -> None:
    with PahoPeer(deployment, SINK, V311).connected() as sink, twin_client(deployment, REPORTER) as reporter:
        sink.subscribed(inputs_topic(SINK) + "#")
        status, query, _ = request(
            reporter, "$iothub/twin/PATCH/properties/reported/?$rid=n1", b'{"door":"open"}', "n1"
        )
        assert status == 204
        # Earlier tests' reported changes are queued for the sink too: wait for this one.
        wait_until(
            [sink, reporter],
            lambda: any(b'"door"' in m.payload for m in sink.received),
            "the twin change notification",
        )
        notification = next(m for m in sink.received if b'"door"' in m.payload)
    body = json.loads(notification.payload)
    assert body["properties"]["reported"] == {"door": "open"}
    assert body["version"] == int(query["$version"])
    assert notification.topic.startswith(inputs_topic(SINK) + "twin/")


def test_changed_manifest_pushes_only_the_difference_to_a_connected_module(deployment: Deployment) -> None:
    with twin_client(deployment, CONFIGURED) as peer:
        peer.subscribed("$iothub/twin/PATCH/properties/desired/#")
        version = get_twin(peer, "d1")["desired"]["$version"]
        deployment.rewrite_module_desired("configured", {"rate": 5, "mode": {"fast": False}, "added": "yes"})

        def patched() -> bool:
            return any("PATCH/properties/desired" in m.topic for m in peer.received)

        wait_until([peer], patched, "desired patch", timeout=15)
        message = next(m for m in peer.received if "PATCH/properties/desired" in m.topic)
        patch = json.loads(message.payload)
        assert patch == {"mode": {"fast": False, "level": None}, "added": "yes", "$version": version + 1}
        assert message.topic.endswith(f"?$version={version + 1}")
        twin = get_twin(peer, "d2")
    assert twin["desired"] == {"rate": 5, "mode": {"fast": False}, "added": "yes", "$version": version + 1}


def test_reported_properties_survive_a_hub_restart(tmp_path: Path) -> None:
    spec = DeploymentSpec(routes={}, identities=[REPORTER], tls_port=free_port())  # the same port again
    with run_deployment(tmp_path, spec) as first, twin_client(first, REPORTER) as peer:
        status, _, _ = request(peer, "$iothub/twin/PATCH/properties/reported/?$rid=k1", b'{"kept":1}', "k1")
        assert status == 204
    first.hub.start()  # same folder, same config and keys
    try:
        with twin_client(first, REPORTER) as again:
            reported = get_twin(again, "k2")["reported"]
    finally:
        assert first.hub.stop() == 0
    assert reported["kept"] == 1

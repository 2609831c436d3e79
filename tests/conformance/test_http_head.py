"""The HTTP head of a real hub with real clients: paho-mqtt 2.x over WebSocket (TLS, 3.1.1 and 5),
REST telemetry through every status with urllib, edgeHub's direct-method API, the probes on both
ports, /stats and ``edgehub stats``, and /metrics read with prometheus-client's parser while
messages flow.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from prometheus_client.parser import text_string_to_metric_families

from edgehub.message import Identity
from tests.conformance.deployment import (
    EDGE_DEVICE,
    HOST,
    Deployment,
    DeploymentSpec,
    events_topic,
    inputs_topic,
    module,
    property_bag,
    run_deployment,
)
from tests.conformance.paho_peer import PahoPeer, wait_for_messages, wait_until
from tests.hubproc import free_port

pytestmark = pytest.mark.conformance

VERSIONS = {"311": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}
MAX_MESSAGE = 2048
BOUND: Final = 10.0

REST_DEVICE = Identity("rest-device")
OTHER_DEVICE = Identity("other-device")
REST_MODULE = module("restmod")
REST_SINK = module("restsink")
METER = module("meter")
METER_SINK = module("metersink")
CALLER = module("caller")
CALLEE = module("callee")


def ws_sender(v: str) -> Identity:
    return module(f"wsfilter-{v}")


def ws_sink(v: str) -> Identity:
    return module(f"wssink-{v}")


def _routes() -> dict[str, str]:
    routes = {
        f"ws{v}": f"FROM /messages/modules/wsfilter-{v}/outputs/out "
                  f"INTO BrokeredEndpoint(\"/modules/wssink-{v}/inputs/in1\")"
        for v in VERSIONS
    }
    routes["rest"] = ("FROM /messages/* WHERE $connectionDeviceId = 'rest-device' OR $connectionModuleId = "
                      "'restmod' INTO BrokeredEndpoint(\"/modules/restsink/inputs/rest\")")
    routes["meter"] = ("FROM /messages/modules/meter/outputs/m "
                       "INTO BrokeredEndpoint(\"/modules/metersink/inputs/in\")")
    return routes


HTTP_PORT = free_port()
METRICS_PORT = free_port()
SPEC = DeploymentSpec(
    routes=_routes(),
    identities=[REST_DEVICE, OTHER_DEVICE, REST_MODULE, REST_SINK, METER, METER_SINK, CALLER, CALLEE,
                *(f(v) for v in VERSIONS for f in (ws_sender, ws_sink))],
    https_port=HTTP_PORT,
    env={"Metrics__Listener__Port": str(METRICS_PORT), "maxMessageSizeBytes": str(MAX_MESSAGE)},
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("http"), SPEC) as running:
        yield running


def tls(deployment: Deployment) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(deployment.ca_file))


def request(
    deployment: Deployment | None, method: str, path: str, body: bytes | None = None,
    headers: Mapping[str, str] | None = None, *, port: int = HTTP_PORT,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP(S) request (HTTPS when ``deployment`` gives the CA); status, headers, body."""
    scheme = "https" if deployment is not None else "http"
    host = HOST if deployment is not None else "127.0.0.1"
    req = urllib.request.Request(f"{scheme}://{host}:{port}{path}", data=body, method=method,
                                 headers=dict(headers or {}))
    context = tls(deployment) if deployment is not None else None
    try:
        with urllib.request.urlopen(req, timeout=BOUND, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def events_path(identity: Identity) -> str:
    suffix = f"/modules/{identity.module_id}" if identity.module_id else ""
    return f"/devices/{identity.device_id}{suffix}/messages/events?api-version=2020-09-30"


def post_events(deployment: Deployment, identity: Identity, body: bytes, *, token: str | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    auth = {"Authorization": token if token is not None else deployment.password(identity)}
    status, _, data = request(deployment, "POST", events_path(identity), body, {**auth, **(headers or {})})
    return status, (json.loads(data) if data else None)


def ws_peer(deployment: Deployment, identity: Identity, version: MQTTProtocolVersion) -> PahoPeer:
    return PahoPeer(deployment, identity, version, websocket_port=HTTP_PORT)


# --- MQTT over WebSocket ------------------------------------------------------------------------


@pytest.mark.parametrize("v", VERSIONS)
def test_paho_over_websocket_tls_reaches_a_module_input_over_websocket(
    deployment: Deployment, v: str,
) -> None:
    version = VERSIONS[v]
    with ws_peer(deployment, ws_sink(v), version) as sink, \
            ws_peer(deployment, ws_sender(v), version) as sender:
        sink.connected().subscribed(f"{inputs_topic(ws_sink(v))}#")
        sender.connected()
        mids = [sender.publish(f"{events_topic(ws_sender(v))}$.on=out&n={n}", f"ws-{v}-{n}".encode())
                for n in range(5)]
        wait_until([sender, sink], lambda: all(m in sender.pubacks for m in mids), "PUBACKs over WebSocket")
        assert [sender.pubacks[m].value for m in mids] == [0] * 5
        messages = wait_for_messages(sink, 5, others=[sender])
    assert [m.payload for m in messages] == [f"ws-{v}-{n}".encode() for n in range(5)]
    prefix = f"{inputs_topic(ws_sink(v))}in1/"
    assert [property_bag(m.topic, prefix)["n"] for m in messages] == [str(n) for n in range(5)]


@pytest.mark.parametrize("v", VERSIONS)
def test_websocket_mqtt_refuses_a_bad_token_like_tcp(deployment: Deployment, v: str) -> None:
    bad = deployment.password(ws_sender(v), key="c2VjcmV0LWJ1dC13cm9uZy1rZXktMzItYnl0ZXMhIQ==")
    with PahoPeer(deployment, ws_sender(v), VERSIONS[v], password=bad, websocket_port=HTTP_PORT) as peer:
        reason = peer.connect()
    assert reason.is_failure


# --- REST telemetry -------------------------------------------------------------------------------


def test_rest_telemetry_is_acked_204_and_delivered_with_its_properties(deployment: Deployment) -> None:
    with PahoPeer(deployment, REST_SINK, MQTTProtocolVersion.MQTTv311) as sink:
        sink.connected().subscribed(f"{inputs_topic(REST_SINK)}#")
        headers = {"iothub-app-color": "blue", "iothub-app-seq": "1", "Content-Type": "application/json",
                   "Content-Encoding": "utf-8", "iothub-messageid": "rest-1",
                   "iothub-correlationid": "corr-1"}
        status, body = post_events(deployment, REST_DEVICE, b'{"t": 21.5}', headers=headers)
        assert (status, body) == (204, None)
        status, _ = post_events(deployment, REST_MODULE, b"from a module",
                                headers={"Content-Type": "text/plain"})
        assert status == 204
        first, second = wait_for_messages(sink, 2)
    prefix = f"{inputs_topic(REST_SINK)}rest/"
    assert first.payload == b'{"t": 21.5}'
    assert property_bag(first.topic, prefix) == {
        "color": "blue", "seq": "1", "$.ct": "application/json", "$.ce": "utf-8", "$.mid": "rest-1",
        "$.cid": "corr-1", "$.cdid": "rest-device",
    }
    assert second.payload == b"from a module"
    assert property_bag(second.topic, prefix) == {
        "$.ct": "text/plain", "$.cdid": EDGE_DEVICE, "$.cmid": "restmod",
    }


def test_rest_telemetry_refusals_are_json_errors_with_their_status(deployment: Deployment) -> None:
    expired = deployment.password(REST_DEVICE, expiry=int(time.time()) - 60)
    wrong_key = deployment.password(REST_DEVICE, key="c2VjcmV0LWJ1dC13cm9uZy1rZXktMzItYnl0ZXMhIQ==")
    cases = {
        400: post_events(deployment, REST_DEVICE, b"x", headers={"iothub-app-": "no name"}),
        401: post_events(deployment, REST_DEVICE, b"x", token=wrong_key),
        413: post_events(deployment, REST_DEVICE, b"x" * (MAX_MESSAGE + 1)),
        403: post_events(deployment, REST_DEVICE, b"x", token=deployment.password(OTHER_DEVICE)),
    }
    expired_status, expired_body = post_events(deployment, REST_DEVICE, b"x", token=expired)
    missing_status, _ = post_events(deployment, REST_DEVICE, b"x", token="")
    for status, (got, body) in cases.items():
        assert got == status, (status, body)
        assert body["status"] == status
        assert body["message"]
    assert expired_status == 401
    assert "expired" in expired_body["message"]
    assert missing_status == 401


def test_rest_telemetry_gets_507_when_the_store_is_full(tmp_path: Path) -> None:
    spec = DeploymentSpec(routes={"all": "FROM /messages/* INTO $upstream"}, identities=[REST_DEVICE],
                          https_port=0, store_limit_bytes=4096)
    with run_deployment(tmp_path, spec) as small:
        match = re.search(r"https://[^:]+:(\d+) ", small.hub.wait_for_line("http: https://"))
        assert match is not None
        port = int(match.group(1))
        statuses = []
        for _ in range(40):
            status, _, body = request(small, "POST", events_path(REST_DEVICE), b"m" * 700,
                                      {"Authorization": small.password(REST_DEVICE)}, port=port)
            statuses.append(status)
            if status == 507:
                break
    assert statuses[0] == 204
    assert statuses[-1] == 507, statuses
    assert json.loads(body)["status"] == 507
    assert set(statuses[:-1]) == {204}


# --- direct methods -------------------------------------------------------------------------------


def test_a_module_invokes_another_modules_direct_method_through_the_http_api(deployment: Deployment) -> None:
    with ws_peer(deployment, CALLEE, MQTTProtocolVersion.MQTTv311) as callee:
        callee.connected().subscribed("$iothub/methods/POST/#")

        def answer(client: Any, userdata: Any, message: Any) -> None:
            rid = message.topic.split("$rid=")[1]
            request_payload = json.loads(message.payload)
            callee.client.publish(f"$iothub/methods/res/200/?$rid={rid}",
                                  json.dumps({"echo": request_payload, "name": message.topic.split("/")[3]}))

        callee.client.on_message = answer
        result: dict[str, Any] = {}
        call = {"methodName": "reboot", "payload": {"delay": 3}, "responseTimeoutInSeconds": 10}
        headers = {"Authorization": deployment.password(CALLER), "x-ms-edge-moduleId": CALLER.id,
                   "Content-Type": "application/json"}

        def invoke() -> None:
            result["answer"] = request(deployment, "POST", f"/twins/{EDGE_DEVICE}/modules/callee/methods",
                                       json.dumps(call).encode(), headers)

        caller = threading.Thread(target=invoke)
        caller.start()
        wait_until([callee], lambda: "answer" in result, "the method call's HTTP answer")
        caller.join(BOUND)
    status, _, body = result["answer"]
    assert status == 200, body
    assert json.loads(body) == {"status": 200, "payload": {"echo": {"delay": 3}, "name": "reboot"}}


def test_a_direct_method_to_an_absent_module_is_404_and_a_device_may_not_call(deployment: Deployment) -> None:
    headers = {"Authorization": deployment.password(CALLER), "x-ms-edge-moduleId": CALLER.id}
    call = json.dumps({"methodName": "m", "payload": None}).encode()
    status, _, body = request(deployment, "POST", f"/twins/{EDGE_DEVICE}/modules/nobody/methods", call,
                              headers)
    assert status == 404
    assert json.loads(body)["status"] == 404
    status, _, body = request(deployment, "POST", f"/twins/{EDGE_DEVICE}/modules/callee/methods", call,
                              {"Authorization": deployment.password(REST_DEVICE)})
    assert status == 403, body


# --- probes, stats, metrics -----------------------------------------------------------------------


def test_health_and_ready_answer_on_the_https_port_and_in_plain_http_on_the_metrics_port(
    deployment: Deployment,
) -> None:
    for via_tls, port in ((deployment, HTTP_PORT), (None, METRICS_PORT)):
        status, _, body = request(via_tls, "GET", "/health", port=port)
        assert (status, json.loads(body)) == (200, {"status": "alive"})
        status, _, body = request(via_tls, "GET", "/ready", port=port)
        assert status == 200
        assert json.loads(body) == {"ready": True, "store": {"open": True},
                                    "heads": {"mqtt": {"bound": True}, "http": {"bound": True}}}


def test_stats_and_the_stats_command_report_a_waiting_queue(deployment: Deployment) -> None:
    for n in range(3):
        assert post_events(deployment, REST_DEVICE, f"queued-{n}".encode())[0] == 204
    status, _, body = request(None, "GET", "/stats", port=METRICS_PORT)
    stats = json.loads(body)
    assert status == 200
    assert stats["serving"] is True
    assert stats["store_bytes"] > 0
    queue = next(q for q in stats["queues"] if q["endpoint"] == "/modules/restsink/inputs/rest")
    assert queue["length"] >= 3
    assert queue["oldest_age_seconds"] >= 0
    command = [sys.executable, "-m", "edgehub", "stats", "--port", str(METRICS_PORT)]
    as_json = json.loads(subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=BOUND,
                                        check=True).stdout)
    assert {"endpoint": queue["endpoint"], "length": queue["length"]}.items() <= next(
        q for q in as_json["queues"] if q["endpoint"] == queue["endpoint"]).items()
    table = subprocess.run(command, capture_output=True, text=True, timeout=BOUND, check=True).stdout
    assert "/modules/restsink/inputs/rest" in table
    assert "running hub" in table


def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by name and labels (prometheus-client's own parser)."""
    _, _, body = request(None, "GET", "/metrics", port=METRICS_PORT)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when absent); exactly one may match."""
    found = [v for (n, have), v in samples.items() if n == name and set(labels.items()) <= have]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def test_metrics_counters_move_by_exactly_what_was_sent_with_edgehubs_labels(deployment: Deployment) -> None:
    received = {"id": METER.id, "route_output": "m"}
    sent = {"from": METER.id, "from_route_output": "m", "to": METER_SINK.id, "to_route_input": "in",
            "priority": "2000000000"}
    before = scrape()
    with PahoPeer(deployment, METER_SINK, MQTTProtocolVersion.MQTTv5) as sink, \
            ws_peer(deployment, METER, MQTTProtocolVersion.MQTTv5) as meter:
        sink.connected().subscribed(f"{inputs_topic(METER_SINK)}#")
        meter.connected()
        while_flowing = scrape()
        assert value(while_flowing, "edgehub_connected_clients") >= 2
        mids = [meter.publish(f"{events_topic(METER)}$.on=m", b"x" * 100) for _ in range(7)]
        wait_for_messages(sink, 7, others=[meter])
        wait_until([meter, sink], lambda: all(m in meter.pubacks for m in mids), "PUBACKs")
        # Sent counts at the checkpoint, right after the sink's PUBACKs reach the hub.
        deadline = time.monotonic() + BOUND
        samples = scrape()
        while value(samples, "edgehub_messages_sent_total", **sent) - value(
                before, "edgehub_messages_sent_total", **sent) < 7 and time.monotonic() < deadline:
            sink.step()
            samples = scrape()
    delta = {
        key: value(samples, name, **labels) - value(before, name, **labels)
        for key, name, labels in (
            ("received", "edgehub_messages_received_total", received),
            ("sent", "edgehub_messages_sent_total", sent),
            ("sizes", "edgehub_message_size_bytes_count", {"id": METER.id}),
            ("size_sum", "edgehub_message_size_bytes_sum", {"id": METER.id}),
            ("connects", "edgehub_client_connect_success_total", {"id": METER.id}),
        )
    }
    assert delta == {"received": 7, "sent": 7, "sizes": 7, "size_sum": 700, "connects": 1}
    common = {"iothub": HOST, "edge_device": EDGE_DEVICE}
    assert value(samples, "edgehub_messages_received_total", **received, **common) > 0
    instance = {dict(labels)["instance_number"] for (_, labels) in samples}
    assert len(instance) == 1
    assert len(instance.pop()) == 36

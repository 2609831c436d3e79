"""Log lines under attack (issue 15): a full store, a refused client and a refused publish each
give one short, rate-limited line; client ids and topics are cut; no key or token is logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgehub.logs import RateLimitedLine, shown
from edgehub.message import Identity
from edgehub.mqtt.packets import MQTT_5, PubAck
from tests.conformance.deployment import events_topic, random_key
from tests.reliability.netkit import RawClient, running_hub

DEVICE = Identity("logged")
SINK = Identity("edge", "sink")
ROUTES = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}


def test_shown_cuts_client_text_and_escapes_control_characters() -> None:
    assert shown("a" * 60_000) == "a" * 64 + "…(60000 chars)"
    assert shown("dev\n1") == "dev\\n1"
    assert shown("short") == "short"


def test_a_rate_limited_line_logs_once_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    line = RateLimitedLine(logging.getLogger("test.rate"), logging.WARNING, 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.rate"):
        logged = [line("store full for %s", "x") for _ in range(500)]
        now[0] = 10.0
        line("store full for %s", "y")
    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "store full for x", "store full for y (and 499 more in the last 10 s)",
    ]


def hub_log_bytes(lines: list[str]) -> int:
    return sum(len(line) for line in lines)


def test_refusals_and_a_full_store_give_short_rate_limited_lines_and_no_secret(tmp_path: Path) -> None:
    with running_hub(tmp_path, ROUTES, [DEVICE, SINK], store_limit_bytes=1_000_000) as hub:
        process = hub.deployment.hub
        before = len(process.lines)
        long_id = "x" * 60_000
        for _ in range(100):  # CONNECTs refused: unknown identity with a 60,000-byte client id
            client = RawClient.open(hub.plain_port)
            bogus = "SharedAccessSignature sr=a&sig=b&se=1"
            client.send(hub.connect_packet(Identity(long_id), password=bogus))
            assert client.closed_by_server()
            client.close()
        wrong = hub.deployment.password(DEVICE, key=random_key())
        for _ in range(20):
            client = RawClient.open(hub.plain_port)
            connack = client.connect(hub, DEVICE, password=wrong)
            assert connack is not None
            assert connack.reason_code != 0
            client.close()
        # A full store: MQTT 5 PUBACK 0x97, hundreds of times.
        client = RawClient.open(hub.plain_port, version=MQTT_5)
        token = hub.deployment.password(DEVICE)
        assert client.connect(hub, DEVICE, password=token) is not None
        refused = 0
        for n in range(1, 3000):
            client.publish(events_topic(DEVICE), b"y" * 8192, qos=1, packet_id=n)
            ack = client.read()
            assert isinstance(ack, PubAck)
            refused += ack.reason_code == 0x97
            if refused >= 300:
                break
        assert refused >= 300
        # A refused publish: another device's topic, 60,000 bytes long (v5: PUBACK 0x87, no close).
        client.publish("devices/other/messages/events/" + "t" * 60_000, b"z", qos=1, packet_id=4000)
        assert client.read() is not None
        client.close()
        process.wait_for_line("MQTT publish of logged to devices/other", 5)
        lines = process.lines[before:]
        output = "".join(lines)
    assert hub_log_bytes(lines) < 20_000, output[:2000]
    store_full = [line for line in lines if "store full" in line]
    assert len(store_full) == 1, store_full
    refused_connects = [line for line in lines if "CONNECT of" in line and "refused" in line]
    assert 1 <= len(refused_connects) <= 2, refused_connects
    assert "(60000 chars)" in refused_connects[0]
    key = hub.deployment.keys[DEVICE]
    for secret in (key, token, token.split("sig=")[1].split("&")[0], wrong.split("sig=")[1].split("&")[0]):
        assert secret not in output

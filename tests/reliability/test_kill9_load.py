"""kill -9 at random moments under QoS 1 load from several clients (issue 15, docs/architecture.md
§1 invariant 1): every message the hub acknowledged is delivered after the restarts; duplicates
are counted (at-least-once allows them), losses must be 0."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import PubAck, Publish
from tests.conformance.deployment import EDGE_DEVICE, HOST, events_topic, inputs_topic, random_key
from tests.hubproc import HubProcess, free_port, write_config
from tests.reliability.netkit import RawClient, report, wait_until

PUBLISHERS = [Identity(f"loader{n}") for n in range(3)]
SINK = Identity(EDGE_DEVICE, "sink")
WINDOW = 20


class Publisher(threading.Thread):
    """Publishes ``{device}:{seq}`` at QoS 1, WINDOW in flight, until the hub dies; records acks."""

    def __init__(self, port: int, identity: Identity, key: str, first_seq: int, acked: set[str]) -> None:
        super().__init__(daemon=True)
        self.port, self.identity, self.key, self.seq, self.acked = port, identity, key, first_seq, acked

    def run(self) -> None:
        try:
            client = RawClient.open(self.port)
        except (OSError, TimeoutError):
            return
        try:
            self._publish(client)
        except (OSError, TimeoutError):
            return
        finally:
            client.close()

    def _publish(self, client: RawClient) -> None:
        token = make_sas_token(sas_resource(HOST, self.identity), self.key, 2_000_000_000)
        client.send(encode_connect(self.identity, token))
        if client.read() is None:
            return
        inflight: dict[int, str] = {}
        while True:
            while len(inflight) < WINDOW:
                self.seq += 1
                body = f"{self.identity.id}:{self.seq}"
                packet_id = self.seq % 65535 + 1
                inflight[packet_id] = body
                publish = Publish(events_topic(self.identity), body.encode(), 1, packet_id=packet_id)
                client.send(encode(publish))
            packet = client.read()
            if packet is None:
                return
            if isinstance(packet, PubAck) and packet.packet_id in inflight:
                self.acked.add(inflight.pop(packet.packet_id))


def encode_connect(identity: Identity, token: str) -> bytes:
    from edgehub.mqtt.packets import MQTT_311, Connect
    return encode(Connect(MQTT_311, identity.id, True, 60, f"{HOST}/{identity.id}/?api-version=2021-04-12",
                          token.encode()), MQTT_311)


def run_rounds(folder: Path, rounds: int) -> None:
    keys = {identity: random_key() for identity in [*PUBLISHERS, SINK]}
    routes = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}
    config = write_config(folder / "config.json", routes, [
        {"deviceId": i.device_id, "primaryKey": k} | ({"moduleId": i.module_id} if i.module_id else {})
        for i, k in keys.items()
    ])
    plain = free_port()
    env = {"mqttSettings__port": str(free_port()), "mqttSettings__plainPort": str(plain),
           "EdgeDeviceId": EDGE_DEVICE, "IotHubHostName": HOST, "EdgeHubHostName": HOST}
    acked: set[str] = set()
    seqs = dict.fromkeys(PUBLISHERS, 0)
    rng = random.Random(15)
    for _ in range(rounds):
        hub = HubProcess(folder, config, env=dict(env)).start()
        publishers = [Publisher(plain, i, keys[i], seqs[i], acked) for i in PUBLISHERS]
        for publisher in publishers:
            publisher.start()
        target = len(acked) + rng.randint(50, 1500)
        wait_until(lambda: len(acked) >= target, 30, "acks under load")  # noqa: B023 - read at once
        hub.stop(signal.SIGKILL)
        for publisher in publishers:
            publisher.join(10)
            seqs[publisher.identity] = publisher.seq + WINDOW  # never reuse a body after a crash
    hub = HubProcess(folder, config, env=dict(env)).start()
    try:
        delivered = drain(plain, keys[SINK], acked)
    finally:
        assert hub.stop() == 0
    lost = acked - set(delivered)
    duplicates = sum(count - 1 for count in Counter(delivered).values() if count > 1)
    report("kill -9 under QoS 1 load", rounds=rounds, acked=len(acked), delivered=len(delivered),
           lost=len(lost), duplicates=duplicates)
    assert not lost, sorted(lost)[:10]


def drain(port: int, key: str, expected: set[str]) -> list[str]:
    client = RawClient.open(port)
    token = make_sas_token(sas_resource(HOST, SINK), key, 2_000_000_000)
    client.send(encode_connect(SINK, token))
    assert client.read() is not None
    assert client.subscribe(inputs_topic(SINK) + "#") is not None
    delivered: list[str] = []
    seen: set[str] = set()
    while not expected <= seen:
        packet = client.read(timeout=20)
        assert packet is not None, "the hub closed the sink"
        if isinstance(packet, Publish):
            body = packet.payload.decode()
            delivered.append(body)
            seen.add(body)
            if packet.qos:
                client.send(encode(PubAck(packet.packet_id)))
    client.close()
    return delivered


ROUNDS = int(os.environ.get("EDGEHUB_KILL9_ROUNDS", "20"))
"""20 in ``make test``; ``make soak`` sets more."""


@pytest.mark.timeout(60 + 10 * ROUNDS)
def test_every_acked_message_survives_kill9_rounds_under_load(tmp_path: Path) -> None:
    run_rounds(tmp_path, ROUNDS)

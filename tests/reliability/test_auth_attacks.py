"""Auth attacks on a real hub (issue 15): wrong key, expired and foreign tokens, publishing and
subscribing as another identity, an untrusted client certificate, plaintext MQTT on the TLS
port, and the same refusals on the HTTP head (REST and MQTT over WebSocket)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from edgehub.message import Identity
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.packets import MQTT_5, MQTT_311, ConnAck, PubAck, SubAck
from edgehub.testing.certs import make_ca, make_client_certificate
from tests.conformance.deployment import events_topic, inputs_topic, random_key
from tests.hubproc import free_port
from tests.reliability.netkit import RawClient, RunningHub, running_hub

DEVICE = Identity("victim")
ROGUE = Identity("rogue")
SINK = Identity("edge", "sink")
ROUTES = {"toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("auth"), ROUTES, [DEVICE, ROGUE, SINK], https_port=free_port(),
                     env={"ClientCertAuthEnabled": "true"}) as running:
        yield running


def refused_connect(hub: RunningHub, identity: Identity, password: str, version: int) -> int:
    client = RawClient.open(hub.plain_port, version=version)
    try:
        connack = client.connect(hub, identity, password=password)
        assert isinstance(connack, ConnAck)
        assert client.closed_by_server()
        return connack.reason_code
    finally:
        client.close()


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
@pytest.mark.parametrize("credential", ["wrong-key", "expired", "foreign-token", "garbage"])
def test_bad_credentials_are_refused(hub: RunningHub, version: int, credential: str) -> None:
    deployment = hub.deployment
    password = {
        "wrong-key": deployment.password(DEVICE, key=random_key()),
        "expired": deployment.password(DEVICE, expiry=int(time.time()) - 60),
        "foreign-token": deployment.password(ROGUE),  # rogue's valid token, victim's client id
        "garbage": "SharedAccessSignature sr=%&sig=%%&se=x",
    }[credential]
    code = refused_connect(hub, DEVICE, password, version)
    assert code == (0x86 if version == MQTT_5 else 0x05)


def test_publishing_as_another_identity_is_refused_and_never_delivered(hub: RunningHub) -> None:
    rogue = RawClient.open(hub.plain_port, version=MQTT_5)
    assert rogue.connect(hub, ROGUE) is not None
    rogue.publish(events_topic(DEVICE), b"forged", qos=1, packet_id=1)
    ack = rogue.read()
    assert isinstance(ack, PubAck)
    assert ack.reason_code == 0x87
    rogue.publish(events_topic(ROGUE), b"own", qos=1, packet_id=2)
    own_ack = rogue.read()
    assert isinstance(own_ack, PubAck)
    assert own_ack.reason_code == 0
    rogue.close()
    old = RawClient.open(hub.plain_port)
    assert old.connect(hub, ROGUE) is not None
    old.publish(events_topic(DEVICE), b"forged", qos=1, packet_id=3)
    assert old.closed_by_server()  # MQTT 3.1.1 has no negative PUBACK
    old.close()
    sink = RawClient.open(hub.plain_port)
    assert sink.connect(hub, SINK) is not None
    assert sink.subscribe(inputs_topic(SINK) + "#") is not None
    bodies = []
    while b"own" not in bodies:
        packet = sink.read()
        assert packet is not None
        bodies.append(getattr(packet, "payload", b""))
    sink.close()
    assert b"forged" not in bodies


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_subscribing_to_another_identity_is_refused(hub: RunningHub, version: int) -> None:
    rogue = RawClient.open(hub.plain_port, version=version)
    assert rogue.connect(hub, ROGUE) is not None
    for topic_filter in ("devices/victim/messages/devicebound/#", inputs_topic(SINK) + "#", "#"):
        suback = rogue.subscribe(topic_filter)
        assert isinstance(suback, SubAck)
        assert suback.reason_codes[0] >= 0x80, topic_filter
    rogue.close()


def test_an_untrusted_client_certificate_is_refused(hub: RunningHub, tmp_path: Path) -> None:
    evil_ca = make_ca(tmp_path / "evil", "evil CA")
    stranger = make_client_certificate(tmp_path / "stranger", DEVICE.id, evil_ca)
    context = hub.tls_context()
    context.load_cert_chain(stranger.chain_file, stranger.key_file)
    client = RawClient.open(hub.deployment.tls_port, context=context)
    try:
        client.send(hub.connect_packet(DEVICE, password=""))
        connack = client.read()
        assert connack is None or (isinstance(connack, ConnAck) and connack.reason_code != 0)
    finally:
        client.close()


def test_plaintext_mqtt_on_the_tls_port_gets_no_connack(hub: RunningHub) -> None:
    client = RawClient.open(hub.deployment.tls_port)
    try:
        client.send(hub.connect_packet(DEVICE))
        data = b""
        client.sock.settimeout(8)
        try:
            while chunk := client.sock.recv(4096):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert data[:1] != b"\x20"  # never a CONNACK (0x20), only TLS alerts or nothing
    finally:
        client.close()


def test_the_http_head_refuses_bad_tokens_on_rest_and_websocket(hub: RunningHub) -> None:
    async def attack() -> tuple[int, int, int]:
        context = hub.tls_context()
        base = f"https://localhost:{hub.https_port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            bad = hub.deployment.password(DEVICE, key=random_key())
            async with session.post(f"{base}/devices/victim/messages/events?api-version=2021-04-12",
                                    data=b"x", headers={"Authorization": bad}) as response:
                wrong_key = response.status
            rogue = hub.deployment.password(ROGUE)
            async with session.post(f"{base}/devices/victim/messages/events?api-version=2021-04-12",
                                    data=b"x", headers={"Authorization": rogue}) as response:
                cross = response.status
            async with session.ws_connect(f"{base}/$iothub/websocket", protocols=("mqtt",)) as ws:
                await ws.send_bytes(hub.connect_packet(DEVICE, password=bad))
                message = await asyncio.wait_for(ws.receive(), 10)
                packets = Decoder().feed(message.data) if message.type is aiohttp.WSMsgType.BINARY else []
                ws_code = packets[0].reason_code if packets and isinstance(packets[0], ConnAck) else -1
        return wrong_key, cross, ws_code

    wrong_key, cross, ws_code = asyncio.run(attack())
    assert wrong_key == 401
    assert cross in (401, 403)
    assert ws_code == 0x05

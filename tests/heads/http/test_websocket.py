"""MQTT over WebSocket (edgehub.heads.http.websocket, ws_transport) in process: an aiohttp client
speaking the hub's own MQTT codec to the same MqttServer the TCP head uses."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from edgehub.errors import AuthError
from edgehub.heads.http.app import WEBSOCKET_PATH
from edgehub.heads.http.websocket import AMQP, AMQP_UNAVAILABLE, WebSocketApi
from edgehub.heads.http.ws_transport import WebSocketTransport
from edgehub.heads.mqtt.policy import ConnectRequest
from edgehub.heads.mqtt.server import MqttServer, ServerLimits, start_mqtt_server
from edgehub.message import Identity
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode, encode_publish
from edgehub.mqtt.packets import MQTT_5, MQTT_311, ConnAck, Connect, Disconnect, Packet, PubAck, ReasonCode
from tests.heads.http.support import FakeHub

MODULE = Identity("edge", "filter")
TELEMETRY = "devices/edge/modules/filter/messages/events/"
BOUND = 5.0
PENDING_LIMIT = 64 * 1024


def authenticate(request: ConnectRequest) -> Identity:
    if request.password != b"secret":
        raise AuthError("bad token")
    return Identity.parse(request.client_id)


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + BOUND
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def server(hub: FakeHub) -> AsyncIterator[MqttServer]:
    srv = await start_mqtt_server(hub, authenticate, listen=False,
                                  limits=ServerLimits(max_pending_bytes=PENDING_LIMIT))
    yield srv
    srv.close()
    await srv.wait_closed()


@pytest.fixture
async def api(server: MqttServer) -> WebSocketApi:
    return WebSocketApi(lambda: server)


@pytest.fixture
async def client(api: WebSocketApi) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.router.add_get(WEBSOCKET_PATH, api.handle)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
        await api.close()


class WsClient:
    """An MQTT client over an aiohttp WebSocket, on the hub's own codec."""

    def __init__(self, ws: ClientWebSocketResponse, version: int = MQTT_311) -> None:
        self.ws = ws
        self.decoder = Decoder(version=version)
        self.version = version
        self.pending: deque[Packet] = deque()

    async def send(self, packet: Packet) -> None:
        await self.ws.send_bytes(encode(packet, self.version))

    async def receive(self) -> Packet:
        """The next packet; one frame may carry several (the hub coalesces its writes)."""
        while not self.pending:
            message = await asyncio.wait_for(self.ws.receive(), BOUND)
            assert message.type is WSMsgType.BINARY, message
            self.pending.extend(self.decoder.feed(message.data))
        return self.pending.popleft()

    async def connect(self) -> ConnAck:
        await self.send(Connect(self.version, MODULE.id, True, 0, "u", b"secret"))
        connack = await self.receive()
        assert isinstance(connack, ConnAck)
        return connack


async def open_mqtt(client: TestClient[Any, Any], version: int = MQTT_311) -> WsClient:
    ws = await client.ws_connect(WEBSOCKET_PATH, protocols=("mqtt",))
    assert ws.protocol == "mqtt"
    return WsClient(ws, version)


async def test_connect_and_publish_are_acked_only_after_ingest_as_over_tcp(
    client: TestClient[Any, Any], hub: FakeHub,
) -> None:
    mqtt = await open_mqtt(client)
    assert (await mqtt.connect()).reason_code == 0
    hub.gate = asyncio.Event()
    await mqtt.ws.send_bytes(encode_publish(TELEMETRY, b"one", 1, 1))
    await wait_until(lambda: hub.waiting == 1, "the ingest to start")
    assert hub.ingested == []
    hub.gate.set()
    assert await mqtt.receive() == PubAck(1)
    assert [m.body for m in hub.ingested] == [b"one"]
    assert hub.ingested[0].source == MODULE


async def test_packets_split_across_frames_and_packed_into_one_frame_all_arrive(
    client: TestClient[Any, Any], hub: FakeHub,
) -> None:
    mqtt = await open_mqtt(client)
    await mqtt.connect()
    stream = b"".join(encode_publish(TELEMETRY, b"%d" % n, 1, n) for n in range(1, 4))
    await mqtt.ws.send_bytes(stream[:7])  # [MQTT-6.0.0-2]: frames need not align with packets
    await mqtt.ws.send_bytes(stream[7:])
    acks = [await mqtt.receive() for _ in range(3)]
    assert acks == [PubAck(1), PubAck(2), PubAck(3)]
    assert [m.body for m in hub.ingested] == [b"1", b"2", b"3"]


async def test_a_bad_password_is_refused_by_the_same_session_rules(client: TestClient[Any, Any]) -> None:
    mqtt = await open_mqtt(client, MQTT_5)
    await mqtt.send(Connect(MQTT_5, MODULE.id, True, 0, "u", b"wrong"))
    connack = await mqtt.receive()
    assert connack == ConnAck(False, ReasonCode.BAD_USER_NAME_OR_PASSWORD)
    closed = await asyncio.wait_for(mqtt.ws.receive(), BOUND)
    assert closed.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)


async def test_reading_pauses_over_the_pending_bound_and_resumes_after_the_ingest(
    client: TestClient[Any, Any], hub: FakeHub, api: WebSocketApi,
) -> None:
    mqtt = await open_mqtt(client)
    await mqtt.connect()
    hub.gate = asyncio.Event()
    payload = b"p" * 8192
    count = 2 * PENDING_LIMIT // len(payload)
    for n in range(1, count + 1):
        await mqtt.ws.send_bytes(encode_publish(TELEMETRY, payload, 1, n))
    [transport] = list(api._open)  # the one open session
    await wait_until(lambda: not transport.is_reading(), "reading to pause over the bound")
    hub.gate.set()
    acks = [await mqtt.receive() for _ in range(count)]
    assert acks == [PubAck(n) for n in range(1, count + 1)]
    assert transport.is_reading()
    assert len(hub.ingested) == count


async def test_amqp_subprotocol_without_an_amqp_head_is_closed_with_a_clear_reason(
    client: TestClient[Any, Any],
) -> None:
    ws = await client.ws_connect(WEBSOCKET_PATH, protocols=(AMQP,))
    assert ws.protocol == AMQP
    message = await asyncio.wait_for(ws.receive(), BOUND)
    assert message.type is WSMsgType.CLOSE
    assert message.data == 1008
    assert message.extra == AMQP_UNAVAILABLE.decode()


async def test_amqp_subprotocol_goes_to_the_amqp_handler_when_there_is_one(server: MqttServer) -> None:
    handled: list[str | None] = []

    async def amqp(ws: web.WebSocketResponse, request: web.Request) -> None:
        handled.append(ws.ws_protocol)
        await ws.close()

    app = web.Application()
    app.router.add_get(WEBSOCKET_PATH, WebSocketApi(lambda: server, amqp).handle)
    async with TestClient(TestServer(app)) as test_client:
        ws = await test_client.ws_connect(WEBSOCKET_PATH, protocols=(AMQP,))
        await asyncio.wait_for(ws.receive(), BOUND)
    assert handled == [AMQP]


async def test_an_upgrade_offering_no_known_subprotocol_is_400_json(client: TestClient[Any, Any]) -> None:
    response = await client.get(WEBSOCKET_PATH, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "chat"})
    assert response.status == 400
    assert (await response.json())["status"] == 400


async def test_a_text_frame_closes_the_connection_with_1003(client: TestClient[Any, Any]) -> None:
    mqtt = await open_mqtt(client)
    await mqtt.ws.send_str("hello")
    message = await asyncio.wait_for(mqtt.ws.receive(), BOUND)
    assert message.type is WSMsgType.CLOSE
    assert message.data == 1003


async def test_stop_ends_websocket_sessions_with_server_shutting_down(
    client: TestClient[Any, Any], api: WebSocketApi,
) -> None:
    mqtt = await open_mqtt(client, MQTT_5)
    await mqtt.connect()
    await api.close()
    assert await mqtt.receive() == Disconnect(ReasonCode.SERVER_SHUTTING_DOWN)
    assert api._open == set()


def test_the_transport_is_an_asyncio_transport() -> None:
    assert issubclass(WebSocketTransport, asyncio.Transport)

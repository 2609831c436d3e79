"""Tests of one upstream MQTT connection (NativeMqttConnection) on real sockets: what CONNECT presents,
refusals, keep-alive, TLS with UpstreamCaFile against mosquitto, MQTT over WebSocket through a bridge.

Network on 127.0.0.1 only; brokers are started by the tests (see broker.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from edgehub.auth.sas import check_resource, parse_sas_token, signature_matches
from edgehub.clock import SystemClock
from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.message import Identity, Message, SystemProperty
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.testing.clock import FakeClock
from edgehub.tls import ensure_dev_certificates
from edgehub.upstream.config import SubscriptionScope, UpstreamConfig, UpstreamTransport
from edgehub.upstream.connection import IncomingPublish
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.mqtt import MqttUpstream
from edgehub.upstream.native import NativeMqttConnection
from tests.upstream.broker import BrokerTls, Mosquitto, Subscriber, eventually, free_port
from tests.upstream.fakes import FakeHub

KEY_BYTES = b"connection-test-key-0123456789ab"
KEY = base64.b64encode(KEY_BYTES).decode()
EDGE = Identity("edge1", "$edgeHub")
CREDENTIALS = SasCredentials("myhub.example", EDGE, KEY)


def config_for(port: int, **options: Any) -> UpstreamConfig:
    options.setdefault("tls", False)
    return UpstreamConfig(CREDENTIALS, "127.0.0.1", port, connect_timeout=5, **options)


def ignore(_: IncomingPublish) -> None:
    """Incoming messages are not part of these tests."""


# -- a broker that only answers CONNECT, to see what the link presents ---------------------------


@dataclass(frozen=True, slots=True)
class ConnectPacket:
    client_id: str
    username: str | None
    password: str | None
    keepalive: int
    clean_session: bool


def _string(body: bytes, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("!H", body, pos)
    return body[pos + 2 : pos + 2 + length].decode(), pos + 2 + length


def parse_connect(body: bytes) -> ConnectPacket:
    """The variable header and payload of an MQTT 3.1.1 CONNECT [MQTT-3.1]."""
    name, pos = _string(body, 0)
    assert (name, body[pos]) == ("MQTT", 4)
    flags = body[pos + 1]
    (keepalive,) = struct.unpack_from("!H", body, pos + 2)
    client_id, pos = _string(body, pos + 4)
    if flags & 0x04:  # will topic and message
        _, pos = _string(body, pos)
        _, pos = _string(body, pos)
    username = password = None
    if flags & 0x80:
        username, pos = _string(body, pos)
    if flags & 0x40:
        password, pos = _string(body, pos)
    return ConnectPacket(client_id, username, password, keepalive, clean_session=bool(flags & 0x02))


class ConnectRecorder:
    """Records each CONNECT, answers CONNACK with ``return_code``, then reads and ignores the rest."""

    def __init__(self, return_code: int = 0) -> None:
        self.return_code = return_code
        self.connects: list[ConnectPacket] = []
        self.received = bytearray()
        """Every byte after the CONNECTs, all connections together."""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ConnectRecorder:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert (await reader.readexactly(1)) == b"\x10"
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            self.connects.append(parse_connect(await reader.readexactly(length)))
            writer.write(bytes([0x20, 2, 0, self.return_code]))
            await writer.drain()
            while data := await reader.read(4096):
                self.received += data  # PINGREQs and PUBLISHes go unanswered
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_connect_presents_the_iot_hub_client_id_username_and_a_sas_token() -> None:
    async with ConnectRecorder() as broker:
        token = CREDENTIALS.token(FakeClock().time())
        connection = NativeMqttConnection(config_for(broker.port, keepalive=30), token.text, ignore)
        await connection.open()
        assert connection.is_open
        await connection.close()
    [connect] = broker.connects
    assert connect.client_id == "edge1/$edgeHub"
    assert connect.username == "myhub.example/edge1/$edgeHub/?api-version=2018-06-30"
    assert (connect.keepalive, connect.clean_session) == (30, False)
    assert connect.password is not None
    presented = parse_sas_token(connect.password)
    assert signature_matches(presented, KEY_BYTES)
    check_resource(presented, EDGE, ["myhub.example"])
    assert presented.expiry == token.expiry


@pytest.mark.parametrize("return_code", [4, 5])
async def test_refused_credentials_raise_auth_error(
    return_code: int
) -> None:
    async with ConnectRecorder(return_code) as broker:
        connection = NativeMqttConnection(config_for(broker.port), "wrong", ignore)
        with pytest.raises(AuthError, match="refused the credentials"):
            await connection.open()
        assert not connection.is_open
        assert not connection.is_open


async def test_nothing_listening_raises_unavailable() -> None:
    connection = NativeMqttConnection(config_for(free_port()), "token", ignore)
    with pytest.raises(EndpointUnavailable, match="cannot connect"):
        await connection.open()


async def test_silent_parent_is_found_lost_by_keepalive() -> None:
    async with ConnectRecorder() as broker:
        connection = NativeMqttConnection(config_for(broker.port, keepalive=1), "token", ignore)
        await connection.open()
        # PINGREQ after 1 s idle, lost when no PINGRESP within another second (MQTT 3.1.1 §3.1.2.10).
        reason = await asyncio.wait_for(connection.wait_closed(), 5)
        assert not connection.is_open
        assert reason == "connection lost: Keep alive timeout"


async def test_publish_ends_unconfirmed_when_the_connection_closes() -> None:
    async with ConnectRecorder() as broker:
        connection = NativeMqttConnection(config_for(broker.port), "token", ignore)
        await connection.open()
        acked = connection.publish("devices/d/messages/events/", b"x")  # the recorder never PUBACKs
        connection.abort("test")
        assert acked.done()
        assert acked.result() is False
        assert connection.publish("devices/d/messages/events/", b"y").result() is False


async def test_close_sends_disconnect_to_the_parent() -> None:
    async with ConnectRecorder() as broker:
        connection = NativeMqttConnection(config_for(broker.port), "token", ignore)
        await connection.open()
        await connection.close()
        assert await asyncio.wait_for(connection.wait_closed(), 5)
        await eventually(lambda: broker.received.endswith(b"\xe0\x00"), what="DISCONNECT [MQTT-3.14.1]")
        assert not connection.is_open


async def test_a_parent_that_never_pubacks_is_dropped_after_the_ack_timeout_and_reconnected() -> None:
    async with ConnectRecorder() as broker:
        config = config_for(broker.port, ack_timeout=0.3, subscription_scope=SubscriptionScope.NONE)
        link = MqttUpstream(config, SystemClock(), connection_factory=NativeMqttConnection)
        await link.start(FakeHub())
        try:
            await eventually(lambda: link.upstream_endpoint.reachable, what="link up")
            message = Message(b"x", {}, {SystemProperty.CONNECTION_DEVICE_ID: "sensor1"})
            try:
                result = await link.endpoint.send([QueuedMessage(1, QueueKey("$upstream"), 0, message)])
            except EndpointUnavailable:
                pass  # or the link already dropped the connection: no PUBACK either way
            else:
                assert result.delivered == 0
            await eventually(lambda: len(broker.connects) == 2, what="a new connection after the timeout")
            assert b"devices/sensor1/messages/events/" in broker.received
        finally:
            await link.stop()


# -- TLS against mosquitto -------------------------------------------------------------------------


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[tuple[Mosquitto, Path]]:
    certs = ensure_dev_certificates(tmp_path / "certs", ["localhost"])
    broker = Mosquitto(tmp_path, tls=BrokerTls(certs.ca_file, certs.cert_file, certs.key_file))
    await broker.start()
    yield broker, certs.ca_file
    await broker.stop()


async def test_tls_with_upstream_ca_file_verifies_the_parent_and_delivers(
    tls_broker: tuple[Mosquitto, Path],
) -> None:
    broker, ca_file = tls_broker
    connection = NativeMqttConnection(config_for(broker.port, tls=True, ca_file=ca_file), "token", ignore)
    await connection.open()
    try:
        assert await asyncio.wait_for(connection.publish("devices/d/messages/events/", b"x"), 5)
    finally:
        await connection.close()


async def test_tls_parent_signed_by_an_unknown_ca_is_refused(
    tls_broker: tuple[Mosquitto, Path]
) -> None:
    broker, _ = tls_broker
    connection = NativeMqttConnection(config_for(broker.port, tls=True), "token", ignore)
    with pytest.raises(EndpointUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await connection.open()


# -- MQTT over WebSocket ---------------------------------------------------------------------------


class WebSocketBridge:
    """An HTTP server taking MQTT over WebSocket (subprotocol ``mqtt``) and relaying it to a TCP broker."""

    def __init__(self, broker_port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.broker_port = broker_port
        self.ssl_context = ssl_context
        self.port = free_port()
        self.requests: list[tuple[str, str | None]] = []
        app = web.Application()
        app.router.add_get("/$iothub/websocket", self._relay)
        self._runner = web.AppRunner(app)

    async def __aenter__(self) -> WebSocketBridge:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    async def _relay(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=("mqtt",))
        await socket.prepare(request)
        self.requests.append((request.path, socket.ws_protocol))
        reader, writer = await asyncio.open_connection("127.0.0.1", self.broker_port)

        async def to_broker() -> None:
            async for frame in socket:
                if frame.type is WSMsgType.BINARY:
                    writer.write(frame.data)
                    await writer.drain()
            writer.close()

        async def to_client() -> None:
            while data := await reader.read(65536):
                await socket.send_bytes(data)
            await socket.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(to_broker(), to_client())
        return socket


async def test_mqtt_ws_carries_telemetry_over_a_websocket_at_the_iothub_path(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    await broker.start()
    subscriber = Subscriber(broker.port, "devices/#")
    await subscriber.start()
    link: MqttUpstream | None = None
    try:
        async with WebSocketBridge(broker.port) as bridge:
            config = config_for(bridge.port, transport=UpstreamTransport.WEBSOCKETS)
            link = MqttUpstream(config, FakeClock(), connection_factory=NativeMqttConnection)
            endpoint = link.upstream_endpoint
            await link.start(FakeHub())
            await eventually(lambda: endpoint.reachable, what="WebSocket link up")
            message = Message(b"ws", {}, {SystemProperty.CONNECTION_DEVICE_ID: "sensor1"})
            result = await endpoint.send([QueuedMessage(1, QueueKey("$upstream"), 0, message)])
            assert result.delivered == 1
            await eventually(lambda: len(subscriber.messages) == 1, what="message relayed to the broker")
            assert bridge.requests == [("/$iothub/websocket", "mqtt")]
            await link.stop()
    finally:
        if link is not None:
            await link.stop()
        subscriber.stop()
        await broker.stop()
    [received] = subscriber.messages
    assert (received.topic, received.payload) == ("devices/sensor1/messages/events/", b"ws")

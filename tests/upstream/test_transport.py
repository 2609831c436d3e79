"""Tests of edgehub.upstream.transport on real sockets: MQTT over WebSocket (plain and TLS) to mosquitto
through an aiohttp WebSocket bridge, directly and through an in-test HTTP CONNECT proxy (plain http:// and TLS
https://, so TLS to the parent runs inside TLS to the proxy), on asyncio and on the hub's uvloop.

Network on 127.0.0.1 only. The proxy here is a fake that records each request; the real proxy (Debian's
tinyproxy) is in tests/e2e/test_proxy.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from edgehub.errors import EndpointUnavailable
from edgehub.tls import ensure_dev_certificates
from edgehub.upstream.config import UpstreamTransport
from edgehub.upstream.native import NativeMqttConnection
from edgehub.upstream.proxy import HttpsProxy, ProxyRefusedError
from tests.upstream.broker import Mosquitto, free_port
from tests.upstream.test_connection import WebSocketBridge, config_for, ignore

TOPIC = "devices/d/messages/events/"


class FakeProxy:
    """An HTTP CONNECT proxy: records each request head, answers ``status`` (200 opens a tunnel to the
    requested host:port and relays both ways), over TLS when given a server context."""

    def __init__(self, status: str = "200 Connection established", ssl_context: ssl.SSLContext | None = None,
                 credentials: str | None = None) -> None:
        self.status = status
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.requests: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            self.requests.append(head)
            status = self.status
            if self.credentials is not None:
                token = base64.b64encode(self.credentials.encode()).decode()
                expected = f"Proxy-Authorization: Basic {token}"
                if expected not in head:
                    status = "407 Proxy Authentication Required"
            writer.write(f"HTTP/1.1 {status}\r\n\r\n".encode())
            if not status.startswith("200"):
                return
            host, _, port = head.split(" ")[1].rpartition(":")
            target_reader, target_writer = await asyncio.open_connection(host, int(port))
            await asyncio.gather(_relay(reader, target_writer), _relay(target_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path)
    await mosquitto.start()
    yield mosquitto
    await mosquitto.stop()


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with the dev certificate for 127.0.0.1 / localhost, and the CA to trust it."""
    certs = ensure_dev_certificates(tmp_path / "certs", ["localhost", "127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert_file, certs.key_file)
    return context, certs.ca_file


async def publish_once(config_options: dict[str, Any], port: int) -> None:
    """Connect over WebSocket, publish one message, wait for its PUBACK, close."""
    config = config_for(port, transport=UpstreamTransport.WEBSOCKETS, **config_options)
    connection = NativeMqttConnection(config, "token", ignore)
    await connection.open()
    try:
        assert await asyncio.wait_for(connection.publish(TOPIC, b"through"), 5)
    finally:
        await connection.close()


async def test_mqtt_over_a_plain_websocket_is_acked_by_the_broker(broker: Mosquitto) -> None:
    async with WebSocketBridge(broker.port) as bridge:
        await publish_once({}, bridge.port)
    assert bridge.requests == [("/$iothub/websocket", "mqtt")]


async def test_mqtt_over_tls_websocket_verifies_the_parent_with_the_upstream_ca_file(
    broker: Mosquitto, certificates: tuple[ssl.SSLContext, Path]
) -> None:
    server, ca_file = certificates
    async with WebSocketBridge(broker.port, server) as bridge:
        await publish_once({"tls": True, "ca_file": ca_file}, bridge.port)
        with pytest.raises(EndpointUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await publish_once({"tls": True}, bridge.port)  # system CAs only


async def test_through_an_http_proxy_with_credentials_the_tunnel_carries_the_websocket(
    broker: Mosquitto,
) -> None:
    async with WebSocketBridge(broker.port) as bridge, FakeProxy(credentials="user:p@ss") as proxy:
        https_proxy = HttpsProxy("http", "127.0.0.1", proxy.port, "user", "p@ss")
        await publish_once({"proxy": https_proxy}, bridge.port)
    [request] = proxy.requests
    assert request.startswith(f"CONNECT 127.0.0.1:{bridge.port} HTTP/1.1\r\n")
    assert "Proxy-Authorization: Basic dXNlcjpwQHNz\r\n" in request
    assert bridge.requests == [("/$iothub/websocket", "mqtt")]


ProxyScenario = Callable[[], Awaitable[None]]


def _https_proxy_to_a_tls_parent(
    broker_port: int, certificates: tuple[ssl.SSLContext, Path]
) -> ProxyScenario:
    server, ca_file = certificates

    async def scenario() -> None:
        async with WebSocketBridge(broker_port, server) as bridge, FakeProxy(ssl_context=server) as proxy:
            https_proxy = HttpsProxy("https", "127.0.0.1", proxy.port)
            await publish_once({"tls": True, "ca_file": ca_file, "proxy": https_proxy}, bridge.port)
        assert [r.split("\r\n")[0] for r in proxy.requests] == [f"CONNECT 127.0.0.1:{bridge.port} HTTP/1.1"]

    return scenario


async def test_through_an_https_proxy_tls_to_the_parent_runs_inside_tls_to_the_proxy(
    broker: Mosquitto, certificates: tuple[ssl.SSLContext, Path]
) -> None:
    await _https_proxy_to_a_tls_parent(broker.port, certificates)()


def test_tls_inside_tls_works_on_the_hub_s_uvloop(
    tmp_path: Path, certificates: tuple[ssl.SSLContext, Path]
) -> None:
    async def on_uvloop() -> None:
        mosquitto = Mosquitto(tmp_path / "uvloop")
        mosquitto.folder.mkdir()
        await mosquitto.start()
        try:
            await _https_proxy_to_a_tls_parent(mosquitto.port, certificates)()
        finally:
            await mosquitto.stop()

    uvloop.run(on_uvloop())


@pytest.mark.parametrize("status", ["403 Access violation", "407 Proxy Authentication Required"])
async def test_a_refusing_proxy_gives_its_status_line_and_never_the_password(status: str) -> None:
    async with FakeProxy(status) as proxy:
        https_proxy = HttpsProxy("http", "127.0.0.1", proxy.port, "user", "secret-password")
        with pytest.raises(ProxyRefusedError) as refused:
            await publish_once({"proxy": https_proxy}, 8443)
    message = str(refused.value)
    assert message == (f"the proxy http://user:***@127.0.0.1:{proxy.port} refused CONNECT 127.0.0.1:8443: "
                       f"HTTP/1.1 {status}")
    assert "secret-password" not in message


async def test_an_unreachable_proxy_is_named_in_the_error() -> None:
    port = free_port()
    with pytest.raises(EndpointUnavailable, match=f"cannot connect to the proxy http://127.0.0.1:{port}"):
        await publish_once({"proxy": HttpsProxy("http", "127.0.0.1", port)}, 8443)


async def test_a_websocket_server_that_does_not_select_mqtt_is_refused() -> None:
    from aiohttp import web

    async def no_subprotocol(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.receive()
        return socket

    app = web.Application()
    app.router.add_get("/$iothub/websocket", no_subprotocol)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with pytest.raises(EndpointUnavailable, match="selected WebSocket subprotocol none, not mqtt"):
            await publish_once({}, port)
    finally:
        await runner.cleanup()


async def test_an_http_error_instead_of_the_upgrade_is_reported_with_its_status_line() -> None:
    async with FakeProxy("404 Not Found") as server:  # any HTTP server answering 404 to the upgrade
        with pytest.raises(EndpointUnavailable, match=r"WebSocket upgrade refused: HTTP/1\.1 404 Not Found"):
            await publish_once({}, server.port)

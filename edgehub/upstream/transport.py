"""Opens the byte stream under one upstream MQTT connection: TCP or TLS, for MqttWs through the HTTPS proxy
(HTTP CONNECT, then TLS inside the tunnel) and the WebSocket upgrade; asyncio glue, sans-I/O parts elsewhere.

Owns connecting, the handshakes and their one timeout; it never speaks MQTT (native.py does) nor retries.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from edgehub.errors import EndpointUnavailable
from edgehub.upstream.config import UpstreamConfig, UpstreamTransport
from edgehub.upstream.http1 import HttpHeadError, ResponseHead, parse_response_head
from edgehub.upstream.proxy import HttpsProxy
from edgehub.upstream.websocket import (
    MQTT_SUBPROTOCOL,
    WebSocketClient,
    WebSocketError,
    check_upgrade,
    new_key,
    upgrade_request,
)

log = logging.getLogger(__name__)


def tls_context(ca_file: Path | None, ca_pem: str | None = None) -> ssl.SSLContext:
    """System CAs plus ``UpstreamCaFile`` and ``ca_pem`` (the IoT Edge trust bundle), TLS 1.2 or
    later (IoT Hub requires it), host names checked. Reads files: call it off the loop."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    return context


def receive_websocket(
    websocket: WebSocketClient, data: bytes, transport: asyncio.Transport | None,
) -> tuple[bytes, str | None]:
    """Bytes from the parent over a WebSocket: (the payload they carry, None), with any control
    answer (pong, close) written to ``transport``; or (b"", why the connection is over) on a
    framing error or the parent's close (RFC 6455 §5, §7)."""
    try:
        payload = websocket.receive_data(data)
    except WebSocketError as exc:
        return b"", f"protocol error: {exc}"
    control = websocket.data_to_send()
    if control and transport is not None:
        transport.write(control)
    if websocket.closed is not None:
        code, reason = websocket.closed
        return b"", f"the parent closed the WebSocket: {code} {reason}".rstrip()
    return payload, None


@dataclass(slots=True)
class OpenedStream:
    """A connected transport ready for MQTT bytes, its WebSocket framing (None over TCP), and what the
    parent sent after the handshake (for the MQTT layer, normally nothing)."""

    transport: asyncio.Transport
    websocket: WebSocketClient | None
    early: bytes


class _HandshakeReader(asyncio.Protocol):
    """The transport's protocol until MQTT starts: collects the answers to CONNECT and the upgrade."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiter: asyncio.Future[None] | None = None
        self._ended: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._ended = "the connection closed during the handshake"
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = f"connection lost during the handshake: {exc}" if exc else "the connection closed"
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_head(self, what: str) -> ResponseHead:
        """The next HTTP response head; the bytes after it stay buffered (``take``)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                parsed = parse_response_head(self._buffer)
            except HttpHeadError as exc:
                raise EndpointUnavailable(f"{what}: {exc}") from None
            if parsed is not None:
                head, self._buffer = parsed
                return head
            if self._ended is not None:
                raise EndpointUnavailable(f"{what}: {self._ended}")
            self._waiter = loop.create_future()
            await self._waiter

    def take(self) -> bytes:
        data, self._buffer = self._buffer, b""
        return data


async def open_stream(config: UpstreamConfig, protocol: asyncio.Protocol, *,
                      subprotocol: str = MQTT_SUBPROTOCOL) -> OpenedStream:
    """Connect as ``config`` says and hand the transport to ``protocol`` (no ``connection_made`` call:
    the caller takes the returned transport); a WebSocket offers ``subprotocol`` (``mqtt``, or
    ``AMQPWSB10`` for AMQP). EndpointUnavailable for every failure, ProxyRefusedError
    when the proxy refuses; the transport is closed then."""
    loop = asyncio.get_running_loop()
    proxy = config.proxy if config.transport is UpstreamTransport.WEBSOCKETS else None
    reader = _HandshakeReader()
    try:
        # Reading the system and UpstreamCaFile CAs is blocking file I/O: off the loop.
        context = None
        if config.tls or (proxy is not None and proxy.tls):
            context = await loop.run_in_executor(None, tls_context, config.ca_file, config.ca_pem)
        async with asyncio.timeout(config.connect_timeout):
            if proxy is not None:
                transport = await _through_proxy(config, proxy, reader, context)
            else:
                await _connect(config.host, config.port, reader, context if config.tls else None)
                transport = _transport_of(reader)
            websocket = None
            if config.transport is UpstreamTransport.WEBSOCKETS:
                websocket = await _upgrade(config, transport, reader, subprotocol)
    except TimeoutError:
        _drop(reader)
        raise EndpointUnavailable(f"cannot connect to {config.url}: timed out") from None
    except EndpointUnavailable:
        _drop(reader)
        raise
    except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake or verification failed
        _drop(reader)
        raise EndpointUnavailable(f"cannot connect to {config.url}: {exc}") from exc
    except BaseException:
        _drop(reader)
        raise
    early = reader.take()
    transport.set_protocol(protocol)
    return OpenedStream(transport, websocket, early)


async def _connect(host: str, port: int, reader: _HandshakeReader, context: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: reader, host, port, ssl=context,
                                 server_hostname=host if context is not None else None)


def _transport_of(reader: _HandshakeReader) -> asyncio.Transport:
    if reader.transport is None:
        raise EndpointUnavailable("the connection closed during the handshake")
    return reader.transport


async def _through_proxy(
    config: UpstreamConfig, proxy: HttpsProxy, reader: _HandshakeReader, context: ssl.SSLContext | None,
) -> asyncio.Transport:
    """TCP (or TLS, for an https:// proxy) to the proxy, CONNECT, then TLS to the parent in the tunnel."""
    try:
        await _connect(proxy.host, proxy.port, reader, context if proxy.tls else None)
    except (OSError, ValueError) as exc:
        raise EndpointUnavailable(f"cannot connect to the proxy {proxy.display}: {exc}") from exc
    transport = _transport_of(reader)
    transport.write(proxy.connect_request(config.host, config.port))
    head = await reader.read_head(f"the proxy {proxy.display}")
    proxy.check_connect(head, config.host, config.port)  # ProxyRefusedError: the link logs it once
    if reader.take():
        raise EndpointUnavailable(f"the proxy {proxy.display} sent data before the tunnel was used")
    log.debug("upstream: the proxy %s opened a tunnel to %s:%d", proxy.display, config.host, config.port)
    if not config.tls:
        return transport
    assert context is not None
    loop = asyncio.get_running_loop()
    tunnelled = await loop.start_tls(transport, reader, context, server_hostname=config.host)
    if tunnelled is None:  # only when the transport closed meanwhile
        raise EndpointUnavailable(f"the proxy {proxy.display} closed the tunnel")
    reader.transport = tunnelled
    return tunnelled


async def _upgrade(config: UpstreamConfig, transport: asyncio.Transport,
                   reader: _HandshakeReader, subprotocol: str) -> WebSocketClient:
    key = new_key()
    transport.write(upgrade_request(config.host, config.port, config.websocket_path, key, tls=config.tls,
                                    subprotocol=subprotocol))
    head = await reader.read_head(f"{config.url}")
    try:
        check_upgrade(head, key, subprotocol)
    except WebSocketError as exc:
        raise EndpointUnavailable(f"{config.url}: {exc}") from None
    return WebSocketClient()


def _drop(reader: _HandshakeReader) -> None:
    if reader.transport is not None:
        reader.transport.abort()

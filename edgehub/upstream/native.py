"""One MQTT 3.1.1 connection to the parent over TCP, TLS or WebSocket: asyncio glue over edgehub.mqtt.client.

Owns the transport (transport.py opens it), PUBACK and SUBACK futures, the keep-alive timer and write batching
for ONE connection lifetime; the protocol rules are the client session's. It never retries, reconnects, renews
tokens or decides what to send (MqttUpstream does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.mqtt.client import (
    KEEP_ALIVE_TIMEOUT,
    ClientEvent,
    ClientPhase,
    ConnectionAccepted,
    ConnectionRefused,
    MessageReceived,
    MqttClientSession,
    PublishesAcked,
    SessionClosed,
    Subscribed,
)
from edgehub.mqtt.session_rules import PacketIdsExhaustedError
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.connection import IncomingPublish, OnMessage, wait_granted
from edgehub.upstream.transport import open_stream, receive_websocket
from edgehub.upstream.websocket import WebSocketClient

log = logging.getLogger(__name__)

_TICKS_PER_KEEPALIVE: Final = 4
_CLOSE_GRACE: Final = 1.0
"""Seconds ``close`` waits for the DISCONNECT to leave before dropping the socket."""

KEEPALIVE_LOST: Final = KEEP_ALIVE_TIMEOUT


class NativeMqttConnection(asyncio.Protocol):
    """``UpstreamConnection`` on the sans-I/O client session, over TCP, TLS or WebSocket
    (``config.transport``), through ``config.proxy`` for WebSocket.

    Publishes issued in one loop turn leave in one ``transport.write`` (flushed by ``call_soon``; one
    WebSocket frame over WebSocket); a run of PUBACKs is settled straight from the bytes. While the
    transport is paused, output accumulates in the session (bounded by the endpoint's byte window) and
    leaves on ``resume_writing``. The session is persistent (CleanSession=0, as the Azure IoT device SDKs
    connect), so the parent keeps the subscriptions and redelivers unacknowledged messages [MQTT-4.4.0-1].
    """

    def __init__(self, config: UpstreamConfig, password: str, on_message: OnMessage) -> None:
        self._config = config
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        credentials = config.credentials
        self._session = MqttClientSession(
            credentials.client_id, username=credentials.username, password=password.encode(),
            keep_alive=config.keepalive, clean_start=False,
        )
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._subscribing: dict[int, asyncio.Future[list[int]]] = {}
        self._transport: asyncio.Transport | None = None
        self._websocket: WebSocketClient | None = None
        self._flush_scheduled = False
        self._paused = False
        self._keepalive: asyncio.TimerHandle | None = None
        self._open = False
        self._closing = False
        self._finished = False

    # -- UpstreamConnection ----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        try:
            stream = await open_stream(self._config, self)
            if self._finished:  # aborted while connecting
                stream.transport.abort()
                raise EndpointUnavailable(f"{self._config.url}: {self._closed.result()}")
            self._transport, self._websocket = stream.transport, stream.websocket
            self._session.connect(self._loop.time())
            self._flush(force=True)
            if stream.early:
                self.data_received(stream.early)
            async with asyncio.timeout(self._config.connect_timeout):
                await asyncio.shield(self._connack)
        except TimeoutError:
            self._finish("no CONNACK")
            raise EndpointUnavailable(f"{self._config.url} sent no CONNACK") from None
        except BaseException:
            self._finish("connect failed")
            raise
        self._open = True
        self._schedule_keepalive()

    async def subscribe(self, filters: Sequence[str]) -> list[int]:
        if not self._open:
            raise EndpointUnavailable("upstream connection is closed")
        if not filters:
            return []  # a SUBSCRIBE needs at least one filter [MQTT-3.8.3-3]
        try:
            packet_id = self._session.subscribe(filters)
        except PacketIdsExhaustedError as exc:
            raise EndpointUnavailable(str(exc)) from None
        granted: asyncio.Future[list[int]] = self._loop.create_future()
        self._subscribing[packet_id] = granted
        self._schedule_flush()
        try:
            return await wait_granted(granted, self._closed, self._config.connect_timeout)
        finally:
            self._subscribing.pop(packet_id, None)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        acked: asyncio.Future[bool] = self._loop.create_future()
        if not self._open:
            acked.set_result(False)
            return acked
        try:
            packet_id = self._session.publish(topic, payload)
        except PacketIdsExhaustedError:
            acked.set_result(False)
            return acked
        self._pending[packet_id] = acked
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return acked

    def ack(self, mid: int) -> None:
        if self._open:
            self._session.ack(mid)
            self._schedule_flush()

    def abort(self, reason: str) -> None:
        self._finish(reason)

    async def close(self) -> None:
        try:
            transport = self._transport
            if self._open and transport is not None:
                self._open = False
                self._closing = True
                self._session.disconnect()  # then close the connection [MQTT-3.14.4-1]
                self._flush(force=True)
                if self._websocket is not None:
                    transport.write(self._websocket.close_frame())  # RFC 6455 §7.1.2
                transport.close()
                async with asyncio.timeout(_CLOSE_GRACE):
                    await asyncio.shield(self._closed)
        except TimeoutError:
            pass  # the DISCONNECT did not leave in time: the socket is dropped below
        finally:
            self._finish("closed by the hub")

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Not called: open_stream hands the transport over with ``set_protocol``."""

    def data_received(self, data: bytes) -> None:
        if self._websocket is not None:
            data, ended = receive_websocket(self._websocket, data, self._transport)
            if ended is not None:
                if ended.startswith("protocol error"):
                    log.warning("upstream: %s; dropping the connection", ended)
                self._finish(ended)
                return
            if not data:
                return
        events = self._session.receive_data(data, self._loop.time())
        if len(events) == 1 and type(events[0]) is PublishesAcked:
            self._settle(events[0].packet_ids)  # the hot path: nothing but PUBACKs
        else:
            for event in events:
                self._handle(event)
        if self._session.has_data_to_send:
            self._schedule_flush()

    def eof_received(self) -> bool:
        return False  # the parent closed its side: close ours too

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._closing:
            self._finish("closed by the hub")
        else:
            self._finish("connection lost" if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._session.has_data_to_send:
            self._flush()

    # -- incoming events -------------------------------------------------------------------------

    def _settle(self, packet_ids: list[int]) -> None:
        pending = self._pending
        for packet_id in packet_ids:
            acked = pending.pop(packet_id, None)
            if acked is not None and not acked.done():
                acked.set_result(True)

    def _handle(self, event: ClientEvent) -> None:
        if type(event) is PublishesAcked:
            self._settle(event.packet_ids)
        elif type(event) is MessageReceived:
            try:
                self._on_message(IncomingPublish(event.topic, event.payload, event.packet_id, event.qos))
            except Exception:
                log.exception("upstream: handling an incoming message failed")
        elif type(event) is Subscribed:
            granted = self._subscribing.get(event.packet_id)
            if granted is not None and not granted.done():
                granted.set_result(list(event.return_codes))
        elif type(event) is ConnectionAccepted:
            if not self._connack.done():
                self._connack.set_result(None)
        elif type(event) is ConnectionRefused:
            self._refused(event)
        elif type(event) is SessionClosed:
            if event.reason.startswith("protocol error"):
                log.warning("upstream: the parent broke MQTT (%s); dropping the connection", event.reason)
            elif event.reason == KEEPALIVE_LOST:
                log.warning("upstream: nothing from %s for 1.5 keep-alives (%d s); connection lost",
                            self._config.url, self._config.keepalive)
            self._finish(event.reason)

    def _refused(self, event: ConnectionRefused) -> None:
        if self._connack.done():
            return
        code = event.return_code
        if event.credentials:
            self._connack.set_exception(AuthError(f"{self._config.url} refused the credentials: {code}"))
        else:
            refused = EndpointUnavailable(f"{self._config.url} refused: return code {code}")
            self._connack.set_exception(refused)

    # -- output ----------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Everything queued in this loop turn leaves in one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self, force: bool = False) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None or (self._paused and not force):
            return
        data = self._session.data_to_send(self._loop.time())
        if not data:
            return
        websocket = self._websocket
        transport.write(data if websocket is None else websocket.send(data))

    # -- keep-alive and the end ------------------------------------------------------------------

    def _schedule_keepalive(self) -> None:
        self._keepalive = self._loop.call_later(
            self._config.keepalive / _TICKS_PER_KEEPALIVE, self._check_keepalive
        )

    def _check_keepalive(self) -> None:
        """PINGREQ when idle either way; lost after 1.5 keep-alives without a byte [MQTT-3.1.2-24]."""
        for event in self._session.tick(self._loop.time()):
            self._handle(event)
        if self._finished:
            return
        if self._session.has_data_to_send:
            self._flush(force=True)  # a PINGREQ goes out even while the transport is paused
        self._schedule_keepalive()

    def _finish(self, reason: str) -> None:
        """End this connection for good: drop the transport, settle every future."""
        if self._finished:
            return
        self._finished = True
        self._open = False
        if self._session.phase is not ClientPhase.CLOSED:
            self._session.connection_lost()
        if self._keepalive is not None:
            self._keepalive.cancel()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        for acked in self._pending.values():
            if not acked.done():
                acked.set_result(False)
        self._pending.clear()
        if not self._connack.done():
            self._connack.set_exception(EndpointUnavailable(f"{self._config.url}: {reason}"))
            self._connack.exception()  # retrieved: open() may not be waiting any more
        if not self._closed.done():
            self._closed.set_result(reason)

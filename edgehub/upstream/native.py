"""One MQTT 3.1.1 connection to the parent over TCP or TLS: an asyncio Protocol over edgehub.mqtt.

Owns CONNECT/CONNACK, SUBSCRIBE, packet identifiers, PUBACK futures, keep-alive and write batching for ONE
connection lifetime; it never retries, reconnects, renews tokens or decides what to send (MqttUpstream does).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from typing import Final, cast

from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode, encode_publish
from edgehub.mqtt.packets import (
    MQTT_311,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Packet,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from edgehub.mqtt.wire import MAX_REMAINING_LENGTH, MqttError
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.connection import (
    QOS_AT_LEAST_ONCE,
    IncomingPublish,
    OnMessage,
    tls_context,
    wait_granted,
)

log = logging.getLogger(__name__)

_REFUSED_CREDENTIALS: Final = frozenset(
    {ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD, ConnectReturnCode.NOT_AUTHORIZED}
)
"""CONNACK return codes 4 and 5 [MQTT-3.2.2.3]: the parent refused who we are, not the connection."""

_PUBACK: Final = struct.Struct(">I")
_PUBACK_WORD: Final = 0x4002_0000
"""A PUBACK is always these 2 bytes (type 4, flags 0, Remaining Length 2) then the packet id [MQTT-3.4.1]."""
_PINGREQ: Final = b"\xc0\x00"  # [MQTT-3.12.1]
_DISCONNECT: Final = b"\xe0\x00"  # [MQTT-3.14.1]
_MAX_PACKET_ID: Final = 65_535
_MAX_TOPIC_BYTES: Final = 65_535  # a UTF-8 string's two-byte length [MQTT-1.5.3]

_PING_AFTER: Final = 0.75
"""Idle fraction of the keep-alive after which a PINGREQ goes out, so one is sent in time [MQTT-3.1.2-23]."""
_LOST_AFTER: Final = 1.5
"""Read silence, in keep-alives, that counts as a lost parent (the server's own rule, [MQTT-3.1.2-24])."""
_TICKS_PER_KEEPALIVE: Final = 4
_CLOSE_GRACE: Final = 1.0
"""Seconds ``close`` waits for the DISCONNECT to leave before dropping the socket."""

KEEPALIVE_LOST: Final = "connection lost: Keep alive timeout"


class NativeMqttConnection(asyncio.Protocol):
    """``UpstreamConnection`` without paho: the codec's bytes on an asyncio transport.

    Publishes issued in one loop turn leave in one ``transport.write`` (flushed by ``call_soon``);
    a run of PUBACKs is settled straight from the bytes. While the transport is paused, output
    accumulates (bounded by the endpoint's byte window) and leaves on ``resume_writing``.
    The session is persistent (CleanSession=0, as the Azure IoT device SDKs connect), so the parent
    keeps the subscriptions and redelivers unacknowledged messages on reconnect [MQTT-4.4.0-1].
    """

    def __init__(self, config: UpstreamConfig, password: str, on_message: OnMessage) -> None:
        self._config = config
        self._password = password
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._subscribing: dict[int, asyncio.Future[list[int]]] = {}
        self._last_id = 0
        self._decoder = Decoder(version=MQTT_311)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._paused = False
        self._last_in = self._last_out = 0.0
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
            await self._connect()
            self._send_now(self._connect_packet())
            async with asyncio.timeout(self._config.connect_timeout):
                await asyncio.shield(self._connack)
        except TimeoutError:
            self._finish("no CONNACK")
            raise EndpointUnavailable(f"{self._config.url} sent no CONNACK") from None
        except BaseException:
            self._finish("connect failed")
            raise
        self._open = True
        self._last_in = self._last_out = self._loop.time()
        self._schedule_keepalive()

    async def subscribe(self, filters: Sequence[str]) -> list[int]:
        if not self._open:
            raise EndpointUnavailable("upstream connection is closed")
        if not filters:
            return []  # a SUBSCRIBE needs at least one filter [MQTT-3.8.3-3]
        packet_id = self._next_packet_id()
        granted: asyncio.Future[list[int]] = self._loop.create_future()
        self._subscribing[packet_id] = granted
        subscriptions = tuple(Subscription(topic, QOS_AT_LEAST_ONCE) for topic in filters)
        self._send(encode(Subscribe(packet_id, subscriptions)))
        try:
            return await wait_granted(granted, self._closed, self._config.connect_timeout)
        finally:
            self._subscribing.pop(packet_id, None)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        acked: asyncio.Future[bool] = self._loop.create_future()
        if not self._open:
            acked.set_result(False)
            return acked
        _check_publishable(topic, payload)
        packet_id = self._last_id % _MAX_PACKET_ID + 1
        if packet_id in self._pending or packet_id in self._subscribing:
            packet_id = self._next_packet_id()
        self._last_id = packet_id
        self._pending[packet_id] = acked
        self._send(encode_publish(topic, payload, QOS_AT_LEAST_ONCE, packet_id))
        return acked

    def ack(self, mid: int) -> None:
        if self._open:
            self._send(_PUBACK.pack(_PUBACK_WORD | mid))  # [MQTT-4.3.2-2]

    def abort(self, reason: str) -> None:
        self._finish(reason)

    async def close(self) -> None:
        try:
            transport = self._transport
            if self._open and transport is not None:
                self._open = False
                self._closing = True
                self._send_now(_DISCONNECT)  # then close the connection [MQTT-3.14.4-1]
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
        # A stream transport: create_connection made it (uvloop's does not subclass asyncio.Transport).
        stream = cast(asyncio.Transport, transport)
        if self._finished:
            stream.abort()
            return
        self._transport = stream

    def data_received(self, data: bytes) -> None:
        self._last_in = self._loop.time()
        if not self._decoder.buffered:
            data = self._settle_pubacks(data)
            if not data:
                return
        try:
            packets = self._decoder.feed(data)
        except MqttError as exc:
            log.warning("upstream: the parent sent a malformed packet (%s); dropping the connection", exc)
            self._finish(f"protocol error: {exc}")
            return
        for packet in packets:
            self._dispatch(packet)

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
        if self._out:
            self._flush()

    # -- connecting ------------------------------------------------------------------------------

    async def _connect(self) -> None:
        config = self._config
        try:
            # Reading the system and UpstreamCaFile CAs is blocking file I/O: off the loop.
            context = None
            if config.tls:
                context = await self._loop.run_in_executor(None, tls_context, config.ca_file)
            async with asyncio.timeout(config.connect_timeout):
                await self._loop.create_connection(
                    lambda: self, config.host, config.port,
                    ssl=context, server_hostname=config.host if context is not None else None,
                )
        except TimeoutError:
            raise EndpointUnavailable(f"cannot connect to {config.url}: timed out") from None
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake or verification failed
            raise EndpointUnavailable(f"cannot connect to {config.url}: {exc}") from exc

    def _connect_packet(self) -> bytes:
        credentials = self._config.credentials
        return encode(Connect(
            MQTT_311, credentials.client_id, clean_start=False, keep_alive=self._config.keepalive,
            username=credentials.username, password=self._password.encode(),
        ))

    # -- incoming packets ------------------------------------------------------------------------

    def _settle_pubacks(self, data: bytes) -> bytes:
        """Settle the leading run of PUBACKs straight from the bytes; what follows them."""
        pos = 0
        end = len(data) - 3
        pending = self._pending
        unpack = _PUBACK.unpack_from
        while pos < end:
            (word,) = unpack(data, pos)
            if word >> 16 != 0x4002:
                break
            acked = pending.pop(word & 0xFFFF, None)
            if acked is not None and not acked.done():
                acked.set_result(True)
            pos += 4
        return data[pos:] if pos else data

    def _dispatch(self, packet: Packet) -> None:
        if type(packet) is PubAck:
            self._settle(packet.packet_id)
        elif type(packet) is Publish:
            self._received(packet)
        elif type(packet) is SubAck:
            self._subscribed(packet)
        elif type(packet) is ConnAck:
            self._connected(packet)
        elif type(packet) is not PingResp:
            # A server sends no CONNECT, SUBSCRIBE, PINGREQ... to a client [MQTT-4.8.0-1].
            self._finish(f"protocol error: unexpected {type(packet).__name__}")

    def _settle(self, packet_id: int) -> None:
        acked = self._pending.pop(packet_id, None)
        if acked is not None and not acked.done():
            acked.set_result(True)

    def _received(self, packet: Publish) -> None:
        if packet.qos > QOS_AT_LEAST_ONCE:
            # Never above the granted QoS 1 [MQTT-3.8.4-6]; a PUBACK would not complete a QoS 2 flow.
            self._finish("protocol error: QoS 2 PUBLISH on a QoS 1 subscription")
            return
        try:
            self._on_message(IncomingPublish(packet.topic, packet.payload, packet.packet_id, packet.qos))
        except Exception:
            log.exception("upstream: handling an incoming message failed")

    def _subscribed(self, packet: SubAck) -> None:
        granted = self._subscribing.get(packet.packet_id)
        if granted is not None and not granted.done():
            granted.set_result(list(packet.reason_codes))

    def _connected(self, packet: ConnAck) -> None:
        if self._connack.done():
            self._finish("protocol error: a second CONNACK")  # [MQTT-3.2.0-1]: only the first packet
            return
        code = packet.reason_code
        if code == ConnectReturnCode.ACCEPTED:
            self._connack.set_result(None)
        elif code in _REFUSED_CREDENTIALS:
            self._connack.set_exception(AuthError(f"{self._config.url} refused the credentials: {code}"))
        else:
            refused = EndpointUnavailable(f"{self._config.url} refused: return code {code}")
            self._connack.set_exception(refused)

    # -- output ----------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """Queue ``data``; everything queued in this loop turn leaves in one write."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _send_now(self, data: bytes) -> None:
        self._out.append(data)
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        self._flush_scheduled = False
        out = self._out
        transport = self._transport
        if not out or transport is None or (self._paused and not force):
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        self._last_out = self._loop.time()

    def _next_packet_id(self) -> int:
        """The next identifier not in use by an unacknowledged PUBLISH or SUBSCRIBE [MQTT-2.3.1-2]."""
        packet_id = self._last_id
        for _ in range(_MAX_PACKET_ID):
            packet_id = packet_id % _MAX_PACKET_ID + 1
            if packet_id not in self._pending and packet_id not in self._subscribing:
                self._last_id = packet_id
                return packet_id
        raise EndpointUnavailable("all 65535 packet identifiers are awaiting acknowledgement")

    # -- keep-alive and the end ------------------------------------------------------------------

    def _schedule_keepalive(self) -> None:
        self._keepalive = self._loop.call_later(
            self._config.keepalive / _TICKS_PER_KEEPALIVE, self._check_keepalive
        )

    def _check_keepalive(self) -> None:
        """PINGREQ when idle either way; lost after 1.5 keep-alives without a byte [MQTT-3.1.2-24]."""
        now = self._loop.time()
        keepalive = self._config.keepalive
        if now - self._last_in > _LOST_AFTER * keepalive:
            log.warning("upstream: nothing from %s for %.1f s; connection lost", self._config.url,
                        now - self._last_in)
            self._finish(KEEPALIVE_LOST)
            return
        if now - self._last_out >= _PING_AFTER * keepalive or now - self._last_in >= _PING_AFTER * keepalive:
            self._send_now(_PINGREQ)  # [MQTT-3.1.2-23]
        self._schedule_keepalive()

    def _finish(self, reason: str) -> None:
        """End this connection for good: drop the transport, settle every future."""
        if self._finished:
            return
        self._finished = True
        self._open = False
        if self._keepalive is not None:
            self._keepalive.cancel()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        self._out.clear()
        for acked in self._pending.values():
            if not acked.done():
                acked.set_result(False)
        self._pending.clear()
        if not self._connack.done():
            self._connack.set_exception(EndpointUnavailable(f"{self._config.url}: {reason}"))
            self._connack.exception()  # retrieved: open() may not be waiting any more
        if not self._closed.done():
            self._closed.set_result(reason)


def _check_publishable(topic: str, payload: bytes) -> None:
    """ValueError for what a PUBLISH cannot carry, before it gets a packet id."""
    if not topic or "+" in topic or "#" in topic:
        # [MQTT-4.7.3-1], [MQTT-3.3.2-2]
        raise ValueError("Publish topic must be non-empty, without wildcards")
    if len(topic) * 3 > _MAX_TOPIC_BYTES and len(topic.encode()) > _MAX_TOPIC_BYTES:
        raise ValueError("Publish topic is too long.")
    if len(payload) + len(topic) * 3 + 4 > MAX_REMAINING_LENGTH:
        raise ValueError("Publish payload is too large.")

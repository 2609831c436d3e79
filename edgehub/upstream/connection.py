"""One MQTT 3.1.1 connection to the parent: paho-mqtt's client driven by the asyncio loop (external-loop API).

Owns socket registration, CONNECT/CONNACK, SUBSCRIBE, PUBACK futures and manual PUBACKs for ONE
connection lifetime; it never retries, reconnects, renews tokens or decides what to send (MqttUpstream does).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.upstream.config import UpstreamConfig, UpstreamTransport

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE: Final = 1
SUBACK_FAILURE: Final = 0x80
"""[MQTT-3.9.3] return code of a refused subscription in a SUBACK."""

_REFUSED_CREDENTIALS: Final = frozenset({134, 135})
"""CONNACK 4 (bad user name or password) and 5 (not authorized) [MQTT-3.2.2.3], as paho's MQTT 5 codes."""

_UNSPECIFIED_ERROR: Final = 0x80
"""The reason paho gives a lost socket (MQTT_ERR_CONN_LOST) in ``on_disconnect``."""

_CLOSE_GRACE: Final = 1.0
"""Seconds ``close`` waits for the DISCONNECT packet to leave before dropping the socket."""

_MISC_INTERVAL: Final = 1.0
"""How often paho's keep-alive bookkeeping (``loop_misc``) runs: PINGREQ when idle, loss when no PINGRESP."""


@dataclass(frozen=True, slots=True)
class IncomingPublish:
    """A PUBLISH the parent sent; QoS 1 ones are acknowledged only by ``UpstreamConnection.ack``."""

    topic: str
    payload: bytes = field(repr=False)
    mid: int
    qos: int


class UpstreamConnection(Protocol):
    """What MqttUpstream needs of one connection: NativeMqttConnection, MqttConnection or a test fake."""

    @property
    def is_open(self) -> bool:
        """Connected (CONNACK accepted) and not closed since."""
        ...

    async def open(self) -> None:
        """Connect and wait for the CONNACK. Raises AuthError when the parent refuses the
        credentials, EndpointUnavailable for every other failure; never retries."""
        ...

    async def subscribe(self, filters: Sequence[str]) -> list[int]:
        """Subscribe at QoS 1; the granted QoS (or 0x80, refused) per filter."""
        ...

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        """Send a QoS 1 PUBLISH now (call order is wire order). The future becomes True on
        its PUBACK, False when the connection ends first. Raises ValueError for a topic or
        payload MQTT cannot carry."""
        ...

    def ack(self, mid: int) -> None:
        """PUBACK an incoming QoS 1 message (no-op once closed)."""
        ...

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without DISCONNECT (the parent then redelivers
        what it did not get a PUBACK for)."""
        ...

    async def close(self) -> None:
        """DISCONNECT cleanly (bounded wait) and release everything; idempotent."""
        ...

    async def wait_closed(self) -> str:
        """Wait until the connection ended; why it ended."""
        ...


OnMessage = Callable[[IncomingPublish], None]


class MqttConnection:
    """A paho ``Client`` for one connection, its socket watched by the running asyncio loop.

    paho's ``connect`` is blocking (TCP, TLS and WebSocket handshakes), so it runs in a worker
    thread; the socket callbacks it makes from there are handed to the loop thread. Everything
    after the handshake runs on the loop: ``loop_read`` when the socket is readable,
    ``loop_write`` while paho has bytes to send, ``loop_misc`` every second for keep-alive.

    The session is persistent (CleanSession=0, as the Azure IoT device SDKs connect), so the
    parent keeps the subscriptions and redelivers unacknowledged devicebound/input messages
    when the link comes back [MQTT-4.4.0-1]. A fresh paho client is used per connection: what
    was in flight upstream on a lost connection is sent again by the pump, not by paho.
    """

    def __init__(self, config: UpstreamConfig, password: str, on_message: OnMessage) -> None:
        self._config = config
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._subscribing: dict[int, asyncio.Future[list[int]]] = {}
        self._fd: int | None = None
        self._misc: asyncio.Task[None] | None = None
        self._open = False
        self._finished = False
        self._client = self._make_client(password)

    # -- UpstreamConnection ----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        connecting = self._loop.run_in_executor(None, self._connect_blocking)
        try:
            # Shielded: a cancelled open must still release the socket the thread may yet create.
            rc = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            connecting.add_done_callback(self._abandon)
            raise
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS or WebSocket handshake failed
            self._finish(f"connect failed: {exc}")
            raise EndpointUnavailable(f"cannot connect to {self._config.url}: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._finish(f"connect failed: {paho.error_string(rc)}")
            raise EndpointUnavailable(f"cannot connect to {self._config.url}: {paho.error_string(rc)}")
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                await asyncio.shield(self._connack)
        except TimeoutError:
            self._finish("no CONNACK")
            raise EndpointUnavailable(f"{self._config.url} sent no CONNACK") from None
        except BaseException:
            self._finish("connect failed")
            raise
        self._open = True

    async def subscribe(self, filters: Sequence[str]) -> list[int]:
        if not self._open:
            raise EndpointUnavailable("upstream connection is closed")
        rc, mid = self._client.subscribe([(topic, QOS_AT_LEAST_ONCE) for topic in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise EndpointUnavailable(f"subscribe failed: {paho.error_string(rc)}")
        granted: asyncio.Future[list[int]] = self._loop.create_future()
        self._subscribing[mid] = granted
        try:
            return await wait_granted(granted, self._closed, self._config.connect_timeout)
        finally:
            self._subscribing.pop(mid, None)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        acked: asyncio.Future[bool] = self._loop.create_future()
        if not self._open:
            acked.set_result(False)
            return acked
        info = self._client.publish(topic, payload, qos=QOS_AT_LEAST_ONCE)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            acked.set_result(False)
        else:
            self._pending[info.mid] = acked
        return acked

    def ack(self, mid: int) -> None:
        if self._open:
            self._client.ack(mid, QOS_AT_LEAST_ONCE)

    def abort(self, reason: str) -> None:
        self._finish(reason)

    async def close(self) -> None:
        try:
            if self._open:
                # paho closes the socket right after writing DISCONNECT [MQTT-3.14.4-1].
                self._client.disconnect()
                async with asyncio.timeout(_CLOSE_GRACE):
                    await asyncio.shield(self._closed)
        except TimeoutError:
            pass  # the DISCONNECT did not leave in time: the socket is dropped below
        finally:
            self._finish("closed by the hub")

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed)

    # -- paho client and its callbacks -----------------------------------------------------------

    def _make_client(self, password: str) -> paho.Client:
        config = self._config
        credentials = config.credentials
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=credentials.client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            transport="websockets" if config.transport is UpstreamTransport.WEBSOCKETS else "tcp",
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.username_pw_set(credentials.username, password)
        if config.transport is UpstreamTransport.WEBSOCKETS:
            client.ws_set_options(path=config.websocket_path)
        # paho's own window is off: with one, every PUBACK costs a scan of all in-flight
        # messages (Client._update_inflight). The pump's batches in flight bound the count,
        # UpstreamEndpoint's byte window the bytes.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.connect_timeout = config.connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_paho_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    def _connect_blocking(self) -> MQTTErrorCode:
        """Runs in a worker thread: TLS context (reads CA files), then paho's blocking connect."""
        config = self._config
        context = _TlsContext(config.ca_file) if config.tls else None
        if context is not None:
            self._client.tls_set_context(context)
        try:
            rc: MQTTErrorCode = self._client.connect(config.host, config.port, keepalive=config.keepalive)
        except BaseException:
            if context is not None:
                context.close_wrapped()  # paho leaves a socket whose handshake failed to the GC
            raise
        if context is not None:
            context.wrapped.clear()  # paho owns the connected socket now
        return rc

    def _abandon(self, connecting: asyncio.Future[MQTTErrorCode]) -> None:
        """The open was cancelled and the connect thread is done now: release what it made."""
        if not connecting.cancelled():
            connecting.exception()  # retrieved: nobody else will look
        self._finish("connect cancelled")
        self._release_socket()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._connack.done():
            return
        if not reason.is_failure:
            self._connack.set_result(None)
        elif reason.value in _REFUSED_CREDENTIALS:
            self._connack.set_exception(AuthError(f"{self._config.url} refused the credentials: {reason}"))
        else:
            self._connack.set_exception(EndpointUnavailable(f"{self._config.url} refused: {reason}"))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            self._finish(f"the parent disconnected: {reason}")
        elif reason.value == _UNSPECIFIED_ERROR:
            self._finish("connection lost")  # paho's name for a closed or failed socket
        else:
            self._finish(f"connection lost: {reason}")  # keep alive timeout, protocol error

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        acked = self._pending.pop(mid, None)
        if acked is not None and not acked.done():
            acked.set_result(True)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        granted = self._subscribing.get(mid)
        if granted is not None and not granted.done():
            granted.set_result([int(reason.value) for reason in reasons])

    def _on_paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("upstream: dropped a message whose topic is not UTF-8")
            topic = ""
        try:
            self._on_message(IncomingPublish(topic, bytes(message.payload), message.mid, message.qos))
        except Exception:
            log.exception("upstream: handling an incoming message failed")

    # Socket callbacks: paho calls the first two from the connect thread too.

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._register, sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._watch_writable)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch_writable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unregister)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _register(self, sock: Any) -> None:
        if self._finished:
            return
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._readable)
        self._misc = self._loop.create_task(self._keepalive(), name="upstream keepalive")

    def _unregister(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None

    def _watch_writable(self) -> None:
        if self._fd is not None and self._client.want_write():
            self._loop.add_writer(self._fd, self._writable)

    def _unwatch_writable(self) -> None:
        if self._fd is not None:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        client = self._client
        rc = client.loop_read()
        # A TLS socket may hold decrypted bytes the selector cannot see (paho issue #131).
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and _pending_bytes(client.socket()) > 0:
            rc = client.loop_read()

    def _writable(self) -> None:
        self._client.loop_write()

    async def _keepalive(self) -> None:
        while not self._finished:
            await asyncio.sleep(_MISC_INTERVAL)
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return

    def _finish(self, reason: str) -> None:
        """End this connection for good: unwatch and close the socket, settle every future."""
        if self._finished:
            return
        self._finished = True
        self._open = False
        client = self._client
        # Detach first: paho's __del__ closes its socket again and must not call back into a loop.
        client.on_socket_open = client.on_socket_close = None
        client.on_socket_register_write = client.on_socket_unregister_write = None
        client.on_disconnect = client.on_message = None
        self._release_socket()
        if self._misc is not None and self._misc is not asyncio.current_task():
            self._misc.cancel()
        for acked in self._pending.values():
            if not acked.done():
                acked.set_result(False)
        self._pending.clear()
        if not self._connack.done():
            self._connack.set_exception(EndpointUnavailable(f"{self._config.url}: {reason}"))
            self._connack.exception()  # retrieved: open() may not be waiting any more
        if not self._closed.done():
            self._closed.set_result(reason)

    def _release_socket(self) -> None:
        self._unregister()
        sock = self._client.socket()
        if sock is not None:
            sock.close()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context for the parent: system CAs plus ``ca_file``. Reads files: call it off the loop."""
    return _TlsContext(ca_file)


class _TlsContext(ssl.SSLContext):
    """System CAs plus ``UpstreamCaFile``, TLS 1.2 or later (IoT Hub requires it), host names checked.

    It remembers the sockets it wrapped, so that the link can close one whose handshake failed.
    """

    def __new__(cls, ca_file: Path | None) -> _TlsContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname

    def __init__(self, ca_file: Path | None) -> None:
        self.minimum_version = ssl.TLSVersion.TLSv1_2
        self.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if ca_file is not None:
            self.load_verify_locations(cafile=ca_file)
        self.wrapped: list[ssl.SSLSocket] = []

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.wrapped.append(sock)
        return sock

    def close_wrapped(self) -> None:
        for sock in self.wrapped:
            sock.close()
        self.wrapped.clear()


def _pending_bytes(sock: Any) -> int:
    pending = getattr(sock, "pending", None)
    return int(pending()) if callable(pending) else 0


async def wait_granted(
    granted: asyncio.Future[list[int]], closed: asyncio.Future[Any], limit_secs: float,
) -> list[int]:
    """The SUBACK's granted codes, or EndpointUnavailable when the connection closes or no
    SUBACK comes within ``limit_secs`` (both clients share this)."""
    try:
        async with asyncio.timeout(limit_secs):
            done, _ = await asyncio.wait({granted, closed}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        raise EndpointUnavailable("no SUBACK from the parent") from None
    if granted not in done:
        raise EndpointUnavailable("upstream connection closed while subscribing")
    return granted.result()

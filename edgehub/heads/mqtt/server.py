"""The MQTT head's asyncio glue: one asyncio.Protocol per client around a sans-I/O MqttSession.

Owns sockets, tasks and timing (ingest per read batch, acks after it, delivery windows, ticks);
no protocol rule lives here, every MQTT decision is the session's. A connection runs over any
stream transport: TCP/TLS from ``listen``, or one the HTTP head presents over a WebSocket
(``MqttServer.new_connection``), so both share one path for auth, limits, acks and delivery.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import cast

from edgehub.clock import Clock, SystemClock
from edgehub.errors import EndpointUnavailable, StoreFullError
from edgehub.heads.mqtt.events import (
    Closed,
    Connected,
    DeliveryChanged,
    Event,
    FeedChanged,
    Phase,
    PublishAcked,
    ServiceRequested,
    TelemetryReceived,
    WillReady,
)
from edgehub.heads.mqtt.policy import Authenticator, Authorizer, SessionConfig
from edgehub.heads.mqtt.service_link import ServiceLink
from edgehub.heads.mqtt.session import MqttSession
from edgehub.heads.mqtt.sessions import SessionTable
from edgehub.heads.port import HubPort
from edgehub.iothub.topics import delivery_topic
from edgehub.message import Identity, Message, SystemProperty
from edgehub.metrics import (
    CLIENT_CONNECT_SUCCESS,
    CLIENT_DISCONNECT,
    CONNECTED_CLIENTS,
    MESSAGES_DROPPED,
    record_received,
    record_unacked,
)
from edgehub.mqtt.packets import MQTT_5, NO_PROPERTIES, Properties, ReasonCode
from edgehub.twins.port import (
    ClientPresence,
    MethodPort,
    NoPresence,
    TwinPort,
    UnavailableMethods,
    UnavailableTwins,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Per-connection memory bounds of the glue (docs/architecture.md §1 invariant 6).

    Reading pauses while a connection's received-but-not-yet-acked bytes exceed
    ``max_pending_bytes``; TCP connections that have not sent CONNECT yet are capped
    at ``max_unauthenticated`` on top of MaxConnectedClients.
    """

    max_pending_bytes: int = 4 * 1024 * 1024
    max_unauthenticated: int = 256
    tick_interval: float = 1.0


class _Delivery:
    """One ClientLink.deliver call: which of its messages the client acknowledged."""

    __slots__ = ("acked", "future", "leading", "remaining")

    def __init__(self, count: int, future: asyncio.Future[int]) -> None:
        self.acked = [False] * count
        self.leading = 0
        self.remaining = count
        self.future = future

    def ack(self, index: int) -> None:
        if self.acked[index]:
            return
        self.acked[index] = True
        self.remaining -= 1
        while self.leading < len(self.acked) and self.acked[self.leading]:
            self.leading += 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(len(self.acked))

    def abandon(self) -> None:
        """The connection is gone: report what was acked in order, or that nothing was."""
        if self.future.done():
            return
        if self.leading:
            self.future.set_result(self.leading)
        else:
            self.future.set_exception(EndpointUnavailable("MQTT client disconnected"))


class MqttConnection(asyncio.Protocol):
    """One client connection; also the ClientLink the hub delivers its inputs through."""

    def __init__(self, server: MqttServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.session: MqttSession | None = None
        self.identity: Identity | None = None
        self._attached = False
        self._counted = False
        # inbound: reads waiting for ingest, and the one ingest in flight
        self._pending: list[Message] = []
        self._pending_tokens: list[int] = []
        self._pending_bytes = 0
        self._inflight_bytes = 0
        self._ingest: asyncio.Task[None] | None = None
        self._paused = False
        # outbound: messages waiting for window, and packet id -> (delivery, index)
        self._outbound: deque[tuple[str, bytes, Properties, _Delivery, int]] = deque()
        self._sent: dict[int, tuple[_Delivery, int]] = {}
        self._deliveries: set[_Delivery] = set()
        self._services: ServiceLink | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not subclass asyncio.Transport, so no isinstance check).
        self._transport = transport = cast(asyncio.Transport, transport)
        server = self._server
        if server.closing or server.unauthenticated >= server.limits.max_unauthenticated:
            transport.abort()
            return
        peer_certificates: tuple[bytes, ...] = ()
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            der = ssl_object.getpeercert(binary_form=True)
            peer_certificates = (der,) if der else ()
        self.session = MqttSession(
            server.authenticator, server.table, server.now(), authorizer=server.authorizer,
            config=server.session_config, peer_certificates=peer_certificates,
        )
        server.attach_connection(self)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        events = session.receive_data(data, self._server.now())
        if events:
            self._dispatch(events, len(data))
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is not None:
            self._dispatch(session.connection_lost(self._server.now()), 0)
            self._server.detach_connection(self)
        self._close_outbound()
        if self._pending:
            # Complete PUBLISH packets read before the close are still ingested, as a broker
            # would; QoS 1 ones were not acked, so the client may resend them (at-least-once).
            self._server.track(self._server.ingest_orphans(self._pending))
        self._pending = []
        self._pending_tokens = []

    # --- events from the session -------------------------------------------------------------

    def _dispatch(self, events: list[Event], read_size: int) -> None:
        for event in events:
            if type(event) is TelemetryReceived:
                self._queue_ingest(event, read_size)
            elif type(event) is PublishAcked:
                self._on_publish_acked(event)
            else:
                self._on_rare_event(event)

    def _on_rare_event(self, event: Event) -> None:
        match event:
            case Connected(identity=identity, displaced=displaced):
                self.identity = identity
                self._services = self._server.service_link(self)
                self._counted = True
                CONNECTED_CLIENTS.inc()
                CLIENT_CONNECT_SUCCESS.labels(identity.id).inc()
                if displaced is not None:
                    self._server.take_over(displaced)
            case DeliveryChanged(active=active):
                self._set_attached(active)
            case WillReady(message=message):
                self._server.ingest_will(message)
            case ServiceRequested():
                if self._services is not None:
                    self._services.on_request(event)
            case FeedChanged():
                if self._services is not None:
                    self._services.on_feed(event)
            case Closed(reason=reason):
                log.debug("MQTT connection of %s closing: %s", self.identity, reason)
                if self._counted:
                    self._counted = False
                    CONNECTED_CLIENTS.dec()
                    CLIENT_DISCONNECT.labels(str(self.identity)).inc()
                self._set_attached(False)
                self._close_outbound()
                if self._services is not None:
                    self._services.close()

    def _set_attached(self, active: bool) -> None:
        if self.identity is None or (active == self._attached and not active):
            return
        # Attaching again (a new delivery subscription) wakes the pumps that hold messages for it.
        self._attached = active
        if active:
            self._server.hub.attach(self.identity, self)
        else:
            self._server.hub.detach(self.identity, self)

    def flush(self) -> None:
        """Write what the session queued (also for the twin and method link)."""
        self._flush()

    def _flush(self) -> None:
        session = self.session
        transport = self._transport
        if session is None or transport is None:
            return
        data = session.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
        if session.phase is Phase.CLOSED and not transport.is_closing():
            transport.close()

    # --- inbound: ingest once per read batch, ack after it -----------------------------------

    def _queue_ingest(self, event: TelemetryReceived, read_size: int) -> None:
        self._pending.extend(event.messages)
        self._pending_tokens.append(event.token)
        self._pending_bytes += read_size
        if self._ingest is None:
            self._start_ingest()
        elif (
            not self._paused and self._transport is not None
            and self._pending_bytes + self._inflight_bytes > self._server.limits.max_pending_bytes
        ):
            self._paused = True
            self._transport.pause_reading()

    def _start_ingest(self) -> None:
        messages, tokens = self._pending, self._pending_tokens
        self._pending, self._pending_tokens = [], []
        self._inflight_bytes, self._pending_bytes = self._pending_bytes, 0
        self._ingest = self._server.track(self._run_ingest(messages, tokens))

    async def _run_ingest(self, messages: list[Message], tokens: list[int]) -> None:
        session = self.session
        assert session is not None
        try:
            await self._server.hub.ingest(messages)
        except StoreFullError:
            record_unacked("store_full", messages)
            for token in tokens:
                self._dispatch(session.refuse(token), 0)
        except Exception:
            log.exception("MQTT ingest of %d messages from %s failed; closing unacked",
                          len(messages), self.identity)
            record_unacked("storage_failure", messages)
            self._dispatch(session.close(ReasonCode.UNSPECIFIED_ERROR, "ingest failed"), 0)
        else:
            record_received(messages)
            for token in tokens:
                session.ack(token)
        finally:
            self._ingest = None
            self._inflight_bytes = 0
            self._flush()
            if self._pending and session.phase is Phase.CONNECTED:
                self._start_ingest()
            if self._paused and self._transport is not None and not self._transport.is_closing():
                self._paused = False
                self._transport.resume_reading()

    # --- outbound: ClientLink ----------------------------------------------------------------

    async def deliver(self, input_name: str | None, messages: Sequence[Message]) -> int:
        """Publish ``messages`` at QoS 1 to the module input (or devicebound when None);
        return how many leading ones the client acknowledged (docs/architecture.md §1: checkpoint
        after ack)."""
        session = self.session
        identity = self.identity
        if session is None or identity is None or session.phase is not Phase.CONNECTED:
            raise EndpointUnavailable("MQTT client not connected")
        if not messages:
            return 0
        first_topic = delivery_topic(identity, input_name, messages[0])
        if not session.accepts(first_topic):
            # No granted subscription matches (e.g. the module subscribed to another input
            # only): keep the messages queued until one does, never drop what was acked.
            raise EndpointUnavailable(f"{identity} has no subscription for input {input_name}")
        future: asyncio.Future[int] = self._loop.create_future()
        delivery = _Delivery(len(messages), future)
        self._deliveries.add(delivery)
        v5 = session.version == MQTT_5
        for index, message in enumerate(messages):
            topic = first_topic if index == 0 else delivery_topic(identity, input_name, message)
            props = _v5_properties(message) if v5 else NO_PROPERTIES
            self._outbound.append((topic, message.body, props, delivery, index))
        self._pump_outbound()
        self._flush()
        try:
            return await future
        finally:
            self._deliveries.discard(delivery)

    def _pump_outbound(self) -> None:
        session = self.session
        if session is None:
            return
        outbound = self._outbound
        while outbound and session.publish_window > 0:
            topic, payload, props, delivery, index = outbound.popleft()
            if not session.accepts(topic):
                # No granted subscription matches (e.g. subscribed to another input only).
                MESSAGES_DROPPED.labels("no_subscription", "", "").inc()
                delivery.ack(index)
                continue
            packet_id = session.publish(topic, payload, props)
            if packet_id == 0:
                MESSAGES_DROPPED.labels("too_large_for_client", "", "").inc()
                delivery.ack(index)
            else:
                self._sent[packet_id] = (delivery, index)

    def _on_publish_acked(self, event: PublishAcked) -> None:
        sent = self._sent.pop(event.packet_id, None)
        if sent is None:
            return
        if event.reason_code >= 0x80:
            # MQTT 5: the client refused the message; retrying would loop, so it counts as handled.
            log.debug("MQTT client %s refused packet %d: 0x%02X",
                      self.identity, event.packet_id, event.reason_code)
        sent[0].ack(sent[1])
        if self._outbound:
            self._pump_outbound()

    def _close_outbound(self) -> None:
        self._outbound.clear()
        self._sent.clear()
        for delivery in list(self._deliveries):
            delivery.abandon()

    # --- server-driven -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        session = self.session
        if session is not None:
            self._dispatch(session.tick(now), 0)
            self._flush()

    def end(self, events: list[Event]) -> None:
        """Apply the session's events of a take over or shutdown, then close."""
        self._dispatch(events, 0)
        self._flush()


def _v5_properties(message: Message) -> Properties:
    system = message.system_properties
    content_type = system.get(SystemProperty.CONTENT_TYPE)
    correlation = system.get(SystemProperty.CORRELATION_ID)
    if content_type is None and correlation is None:
        return NO_PROPERTIES
    return Properties(
        content_type=content_type,
        correlation_data=correlation.encode() if correlation is not None else None,
    )


class MqttServer:
    """The listening MQTT head: its connections, their session table and the keep alive ticker."""

    def __init__(
        self, hub: HubPort, authenticator: Authenticator, *, authorizer: Authorizer | None,
        session_config: SessionConfig, max_connected_clients: int, clock: Clock, limits: ServerLimits,
        twins: TwinPort | None = None, methods: MethodPort | None = None,
        presence: ClientPresence | None = None,
    ) -> None:
        self.hub = hub
        self.presence: ClientPresence = presence or NoPresence()
        self.twins: TwinPort = twins or UnavailableTwins()
        self.methods: MethodPort = methods or UnavailableMethods()
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.session_config = session_config
        self.table = SessionTable(max_connected_clients)
        self.clock = clock
        self.limits = limits
        self.closing = False
        self._listeners: list[asyncio.Server] = []
        self._connections: dict[MqttSession, MqttConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self.clock.monotonic()

    @property
    def unauthenticated(self) -> int:
        return len(self._connections) - self.table.connected

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def port(self) -> int:
        """The port of the first listener (the one ``start_mqtt_server`` opened)."""
        port: int = self._listeners[0].sockets[0].getsockname()[1]
        return port

    async def listen(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Open one more listener (e.g. the plaintext port beside the TLS one); all listeners
        share this server's sessions, limits and client-id takeover. Returns the bound port."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            lambda: MqttConnection(self), host, port, ssl=ssl_context, reuse_address=True,
        )
        self._listeners.append(listener)
        self._start_ticking()
        bound: int = listener.sockets[0].getsockname()[1]
        log.info("MQTT head listening on %s:%d (%s)", host, bound, "TLS" if ssl_context else "plain")
        return bound

    def new_connection(self) -> MqttConnection:
        """A connection for a transport this server did not accept itself (MQTT over WebSocket):
        the caller drives its ``connection_made``, ``data_received`` and ``connection_lost`` as
        asyncio does for a TCP one; the transport must support ``pause_reading`` and
        ``resume_reading`` (the pending-bytes bound of ServerLimits relies on them)."""
        self._start_ticking()
        return MqttConnection(self)

    def _start_ticking(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    def attach_connection(self, connection: MqttConnection) -> None:
        assert connection.session is not None
        self._connections[connection.session] = connection

    def detach_connection(self, connection: MqttConnection) -> None:
        if connection.session is not None:
            self._connections.pop(connection.session, None)

    def service_link(self, connection: MqttConnection) -> ServiceLink:
        """The twin and method link of a connection that just connected."""
        assert connection.session is not None
        return ServiceLink(connection.session, self.twins, self.methods,
                           flush=connection.flush, track=self.track, presence=self.presence)

    def take_over(self, displaced: MqttSession) -> None:
        connection = self._connections.get(displaced)
        if connection is not None:
            connection.end(displaced.take_over())

    def track(self, coroutine: Coroutine[None, None, None]) -> asyncio.Task[None]:
        """Run ``coroutine`` as a task that ``wait_closed`` waits for (ingests must finish
        before the hub closes the store)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def ingest_will(self, message: Message) -> None:
        self.track(self._ingest_will(message))

    async def ingest_orphans(self, messages: list[Message]) -> None:
        """Messages of a connection that closed before they were ingested; nobody to ack."""
        try:
            await self.hub.ingest(messages)
        except StoreFullError:
            record_unacked("store_full", messages)
        except Exception:
            log.exception("MQTT ingest of %d messages after their connection closed failed", len(messages))
            record_unacked("storage_failure", messages)
        else:
            record_received(messages)

    async def _ingest_will(self, message: Message) -> None:
        try:
            await self.hub.ingest([message])
        except StoreFullError:
            record_unacked("store_full", [message])
            log.warning("MQTT will of %s dropped: store full", message.source)
        except Exception:
            log.exception("MQTT will of %s could not be ingested", message.source)

    async def _tick_forever(self) -> None:
        interval = self.limits.tick_interval
        while True:
            await self.clock.sleep(interval)
            now = self.now()
            try:
                for connection in list(self._connections.values()):
                    connection.tick(now)
                self.table.expire(now)
            except Exception:
                log.exception("MQTT keep alive tick failed; ticking on")

    def close(self) -> None:
        """Stop accepting, tell every client the server is going (v5 DISCONNECT 0x8B), close."""
        if self.closing:
            return
        self.closing = True
        for listener in self._listeners:
            listener.close()
        for session, connection in list(self._connections.items()):
            connection.end(session.shut_down())
        if self._ticker is not None:
            self._ticker.cancel()

    async def wait_closed(self) -> None:
        """Wait for the listener, the ticker and in-flight ingests (telemetry and wills) to finish."""
        for listener in self._listeners:
            await listener.wait_closed()
        if self._ticker is not None:
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def start_mqtt_server(
    hub: HubPort, authenticator: Authenticator, *, host: str = "0.0.0.0", port: int = 8883,
    ssl_context: ssl.SSLContext | None = None, max_message_size: int = 262_144,
    max_connected_clients: int = 1000, clock: Clock | None = None, authorizer: Authorizer | None = None,
    session_config: SessionConfig | None = None, limits: ServerLimits | None = None,
    twins: TwinPort | None = None, methods: MethodPort | None = None, presence: ClientPresence | None = None,
    listen: bool = True,
) -> MqttServer:
    """Listen for MQTT clients on every interface by default, as edgeHub (``port`` 0 picks a
    free one: see ``MqttServer.port``). ``listen=False`` opens no TCP listener: the server
    then only takes connections handed to it (MQTT over WebSocket)."""
    config = replace(session_config or SessionConfig(), max_message_size=max_message_size)
    server = MqttServer(
        hub, authenticator, authorizer=authorizer, session_config=config,
        max_connected_clients=max_connected_clients, clock=clock or SystemClock(),
        limits=limits or ServerLimits(), twins=twins, methods=methods, presence=presence,
    )
    if listen:
        await server.listen(host, port, ssl_context)
    return server

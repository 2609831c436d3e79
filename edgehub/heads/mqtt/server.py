"""The MQTT head's asyncio glue: one asyncio.Protocol per client around a sans-I/O MqttSession.

Owns sockets, tasks and timing (ingest per read batch, acks after it, delivery windows, ticks);
no protocol rule lives here, every MQTT decision is the session's. A connection runs over any
stream transport: TCP/TLS from ``listen``, or one the HTTP head presents over a WebSocket
(``MqttServer.new_connection``), so both share one path for auth, limits, acks and delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from edgehub.clock import Clock, SystemClock
from edgehub.errors import EndpointUnavailable, StoreFullError
from edgehub.heads.mqtt.admission import Admission, Slot
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
from edgehub.heads.mqtt.generic_auth import ANONYMOUS_DEVICE, is_anonymous
from edgehub.heads.mqtt.policy import Authenticator, Authorizer, SessionConfig
from edgehub.heads.mqtt.service_link import ServiceLink
from edgehub.heads.mqtt.session import SENT_AT_QOS_0, MqttSession
from edgehub.heads.mqtt.sessions import SessionStore, SessionTable
from edgehub.heads.port import HubPort
from edgehub.iothub.topics import delivery_topic, delivery_topic_head
from edgehub.logs import RateLimitedLine, shown
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

if TYPE_CHECKING:  # generic topics (edgehub.broker) are loaded only with mqttSettings__genericTopics
    from edgehub.heads.mqtt.generic import GenericTopics

log = logging.getLogger(__name__)
_store_full_line = RateLimitedLine(log, logging.WARNING)
_slow_reader_line = RateLimitedLine(log, logging.WARNING)
_admission_line = RateLimitedLine(log, logging.WARNING)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Memory and admission bounds of the glue (docs/architecture.md §1 invariant 6, §4).

    Inbound: reading pauses while a connection's received-but-not-yet-stored bytes exceed
    ``max_pending_bytes``, or all connections' together exceed ``max_total_pending_bytes``
    (a QoS 0 flood is slowed by reading less, never buffered).
    Outbound: above ``write_buffer_high`` unsent bytes delivery to the client pauses (it
    resumes below ``write_buffer_low``); a client paused longer than ``write_stall_timeout``
    or holding more than ``max_write_buffer`` unsent bytes is disconnected.
    Admission: connections without an accepted CONNECT (TLS handshake included) hold a slot
    of ``max_unauthenticated``, at most ``max_unauthenticated_per_source`` per source address,
    for at most ``connect_deadline`` seconds; a newcomer evicts the oldest slot of the source
    holding the most (edgehub.heads.mqtt.admission).
    """

    max_pending_bytes: int = 4 * 1024 * 1024
    max_total_pending_bytes: int = 64 * 1024 * 1024
    max_unauthenticated: int = 256
    max_unauthenticated_per_source: int = 64
    connect_deadline: float = 5.0
    write_buffer_high: int = 256 * 1024
    write_buffer_low: int = 64 * 1024
    max_write_buffer: int = 8 * 1024 * 1024
    write_stall_timeout: float = 30.0
    tick_interval: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.write_buffer_low <= self.write_buffer_high < self.max_write_buffer:
            raise ValueError("ServerLimits: write_buffer_low <= write_buffer_high < max_write_buffer")
        if min(self.max_pending_bytes, self.max_total_pending_bytes, self.max_unauthenticated,
               self.max_unauthenticated_per_source) < 1:
            raise ValueError("ServerLimits: byte and connection bounds must be positive")
        if min(self.connect_deadline, self.write_stall_timeout, self.tick_interval) <= 0:
            raise ValueError("ServerLimits: times must be positive")


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

    def __init__(self, server: MqttServer, slot: Slot | None = None) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._slot = slot
        """The pre-CONNECT admission slot; None once CONNECT was accepted."""
        self._write_paused_at: float | None = None
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
        self._flush_scheduled = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not subclass asyncio.Transport, so no isinstance check).
        self._transport = transport = cast(asyncio.Transport, transport)
        server = self._server
        if server.closing:
            transport.abort()
            return
        if self._slot is None:
            self._slot = server.admit(transport)
        else:
            self._slot.abort = transport.abort  # TLS done: drop it through its transport from now on
        limits = server.limits
        # A transport without limits never calls pause_writing; max_write_buffer still holds.
        with contextlib.suppress(AttributeError, NotImplementedError):
            transport.set_write_buffer_limits(limits.write_buffer_high, limits.write_buffer_low)
        peer_certificates: tuple[bytes, ...] = ()
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            der = ssl_object.getpeercert(binary_form=True)
            peer_certificates = (der,) if der else ()
        self.session = MqttSession(
            server.authenticator, server.table, server.now(), authorizer=server.authorizer,
            config=server.session_config, peer_certificates=peer_certificates, generic=server.generic,
        )
        self.session.wake = self._schedule_flush
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
        self._release_slot()
        self._server.pending_bytes -= self._pending_bytes
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
        self._pending_bytes = 0

    def _release_slot(self) -> None:
        if self._slot is not None:
            self._server.admission.release(self._slot)
            self._slot = None

    # --- asyncio.Protocol write flow control: a client that does not read ----------------------

    def pause_writing(self) -> None:
        """Over write_buffer_high unsent bytes: deliver nothing more until the client reads."""
        if self._write_paused_at is None:
            self._write_paused_at = self._server.now()

    def resume_writing(self) -> None:
        if self._write_paused_at is not None:
            self._write_paused_at = None
            if self._outbound:
                self._pump_outbound()
                self._flush()

    def _drop_slow_reader(self, why: str) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        _slow_reader_line("MQTT client %s disconnected: it does not read its socket (%s)",
                          shown(self.identity), why)
        transport.abort()  # it reads nothing, so a DISCONNECT would only wait in the buffer

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
                self._release_slot()
                self.identity = identity
                self._services = self._server.service_link(self)
                self._counted = True
                CONNECTED_CLIENTS.inc()
                CLIENT_CONNECT_SUCCESS.labels(_metric_id(identity)).inc()
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
                    CLIENT_DISCONNECT.labels(_metric_id(self.identity)).inc()
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

    def _schedule_flush(self) -> None:
        """Generic delivery queued output from another connection's publish: write it once,
        after that publish's turn (one write for a burst, not one per message)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        session = self.session
        transport = self._transport
        if session is None or transport is None:
            return
        data = session.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
            if (self._write_paused_at is not None
                    and transport.get_write_buffer_size() > self._server.limits.max_write_buffer):
                self._drop_slow_reader("over max_write_buffer unsent bytes")
                return
        if session.phase is Phase.CLOSED and not transport.is_closing():
            transport.close()

    # --- inbound: ingest once per read batch, ack after it -----------------------------------

    def _queue_ingest(self, event: TelemetryReceived, read_size: int) -> None:
        self._pending.extend(event.messages)
        self._pending_tokens.append(event.token)
        self._pending_bytes += read_size
        server = self._server
        server.pending_bytes += read_size
        if self._ingest is None:
            self._start_ingest()
        elif not self._paused and self._transport is not None and (
            self._pending_bytes + self._inflight_bytes > server.limits.max_pending_bytes
            or server.pending_bytes > server.limits.max_total_pending_bytes
        ):
            # Read less (QoS 0 included): the socket fills and TCP slows the client; reading
            # resumes when this connection's ingest in flight returned.
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
        except StoreFullError as exc:
            record_unacked("store_full", messages)
            _store_full_line("MQTT publish of %d messages from %s refused: store full (%s)",
                             len(messages), shown(self.identity), exc)
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
            self._server.pending_bytes -= self._inflight_bytes
            self._inflight_bytes = 0
            self._flush()
            if self._pending and session.phase is Phase.CONNECTED:
                self._start_ingest()
            if self._paused and self._transport is not None and not self._transport.is_closing():
                self._paused = False
                self._transport.resume_reading()

    # --- outbound: ClientLink ----------------------------------------------------------------

    async def deliver(self, input_name: str | None, messages: Sequence[Message]) -> int:
        """Publish ``messages`` to the module input (or devicebound when None), at QoS 1, or QoS 0
        where the client subscribed at QoS 0 (then a message counts as acknowledged once written);
        return how many leading ones the client acknowledged (docs/architecture.md §1: checkpoint
        after ack)."""
        session = self.session
        identity = self.identity
        if session is None or identity is None or session.phase is not Phase.CONNECTED:
            raise EndpointUnavailable("MQTT client not connected")
        if not messages:
            return 0
        head = delivery_topic_head(identity, input_name)
        first_topic = delivery_topic(identity, input_name, messages[0], head)
        if not session.accepts(first_topic):
            # No granted subscription matches (e.g. the module subscribed to another input
            # only): keep the messages queued until one does, never drop what was acked.
            raise EndpointUnavailable(f"{identity} has no subscription for input {input_name}")
        future: asyncio.Future[int] = self._loop.create_future()
        delivery = _Delivery(len(messages), future)
        self._deliveries.add(delivery)
        v5 = session.version == MQTT_5
        for index, message in enumerate(messages):
            topic = first_topic if index == 0 else delivery_topic(identity, input_name, message, head)
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
        unflushed = 0
        flush_every = self._server.limits.write_buffer_low or 1
        while outbound and session.publish_window > 0 and self._write_paused_at is None:
            if unflushed >= flush_every:
                # Write as we go, so pause_writing stops the window part way, not after it.
                self._flush()
                unflushed = 0
                continue
            topic, payload, props, delivery, index = outbound.popleft()
            unflushed += len(payload)
            qos = session.delivery_qos(topic)
            if qos < 0:
                # No granted subscription matches (e.g. subscribed to another input only).
                MESSAGES_DROPPED.labels("no_subscription", "", "").inc()
                delivery.ack(index)
                continue
            packet_id = session.publish(topic, payload, props, qos)
            if packet_id == SENT_AT_QOS_0:
                delivery.ack(index)  # the client subscribed at QoS 0: at most once, done when written
            elif packet_id == 0:
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
        paused_at = self._write_paused_at
        if paused_at is not None and now - paused_at >= self._server.limits.write_stall_timeout:
            self._drop_slow_reader("paused longer than write_stall_timeout")
            return
        session = self.session
        if session is not None:
            self._dispatch(session.tick(now), 0)
            self._flush()

    def end(self, events: list[Event]) -> None:
        """Apply the session's events of a take over or shutdown, then close."""
        self._dispatch(events, 0)
        self._flush()


class _TlsListener:
    """The TLS port: accepts TCP itself, gives each socket an admission slot, then hands it to
    the loop's TLS server machinery (``connect_accepted_socket``) with the handshake deadline.

    So sockets that never finish the handshake count and expire like those that never send
    CONNECT (a plain ``create_server(ssl=...)`` hides them until the handshake completed, and
    uvloop's ``start_tls`` after a plain accept loses a ClientHello read before it began).
    Shaped like the ``asyncio.Server`` it stands beside: ``sockets``, ``close``, ``wait_closed``.
    """

    def __init__(self, server: MqttServer, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._server = server
        self._context = context
        self.sockets = [sock]
        self._accepting = asyncio.get_running_loop().create_task(self._accept_forever(sock))

    async def _accept_forever(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = self._server
        while True:
            try:
                client, _ = await loop.sock_accept(listening)
            except OSError as exc:  # EMFILE and the like: back off instead of spinning
                log.warning("MQTT TLS port accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if server.closing:
                client.close()
                continue
            slot = server.admit_socket(client)
            server.track(self._handshake(client, slot))

    async def _handshake(self, client: socket.socket, slot: Slot) -> None:
        server = self._server
        try:
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: MqttConnection(server, slot), client, ssl=self._context,
                ssl_handshake_timeout=server.limits.connect_deadline,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("MQTT TLS handshake failed: %s", exc)
            server.admission.release(slot)
            client.close()
            return
        own = transport.get_extra_info("socket")
        if own is not None and own.fileno() != client.fileno():
            client.close()  # the loop works on a duplicate of the descriptor (uvloop)

    def close(self) -> None:
        self._accepting.cancel()
        self.sockets[0].close()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, return_exceptions=True)


def _metric_id(identity: Identity | None) -> str:
    """The ``id`` label: anonymous clients choose their client ids, so they share one label
    (bounded metrics, as for refused CONNECTs)."""
    if identity is None:
        return "None"
    return ANONYMOUS_DEVICE if is_anonymous(identity) else identity.id


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
        presence: ClientPresence | None = None, sessions: SessionStore | None = None,
        generic: GenericTopics | None = None,
    ) -> None:
        self.hub = hub
        self.generic = generic
        """Plain MQTT topics between local clients (mqttSettings__genericTopics); None: off."""
        self.presence: ClientPresence = presence or NoPresence()
        self.twins: TwinPort = twins or UnavailableTwins()
        self.methods: MethodPort = methods or UnavailableMethods()
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.session_config = session_config
        self.table = SessionTable(max_connected_clients, sessions)
        self.clock = clock
        self.table.restore(self.now())  # persistent sessions kept across a restart, parked again
        self.limits = limits
        self.admission = Admission(limits.max_unauthenticated, limits.max_unauthenticated_per_source,
                                   limits.connect_deadline)
        self.pending_bytes = 0
        """Received-but-not-yet-stored bytes of every connection (max_total_pending_bytes)."""
        self.closing = False
        self._listeners: list[asyncio.Server | _TlsListener] = []
        self._connections: dict[MqttSession, MqttConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self.clock.monotonic()

    @property
    def unauthenticated(self) -> int:
        """Connections holding a pre-CONNECT slot (TLS handshakes in progress included)."""
        return len(self.admission)

    def admit(self, transport: asyncio.Transport) -> Slot:
        """A pre-CONNECT slot for a new connection; evicts another one when the bounds are reached."""
        return self._admit(transport.get_extra_info("peername"), transport.abort)

    def admit_socket(self, client: socket.socket) -> Slot:
        """A slot for a socket the TLS port accepted (its handshake not begun yet)."""
        def abort() -> None:
            # shutdown, not close: the TLS transport owns the descriptor (or a duplicate of it)
            # and closes it itself once it sees the connection end.
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        try:
            peer = client.getpeername()
        except OSError:
            peer = None
        return self._admit(peer, abort)

    def _admit(self, peer: object, abort: Callable[[], None]) -> Slot:
        slot, victim = self.admission.admit(peer, self.now(), abort)
        if victim is not None:
            _admission_line("MQTT pre-CONNECT connection from %s dropped to admit a new one "
                            "(%d unauthenticated held; %d dropped so far)",
                            victim.source or "?", len(self.admission), self.admission.evicted)
            victim.abort()
        return slot

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
        listener: asyncio.Server | _TlsListener
        if ssl_context is None:
            listener = await asyncio.get_running_loop().create_server(
                lambda: MqttConnection(self), host, port, reuse_address=True, backlog=1024,
            )
        else:
            # TLS after our own accept: a connection holds an admission slot (and its deadline)
            # from its first byte, handshake included (issue 15).
            sock = socket.create_server((host, port), backlog=1024)
            sock.setblocking(False)
            listener = _TlsListener(self, sock, ssl_context)
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
        except StoreFullError as exc:
            record_unacked("store_full", messages)
            _store_full_line("MQTT publish of %d messages after their connection closed dropped: "
                             "store full (%s)", len(messages), exc)
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
                for slot in self.admission.expire(now):
                    slot.abort()  # no accepted CONNECT within connect_deadline (TLS handshake included)
                for connection in list(self._connections.values()):
                    connection.tick(now)
                self.table.expire(now)
                if self.generic is not None:
                    self.generic.tick()  # will delays, session expiry, expired queued messages
            except Exception:
                log.exception("MQTT keep alive tick failed; ticking on")

    def close(self) -> None:
        """Stop accepting, tell every client the server is going (v5 DISCONNECT 0x8B), close."""
        if self.closing:
            return
        self.closing = True
        for listener in self._listeners:
            listener.close()
        for slot in self.admission.drain():
            slot.abort()
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
    listen: bool = True, sessions: SessionStore | None = None, generic: GenericTopics | None = None,
) -> MqttServer:
    """Listen for MQTT clients on every interface by default, as edgeHub (``port`` 0 picks a
    free one: see ``MqttServer.port``). ``listen=False`` opens no TCP listener: the server
    then only takes connections handed to it (MQTT over WebSocket)."""
    config = replace(session_config or SessionConfig(), max_message_size=max_message_size)
    server = MqttServer(
        hub, authenticator, authorizer=authorizer, session_config=config,
        max_connected_clients=max_connected_clients, clock=clock or SystemClock(),
        limits=limits or ServerLimits(), twins=twins, methods=methods, presence=presence, sessions=sessions,
        generic=generic,
    )
    if listen:
        await server.listen(host, port, ssl_context)
    return server

"""One MQTT client's connection: the asyncio.Protocol around its sans-I/O MqttSession.

Owns the socket side of one client (ingest per read batch, acks after it, the delivery window,
write flow control); no protocol rule lives here, every MQTT decision is the session's. It runs
over any stream transport: TCP/TLS from ``MqttServer.listen``, or one the HTTP head presents over a
WebSocket (``MqttServer.new_connection``). edgehub.heads.mqtt.server holds what all connections
share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from edgehub.errors import EndpointUnavailable, StoreFullError
from edgehub.heads.mqtt.admission import Slot
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
from edgehub.heads.mqtt.service_link import ServiceLink
from edgehub.heads.mqtt.session import SENT_AT_QOS_0, MqttSession
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

if TYPE_CHECKING:  # the server creates connections; a connection only refers to it
    from edgehub.heads.mqtt.server import MqttServer

log = logging.getLogger("edgehub.heads.mqtt.server")  # one logger for the head, as before the split
_store_full_line = RateLimitedLine(log, logging.WARNING)
_slow_reader_line = RateLimitedLine(log, logging.WARNING)


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

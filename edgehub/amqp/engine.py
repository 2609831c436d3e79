"""One AMQP 1.0 connection on python-qpid-proton's engine, driven with bytes: the sans-I/O core.

Owns the proton Transport, Connection and Collector of one connection and the order bytes and
events flow through them; it opens no socket, starts no task and reads no clock (``now`` is
passed in). Proton's reactor and proton's own SSL are never used: TLS and WebSocket are the
caller's, as for MQTT.

Use, client or server alike::

    engine = AmqpEngine(handler, role=Role.CLIENT, sasl=ClientSasl("ANONYMOUS"))
    engine.connection.open()          # or let the handler open what the peer opened
    engine.process()                  # dispatch events caused by local calls
    sock.send(engine.data_to_send())
    engine.receive_data(sock.recv())  # dispatches the events the bytes caused
    engine.tick(now)                  # idle-timeout heartbeats (AMQP 1.0 §2.4.5)

Events go to ``handler`` by proton's method names (``on_link_remote_open(event)``,
``on_delivery(event)``, ``on_connection_remote_close(event)``, …); a missing method means the
event is ignored. A handler may define ``on_delivery_only(delivery)`` instead of ``on_delivery``:
it gets the proton.Delivery alone, without the event wrapper (cheaper: one per transfer).
Handler methods may call back into proton (open links, send, settle) and the engine dispatches
what that caused before returning.

Server role: the SASL layer is ours (edgehub.amqp.sasl, as proton built without Cyrus offers no
server-side PLAIN); once it sent an ``ok`` outcome the remaining bytes go to a proton transport
that expects the plain AMQP header. Client role: proton's built-in SASL (ANONYMOUS, PLAIN,
EXTERNAL work without Cyrus) is used through ``ClientSasl``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any, Final, Protocol

import cproton  # type: ignore[import-untyped]  # proton's C binding ships no stubs
import proton

from edgehub.amqp.sasl import SaslCode, SaslError, SaslServer

log = logging.getLogger(__name__)

_UNRESOLVED: Final = object()
_DELIVERY_EVENT: Final = proton.Event.DELIVERY.number
DEFAULT_MAX_FRAME: Final = 64 * 1024
"""Our max-frame-size (AMQP 1.0 §2.7.1): a 256 KiB message spans a few transfer frames."""


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class EngineHandler(Protocol):
    """Receives proton events by method name (``on_link_remote_open`` …); all optional."""


@dataclass(frozen=True, slots=True)
class ClientSasl:
    """The client's SASL choice: ``ANONYMOUS`` (then CBS), or ``PLAIN`` with user and password."""

    mechanism: str = "ANONYMOUS"
    user: str | None = None
    password: str | None = None


class AmqpEngine:
    """Bytes in, bytes out, events to ``handler``. Not thread-safe; one per connection."""

    def __init__(
        self, handler: object, *, role: Role, sasl: ClientSasl | SaslServer | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME, idle_timeout: float = 0.0,
        container_id: str | None = None, hostname: str | None = None, channel_max: int | None = None,
    ) -> None:
        self._handler = handler
        self.role = role
        mode = proton.Transport.SERVER if role is Role.SERVER else proton.Transport.CLIENT
        self.transport = proton.Transport(mode)
        self.transport.max_frame_size = max_frame_size
        if channel_max is not None:
            self.transport.channel_max = channel_max
        if idle_timeout:
            self.transport.idle_timeout = idle_timeout
        self.connection = proton.Connection()
        if container_id is not None:
            self.connection.container = container_id
        if hostname is not None:
            self.connection.hostname = hostname
        self.collector = proton.Collector()
        self.connection.collect(self.collector)
        self._server_sasl: SaslServer | None = None
        if isinstance(sasl, SaslServer):
            if role is not Role.SERVER:
                raise ValueError("a SaslServer belongs to the server role")
            self._server_sasl = sasl
        elif isinstance(sasl, ClientSasl):
            client = self.transport.sasl()
            client.allowed_mechs(sasl.mechanism)
            # TLS is the caller's, so proton sees a plaintext transport and would refuse PLAIN.
            client.allow_insecure_mechs = True
            if sasl.user is not None:
                self.connection.user = sasl.user
            if sasl.password is not None:
                self.connection.password = sasl.password
        elif role is Role.SERVER:
            self.transport.require_auth(False)
        self.transport.bind(self.connection)
        self.error: str | None = None
        """Why the connection ended badly (a SASL or framing error, the peer's condition)."""
        self._pending_out = bytearray()
        self._closed = False
        self._delivery_only = False
        self._methods: dict[int, Any] = {}
        """Event type number → the handler's bound method (None: ignored), resolved once each."""

    # --- bytes -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer, then dispatch what they caused. After a SASL failure or a
        framing error ``closed`` is True and ``error`` says why (the caller sends what is left
        in ``data_to_send`` and closes)."""
        if self._closed:
            return
        sasl = self._server_sasl
        if sasl is not None and sasl.outcome is None:
            try:
                outcome = sasl.receive_data(data)
            except SaslError as exc:
                self._pending_out += sasl.data_to_send()
                self._fail(str(exc))
                return
            self._pending_out += sasl.data_to_send()
            if outcome is None:
                return
            if outcome is not SaslCode.OK:
                self._fail(f"SASL outcome {outcome.name.lower()}")
                return
            self.transport.require_auth(False)
            data = sasl.remainder
            if not data:
                return
        self._push(data)
        self.process()

    def _push(self, data: bytes) -> None:
        transport = self.transport
        view = memoryview(data)
        while view:
            capacity = transport.capacity()
            if capacity < 0:
                self._note_transport_error()
                return
            if capacity == 0:
                # Proton takes bytes in its own frame-sized steps; process, then try again.
                self.process()
                if transport.capacity() == 0:
                    self._fail("AMQP transport would not take more input")
                    return
                continue
            chunk = view[:capacity]
            try:
                transport.push(bytes(chunk))
            except proton.TransportException as exc:
                self._fail(f"AMQP framing error: {exc}")
                return
            view = view[len(chunk):]

    def receive_eof(self) -> None:
        """The peer closed its side of the socket."""
        if not self._closed:
            self.transport.close_tail()
            self.process()

    def data_to_send(self) -> bytes:
        """Everything ready for the peer (SASL frames first, then the proton transport's)."""
        out = self._pending_out
        transport = self.transport
        if self._server_sasl is None or self._server_sasl.outcome is SaslCode.OK:
            while True:
                pending = transport.pending()
                if pending <= 0:
                    if pending < 0 and not self._closed:
                        self._closed = True
                        self._note_transport_error()
                    break
                out += transport.peek(pending) or b""
                transport.pop(pending)
        data = bytes(out)
        out.clear()
        return data

    @property
    def closed(self) -> bool:
        """Nothing more will be read or written: send ``data_to_send`` once more, then close."""
        return self._closed

    def tick(self, now: float) -> float:
        """Run proton's idle-timeout timers at ``now`` (monotonic seconds); returns the next
        deadline, 0 when none. A peer silent past our idle timeout closes the connection with
        ``amqp:resource-limit-exceeded`` (AMQP 1.0 §2.4.5)."""
        if self._closed or (self._server_sasl is not None and self._server_sasl.outcome is not SaslCode.OK):
            return 0.0
        deadline = float(self.transport.tick(now))
        self.process()
        return deadline

    # --- events ------------------------------------------------------------------------------

    def process(self) -> None:
        """Dispatch every collected event to the handler (call after local proton calls made
        outside an event, e.g. settling a delivery when a store write returned).

        Events the handler has no method for are popped without building proton's Python event
        wrapper (it wraps the connection, session, link and delivery each time: most of the cost
        of a transfer in the profile)."""
        impl = self.collector._impl
        methods = self._methods
        while True:
            raw = cproton.pn_collector_peek(impl)
            if cproton.isnull(raw):
                return
            number = cproton.pn_event_type(raw)
            method = methods.get(number, _UNRESOLVED)
            if method is _UNRESOLVED:
                method = methods[number] = self._resolve(number)
            if method is not None:
                try:
                    if number == _DELIVERY_EVENT and self._delivery_only:
                        method(proton.Delivery.wrap(cproton.pn_event_delivery(raw)))  # type: ignore[no-untyped-call]
                    else:
                        method(proton.Event.wrap(raw))  # type: ignore[no-untyped-call]  # untyped in proton
                except Exception:
                    log.exception("AMQP handler failed on %s", proton.EventType.TYPES[number].name)
                    cproton.pn_collector_pop(impl)
                    self._fail("internal error")
                    return
            cproton.pn_collector_pop(impl)

    def _resolve(self, number: int) -> Any:
        if number == _DELIVERY_EVENT:
            fast = getattr(self._handler, "on_delivery_only", None)
            if fast is not None:
                self._delivery_only = True
                return fast
        return getattr(self._handler, proton.EventType.TYPES[number].method, None)

    # --- ending ------------------------------------------------------------------------------

    def close(self, condition: str | None = None, description: str | None = None) -> None:
        """Close the connection (with an error condition when given, AMQP 1.0 §2.8.16)."""
        if self._closed:
            return
        connection = self.connection
        if condition is not None:
            connection.condition = proton.Condition(condition, description)
        if connection.state & proton.Endpoint.LOCAL_ACTIVE or connection.state & proton.Endpoint.LOCAL_UNINIT:
            connection.close()
        self.process()

    def _fail(self, reason: str) -> None:
        self.error = reason
        self._closed = True

    def _note_transport_error(self) -> None:
        condition = self.transport.condition or self.connection.remote_condition
        if condition is not None and self.error is None:
            self.error = f"{condition.name}: {condition.description}"

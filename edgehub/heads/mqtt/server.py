"""The MQTT head's server: listeners, admission, the session table, ticks and the limits every
connection (edgehub.heads.mqtt.connection) shares.

Owns the listening sockets and the tasks; no protocol rule lives here, every MQTT decision is the
session's. TCP/TLS connections from ``listen`` and WebSocket ones the HTTP head presents
(``new_connection``) share one path for auth, limits, acks and delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edgehub.clock import Clock, SystemClock
from edgehub.errors import StoreFullError
from edgehub.heads.mqtt.admission import Admission, Slot
from edgehub.heads.mqtt.connection import MqttConnection
from edgehub.heads.mqtt.policy import Authenticator, Authorizer, SessionConfig
from edgehub.heads.mqtt.service_link import ServiceLink
from edgehub.heads.mqtt.session import MqttSession
from edgehub.heads.mqtt.sessions import SessionStore, SessionTable
from edgehub.heads.port import HubPort
from edgehub.logs import RateLimitedLine
from edgehub.message import Message
from edgehub.metrics import (
    record_received,
    record_unacked,
)
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

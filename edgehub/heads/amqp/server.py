"""The AMQP head's asyncio glue: one asyncio.Protocol per client around a sans-I/O AmqpServerConnection.

Owns sockets, tasks and timing (ingest per read batch, settlement after it, delivery futures,
the tick); every AMQP decision is the connection core's. A connection runs over any stream
transport: TLS from ``listen`` or a WebSocket the HTTP head hands over (``new_connection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

from edgehub.clock import Clock
from edgehub.errors import EndpointUnavailable, StoreFullError
from edgehub.heads.amqp.auth import AmqpAuthenticator
from edgehub.heads.amqp.connection import RESOURCE_LIMIT, AmqpLimits, AmqpServerConnection
from edgehub.heads.amqp.events import (
    DeliveryLinkChanged,
    DeliverySettled,
    Event,
    IdentityAuthenticated,
    IdentityEnded,
    MethodLinkChanged,
    MethodResponded,
    Outcome,
    TelemetryReceived,
    TwinRequested,
)
from edgehub.heads.amqp.services import ConnectionServices
from edgehub.heads.mqtt.admission import Admission, Slot
from edgehub.heads.port import HubPort
from edgehub.logs import RateLimitedLine, shown
from edgehub.message import Identity, Message
from edgehub.metrics import (
    CLIENT_CONNECT_SUCCESS,
    CLIENT_DISCONNECT,
    CONNECTED_CLIENTS,
    MESSAGES_DROPPED,
    record_received,
    record_unacked,
)
from edgehub.twins.port import ClientPresence, MethodPort, TwinPort

log = logging.getLogger(__name__)
_store_full_line = RateLimitedLine(log, logging.WARNING)
_admission_line = RateLimitedLine(log, logging.WARNING)


@dataclass(frozen=True, slots=True)
class AmqpServerLimits:
    """Bounds of the glue: admission of unauthenticated connections (as the MQTT head's, docs/
    architecture.md §4) and the received-but-not-yet-stored bytes after which reading pauses."""

    max_unauthenticated: int = 256
    max_unauthenticated_per_source: int = 64
    connect_deadline: float = 5.0
    max_pending_bytes: int = 4 * 1024 * 1024
    tick_interval: float = 1.0


class _Sending:
    """One ClientLink.deliver call: the outcome of each message, resolved when all are known."""

    __slots__ = ("future", "outcomes", "remaining")

    def __init__(self, count: int, future: asyncio.Future[int]) -> None:
        self.outcomes: list[Outcome | None] = [None] * count
        self.remaining = count
        self.future = future

    def settle(self, index: int, outcome: Outcome) -> None:
        if self.outcomes[index] is not None:
            return
        self.outcomes[index] = outcome
        self.remaining -= 1
        if outcome is Outcome.REJECTED:
            MESSAGES_DROPPED.labels("rejected_by_client", "", "").inc()
        if self.remaining == 0 and not self.future.done():
            handled = 0
            for each in self.outcomes:
                if each not in (Outcome.ACCEPTED, Outcome.REJECTED):
                    break  # released or lost: this one and what follows go again (in order)
                handled += 1
            if handled == 0 and Outcome.LOST in self.outcomes:
                self.future.set_exception(EndpointUnavailable("AMQP link or connection closed"))
            else:
                self.future.set_result(handled)


class _IdentityLink:
    """The ClientLink of one identity served on one AMQP connection (its inputs / devicebound links)."""

    __slots__ = ("_connection", "_identity")

    def __init__(self, connection: AmqpConnection, identity: Identity) -> None:
        self._connection = connection
        self._identity = identity

    async def deliver(self, input_name: str | None, messages: Sequence[Message]) -> int:
        return await self._connection.deliver(self._identity, input_name, list(messages))


class AmqpConnection(asyncio.Protocol):
    """One client connection (TLS or WebSocket)."""

    def __init__(self, server: AmqpServer, slot: Slot | None = None) -> None:
        self._server = server
        self._slot = slot
        self._transport: asyncio.Transport | None = None
        self.core: AmqpServerConnection | None = None
        self._links: dict[Identity, _IdentityLink] = {}
        self.services = ConnectionServices(self, server.twins, server.methods, server.track)
        self._sendings: dict[int, _Sending] = {}
        self._pending: list[Message] = []
        self._pending_tokens: list[int] = []
        self._pending_bytes = 0
        self._ingest: asyncio.Task[None] | None = None
        self._paused = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        server = self._server
        if server.closing:
            transport.abort()
            return
        if self._slot is None:
            self._slot = server.admit(transport.get_extra_info("peername"), transport.abort)
        certificates: tuple[bytes, ...] = ()
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            der = ssl_object.getpeercert(binary_form=True)
            certificates = (der,) if der else ()
        self.core = AmqpServerConnection(server.authenticator, server.limits, server.now(),
                                         peer_certificates=certificates)
        server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        core = self.core
        if core is None:
            return
        self._pending_bytes += len(data)
        self._dispatch(core.receive_data(data, self._server.now()))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_slot()
        self._server.connections.discard(self)
        core = self.core
        if core is not None:
            self._dispatch(core.connection_lost())
        self.services.close()
        for sending in list(self._sendings.values()):
            for index, outcome in enumerate(sending.outcomes):
                if outcome is None:
                    sending.settle(index, Outcome.LOST)
        self._sendings.clear()
        if self._pending:
            # Read but not yet stored: stored still (nobody is left to settle them), as MQTT does.
            self._server.track(self._server.ingest_orphans(self._pending))
            self._pending = []

    def _release_slot(self) -> None:
        if self._slot is not None:
            self._server.admission.release(self._slot)
            self._slot = None

    # --- writing -----------------------------------------------------------------------------

    def flush(self) -> None:
        core, transport = self.core, self._transport
        if core is None or transport is None:
            return
        data = core.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
        if core.closed and not transport.is_closing():
            if core.engine.error:
                log.info("AMQP connection of %s closed: %s", self._who(), core.engine.error)
            transport.close()

    def _who(self) -> str:
        core = self.core
        if core is None or not core.identities:
            return "an unauthenticated client"
        return ", ".join(shown(identity) for identity in core.identities)

    def tick(self, now: float) -> None:
        core = self.core
        if core is not None:
            self._dispatch(core.tick(now))
            self.flush()

    def shut_down(self) -> None:
        """The hub is stopping: close with ``amqp:connection:forced`` (AMQP 1.0 §2.8.16)."""
        core = self.core
        if core is not None:
            core.close("amqp:connection:forced", "the hub is stopping")
            self.flush()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # --- events ------------------------------------------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is TelemetryReceived:
                self._queue_ingest(event)
            elif type(event) is DeliverySettled:
                sending = self._sendings.get(event.token)
                if sending is not None:
                    sending.settle(event.index, event.outcome)
                    if sending.remaining == 0:
                        del self._sendings[event.token]
            else:
                self._on_rare_event(event)

    def _on_rare_event(self, event: Event) -> None:
        server = self._server
        match event:
            case IdentityAuthenticated(identity=identity):
                self._release_slot()
                CONNECTED_CLIENTS.inc()
                CLIENT_CONNECT_SUCCESS.labels(identity.id).inc()
                server.presence.client_connected(identity)
            case IdentityEnded(identity=identity):
                CONNECTED_CLIENTS.dec()
                CLIENT_DISCONNECT.labels(identity.id).inc()
                server.presence.client_disconnected(identity)
            case DeliveryLinkChanged(identity=identity, active=True):
                link = self._links.setdefault(identity, _IdentityLink(self, identity))
                server.hub.attach(identity, link)  # also wakes the pumps holding its messages
            case DeliveryLinkChanged(identity=identity, active=False):
                gone = self._links.pop(identity, None)
                if gone is not None:
                    server.hub.detach(identity, gone)
            case MethodLinkChanged() | MethodResponded() | TwinRequested():
                self.services.on_event(event)

    # --- inbound: one ingest in flight, settle after it --------------------------------------

    def _queue_ingest(self, event: TelemetryReceived) -> None:
        self._pending.extend(event.messages)
        self._pending_tokens.append(event.token)
        if self._ingest is None:
            self._start_ingest()
        elif (not self._paused and self._transport is not None
              and self._pending_bytes > self._server.server_limits.max_pending_bytes):
            self._paused = True  # read less until the store caught up; credit stops the client too
            self._transport.pause_reading()

    def _start_ingest(self) -> None:
        messages, tokens = self._pending, self._pending_tokens
        self._pending, self._pending_tokens, self._pending_bytes = [], [], 0
        self._ingest = self._server.track(self._run_ingest(messages, tokens))

    async def _run_ingest(self, messages: list[Message], tokens: list[int]) -> None:
        core = self.core
        assert core is not None
        refusal: tuple[str, str] | None = None
        try:
            await self._server.hub.ingest(messages)
        except StoreFullError as exc:
            record_unacked("store_full", messages)
            _store_full_line("AMQP transfer of %d messages from %s refused: store full (%s)",
                             len(messages), self._who(), exc)
            refusal = (RESOURCE_LIMIT, "store full")
        except Exception:
            log.exception("AMQP ingest of %d messages from %s failed", len(messages), self._who())
            record_unacked("storage_failure", messages)
            refusal = ("amqp:internal-error", "the message could not be stored")
        else:
            record_received(messages)
        finally:
            self._ingest = None
        for token in tokens:
            core.ingested(token, refusal)
        self.flush()
        if self._pending:
            self._start_ingest()
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._paused = False
            self._transport.resume_reading()

    # --- outbound: ClientLink ----------------------------------------------------------------

    async def deliver(self, identity: Identity, input_name: str | None, messages: list[Message]) -> int:
        core = self.core
        if core is None or core.closed:
            raise EndpointUnavailable("AMQP client not connected")
        if not messages:
            return 0
        token = core.send_messages(identity, input_name, messages)
        if token is None:
            kind = "inputs" if input_name is not None else "devicebound"
            raise EndpointUnavailable(f"{identity} has no AMQP {kind} link")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        sending = self._sendings[token] = _Sending(len(messages), future)
        self._dispatch(core.take_events())  # oversize ones are settled at once
        if sending.remaining == 0:
            self._sendings.pop(token, None)
        self.flush()
        return await future


class AmqpServer:
    """The listening AMQP head: its connections, admission and ticker."""

    def __init__(
        self, hub: HubPort, authenticator: AmqpAuthenticator, *, limits: AmqpLimits, clock: Clock,
        twins: TwinPort, methods: MethodPort, presence: ClientPresence,
        server_limits: AmqpServerLimits | None = None,
    ) -> None:
        self.hub = hub
        self.authenticator = authenticator
        self.limits = limits
        self.server_limits = server_limits or AmqpServerLimits()
        self.clock = clock
        self.twins = twins
        self.methods = methods
        self.presence = presence
        bounds = self.server_limits
        self.admission = Admission(bounds.max_unauthenticated, bounds.max_unauthenticated_per_source,
                                   bounds.connect_deadline)
        self.connections: set[AmqpConnection] = set()
        self.closing = False
        self._listeners: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self.clock.time()

    @property
    def port(self) -> int:
        port: int = self._listeners[0].sockets[0].getsockname()[1]
        return port

    def admit(self, peer: object, abort: Any) -> Slot:
        slot, victim = self.admission.admit(peer, self.clock.monotonic(), abort)
        if victim is not None:
            _admission_line("AMQP unauthenticated connection from %s dropped to admit a new one "
                            "(%d held; %d dropped so far)", victim.source or "?", len(self.admission),
                            self.admission.evicted)
            victim.abort()
        return slot

    async def listen(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Open a listener (TLS when ``ssl_context``); returns the bound port."""
        listener = await asyncio.get_running_loop().create_server(
            lambda: AmqpConnection(self), host, port, ssl=ssl_context, reuse_address=True, backlog=1024,
            ssl_handshake_timeout=self.server_limits.connect_deadline if ssl_context else None,
        )
        self._listeners.append(listener)
        self._start_ticking()
        bound: int = listener.sockets[0].getsockname()[1]
        log.info("AMQP head listening on %s:%d (%s)", host, bound, "TLS" if ssl_context else "plain")
        return bound

    def new_connection(self) -> AmqpConnection:
        """A connection for a transport this server did not accept (AMQP over WebSocket)."""
        self._start_ticking()
        return AmqpConnection(self)

    def _start_ticking(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    def track(self, coroutine: Coroutine[None, None, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def ingest_orphans(self, messages: list[Message]) -> None:
        try:
            await self.hub.ingest(messages)
        except StoreFullError as exc:  # nobody to settle with: at-least-once, the client resends
            record_unacked("store_full", messages)
            log.warning("AMQP ingest of %d messages after their connection closed refused: %s",
                        len(messages), exc)
        except Exception:
            record_unacked("storage_failure", messages)
            log.exception("AMQP ingest of %d messages after their connection closed failed", len(messages))
        else:
            record_received(messages)

    async def _tick_forever(self) -> None:
        while True:
            await self.clock.sleep(self.server_limits.tick_interval)
            try:
                for slot in self.admission.expire(self.clock.monotonic()):
                    slot.abort()  # no identity proved within connect_deadline
                now = self.now()
                for connection in list(self.connections):
                    connection.tick(now)
            except Exception:
                log.exception("AMQP tick failed; ticking on")

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        for listener in self._listeners:
            listener.close()
        for slot in self.admission.drain():
            slot.abort()
        for connection in list(self.connections):
            connection.services.close()
            connection.shut_down()
        if self._ticker is not None:
            self._ticker.cancel()

    async def wait_closed(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                await listener.wait_closed()
        if self._ticker is not None:
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

"""One AMQP 1.0 connection to the parent over TLS or WebSocket (``AMQPWSB10``): asyncio glue over
AmqpClientSession.

Owns the transport (transport.py opens it, through ``https_proxy`` for WebSocket), the futures of link
attaches, CBS answers and transfer outcomes, the idle-timeout timer and write batching for ONE connection
lifetime; it never retries, renews tokens or decides what to send (AmqpUpstream does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from proton import Message

from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.upstream.amqp_session import (
    AmqpClientSession,
    CbsAnswered,
    Closed,
    LinkAttached,
    LinkDetached,
    Opened,
    Outcome,
    Received,
    SessionEvent,
    Settled,
)
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.transport import OpenedStream, open_stream, receive_websocket
from edgehub.upstream.websocket import WebSocketClient

log = logging.getLogger(__name__)

AMQP_WS_SUBPROTOCOL: Final = "AMQPWSB10"
"""The WebSocket subprotocol of AMQP 1.0 (OASIS AMQP WebSocket Binding §2.1), as IoT Hub serves it."""
_CLOSE_GRACE: Final = 1.0
UNAUTHORIZED: Final = "amqp:unauthorized-access"

StreamOpener = Callable[[UpstreamConfig, asyncio.Protocol, str], Awaitable[OpenedStream]]
"""Opens the byte stream (``transport.open_stream``; an in-memory peer in tests)."""
OnReceived = Callable[[Received], None]
_T = TypeVar("_T")


def _resolve(future: asyncio.Future[_T] | None, value: _T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


async def _open_stream(config: UpstreamConfig, protocol: asyncio.Protocol, subprotocol: str) -> OpenedStream:
    return await open_stream(config, protocol, subprotocol=subprotocol)


class LinkRefusedError(EndpointUnavailable):
    """The parent refused or detached a link; ``condition`` is its AMQP error condition."""

    def __init__(self, address: str, condition: str, description: str) -> None:
        super().__init__(f"the parent refused the link {address}: {condition} {description}".rstrip())
        self.condition = condition


class AmqpConnection(asyncio.Protocol):
    """What AmqpUpstream drives: ``open``, ``put_token``, ``attach_sender``/``attach_receiver``, ``send``.

    Transfers issued in one loop turn leave in one ``transport.write`` (one WebSocket frame). A
    ``send`` future resolves to the parent's Outcome, or LOST when its link or the connection ends
    first. Incoming messages go to the receiver's ``on_received`` callback and stay unsettled until
    ``settle``.
    """

    def __init__(self, config: UpstreamConfig, *, container_id: str, hostname: str,
                 opener: StreamOpener = _open_stream) -> None:
        self._config = config
        self._opener = opener
        self._loop = asyncio.get_running_loop()
        self._session = AmqpClientSession(container_id=container_id, hostname=hostname)
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._attaching: dict[str, asyncio.Future[None]] = {}
        self._cbs: dict[int, asyncio.Future[tuple[int, str]]] = {}
        self._outcomes: dict[str, dict[int, asyncio.Future[Outcome]]] = {}
        self._receivers: dict[str, OnReceived] = {}
        self._on_detached: Callable[[str, str], None] = lambda name, condition: None
        self._transport: asyncio.Transport | None = None
        self._websocket: WebSocketClient | None = None
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._finished = False

    @property
    def is_open(self) -> bool:
        return self._opened.done() and not self._opened.exception() and not self._finished

    def on_detached(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(link name, condition)`` when the parent detaches an attached link."""
        self._on_detached = callback

    # -- commands ------------------------------------------------------------------------------

    async def open(self, subprotocol: str = AMQP_WS_SUBPROTOCOL) -> None:
        """Connect, SASL ANONYMOUS, open; EndpointUnavailable on any failure (never retries)."""
        try:
            stream = await self._opener(self._config, self, subprotocol)
            if self._finished:
                stream.transport.abort()
                raise EndpointUnavailable(f"{self._config.host}: {self._closed.result()}")
            self._transport, self._websocket = stream.transport, stream.websocket
            self._session.open()
            self._flush()
            if stream.early:
                self.data_received(stream.early)
            async with asyncio.timeout(self._config.connect_timeout):
                await asyncio.shield(self._opened)
        except TimeoutError:
            self._finish("no open from the parent")
            raise EndpointUnavailable(f"{self._config.host} did not open the AMQP connection") from None
        except BaseException:
            self._finish("connect failed")
            raise
        self._schedule_tick()

    async def put_token(self, audience: str, token: str) -> None:
        """CBS put-token for ``audience``; AuthError when the parent refuses it (status not 2xx)."""
        self._require_open()
        request_id = self._session.put_token(audience, token)
        answer: asyncio.Future[tuple[int, str]] = self._loop.create_future()
        self._cbs[request_id] = answer
        self._schedule_flush()
        try:
            status, description = await self._wait(answer, "no put-token answer")
        finally:
            self._cbs.pop(request_id, None)
        if not 200 <= status < 300:
            raise AuthError(f"the parent refused the token for {audience}: {status} {description}".rstrip())

    async def attach_sender(self, name: str, address: str, properties: dict[str, str] | None = None) -> None:
        self._require_open()
        self._session.attach_sender(name, address, properties)
        self._outcomes[name] = {}
        await self._attached(name, address)

    async def attach_receiver(self, name: str, address: str, credit: int, on_received: OnReceived,
                              properties: dict[str, str] | None = None) -> None:
        self._require_open()
        self._session.attach_receiver(name, address, credit=credit, properties=properties)
        self._receivers[name] = on_received
        await self._attached(name, address)

    def detach(self, name: str) -> None:
        self._session.detach(name)
        self._receivers.pop(name, None)
        self._lose(name)
        self._schedule_flush()

    def is_attached(self, name: str) -> bool:
        return not self._finished and self._session.is_attached(name)

    def send(self, name: str, message: Message | bytes) -> asyncio.Future[Outcome]:
        """One unsettled transfer on sender ``name`` now (call order is wire order)."""
        outcome: asyncio.Future[Outcome] = self._loop.create_future()
        pending = self._outcomes.get(name)
        if self._finished or pending is None or not self._session.is_attached(name):
            outcome.set_result(Outcome.LOST)
            return outcome
        pending[self._session.send(name, message)] = outcome
        self._schedule_flush()
        return outcome

    def settle(self, delivery: int, outcome: Outcome) -> None:
        if not self._finished:
            self._session.settle(delivery, outcome)
            self._schedule_flush()

    def abort(self, reason: str) -> None:
        self._finish(reason)

    async def close(self) -> None:
        """Close cleanly (bounded wait for the parent's close) and release everything; idempotent."""
        try:
            if self.is_open and self._transport is not None:
                self._session.close()
                self._flush()
                if self._websocket is not None:
                    self._transport.write(self._websocket.close_frame())
                async with asyncio.timeout(_CLOSE_GRACE):
                    await asyncio.shield(self._closed)
        except TimeoutError:
            pass
        finally:
            self._finish("closed by the hub")

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed)

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Not called: the opener hands the transport over with ``set_protocol``."""

    def data_received(self, data: bytes) -> None:
        if self._websocket is not None:
            data, ended = receive_websocket(self._websocket, data, self._transport)
            if ended is not None:
                self._finish(ended)
                return
        self._handle(self._session.receive_data(data))
        self._schedule_flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._finish("connection lost" if exc is None else f"connection lost: {exc}")

    # -- events --------------------------------------------------------------------------------

    def _handle(self, events: list[SessionEvent]) -> None:
        for event in events:
            if type(event) is Settled:
                _resolve(self._outcomes.get(event.link, {}).pop(event.tag, None), event.outcome)
            elif type(event) is Received:
                self._received(event)
            elif type(event) is CbsAnswered:
                _resolve(self._cbs.get(event.request_id), (event.status, event.description))
            elif type(event) is LinkAttached:
                _resolve(self._attaching.pop(event.name, None), None)
            elif type(event) is LinkDetached:
                self._detached(event)
            elif type(event) is Opened:
                _resolve(self._opened, None)
            elif type(event) is Closed:
                self._finish(event.reason)

    def _received(self, event: Received) -> None:
        callback = self._receivers.get(event.link)
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            log.exception("upstream: handling an incoming AMQP message failed")

    def _detached(self, event: LinkDetached) -> None:
        self._receivers.pop(event.name, None)
        self._lose(event.name)
        attaching = self._attaching.pop(event.name, None)
        if attaching is not None and not attaching.done():
            attaching.set_exception(LinkRefusedError(event.name, event.condition, event.description))
        elif event.attached:
            log.info("upstream: the parent detached %s: %s %s",
                     event.name, event.condition, event.description)
            self._on_detached(event.name, event.condition)

    def _lose(self, name: str) -> None:
        for future in self._outcomes.pop(name, {}).values():
            if not future.done():
                future.set_result(Outcome.LOST)

    # -- internals -----------------------------------------------------------------------------

    def _require_open(self) -> None:
        if not self.is_open:
            raise EndpointUnavailable("upstream AMQP connection is closed")

    async def _attached(self, name: str, address: str) -> None:
        attached: asyncio.Future[None] = self._loop.create_future()
        self._attaching[name] = attached
        self._schedule_flush()
        try:
            await self._wait(attached, f"no attach for {address}")
        except LinkRefusedError as exc:
            raise (AuthError(str(exc)) if exc.condition == UNAUTHORIZED else exc) from None
        finally:
            self._attaching.pop(name, None)

    async def _wait(self, future: asyncio.Future[_T], what: str) -> _T:
        """``future``'s result, EndpointUnavailable when the connection ends or nothing comes in time."""
        try:
            waiters: set[asyncio.Future[Any]] = {future, self._closed}
            async with asyncio.timeout(self._config.connect_timeout):
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise EndpointUnavailable(f"{self._config.host}: {what}") from None
        if future not in done:
            raise EndpointUnavailable(f"upstream AMQP connection closed: {self._closed.result()}")
        return future.result()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            return
        data = self._session.data_to_send()
        if data:
            websocket = self._websocket
            transport.write(data if websocket is None else websocket.send(data))

    def _schedule_tick(self) -> None:
        deadline, events = self._session.tick(self._loop.time())
        self._handle(events)
        self._schedule_flush()
        if self._finished or not deadline:
            return
        self._timer = self._loop.call_at(deadline, self._schedule_tick)

    def _finish(self, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        self._session.connection_lost()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        for name in list(self._outcomes):
            self._lose(name)
        self._receivers.clear()
        if not self._opened.done():
            self._opened.set_exception(EndpointUnavailable(f"{self._config.host}: {reason}"))
            self._opened.exception()
        if not self._closed.done():
            self._closed.set_result(reason)

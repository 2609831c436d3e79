"""Test doubles for the upstream link: a scriptable parent handing out fake connections, and a DownstreamPort.

Test support only; nothing here does I/O, sleeps or reads a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.message import Message
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.connection import SUBACK_FAILURE, IncomingPublish, OnMessage


class FakeParent:
    """The parent as the link sees it: accepts or refuses connects, acks publishes, sends messages."""

    def __init__(self) -> None:
        self.reachable = True
        self.refuse_credentials = False
        self.auto_ack = True
        self.refused_filters: set[str] = set()
        self.connections: list[FakeConnection] = []
        self.attempts = 0
        self.crash_with: list[BaseException] = []

    def connect(self, config: UpstreamConfig, password: str, on_message: OnMessage) -> FakeConnection:
        if self.crash_with:
            self.attempts += 1
            raise self.crash_with.pop(0)
        connection = FakeConnection(self, password, on_message)
        self.connections.append(connection)
        return connection

    @property
    def current(self) -> FakeConnection:
        return self.connections[-1]


@dataclass
class FakeConnection:
    """Implements edgehub.upstream.connection.UpstreamConnection against a FakeParent."""

    parent: FakeParent
    password: str
    on_message: OnMessage
    subscriptions: list[list[str]] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    acks: list[asyncio.Future[bool]] = field(default_factory=list)
    acked_mids: list[int] = field(default_factory=list)
    closed_reason: str | None = None
    _open: bool = False
    _closed: asyncio.Future[str] | None = None

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        self.parent.attempts += 1
        self._closed = asyncio.get_running_loop().create_future()
        if not self.parent.reachable:
            self._finish("refused")
            raise EndpointUnavailable("connection refused")
        if self.parent.refuse_credentials:
            self._finish("not authorized")
            raise AuthError("not authorized")
        self._open = True

    async def subscribe(self, filters: Sequence[str]) -> list[int]:
        self.subscriptions.append(list(filters))
        return [SUBACK_FAILURE if f in self.parent.refused_filters else 1 for f in filters]

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self._open:
            acked.set_result(False)
            return acked
        self.published.append((topic, payload))
        self.acks.append(acked)
        if self.parent.auto_ack:
            acked.set_result(True)
        return acked

    def ack(self, mid: int) -> None:
        if self._open:
            self.acked_mids.append(mid)

    def abort(self, reason: str) -> None:
        self._finish(reason)

    async def close(self) -> None:
        self._finish("closed by the hub")

    async def wait_closed(self) -> str:
        assert self._closed is not None
        return await asyncio.shield(self._closed)

    # -- test controls ---------------------------------------------------------------------------

    def drop(self, reason: str = "connection reset") -> None:
        self._finish(reason)

    def deliver(self, topic: str, payload: bytes, mid: int, qos: int = 1) -> None:
        self.on_message(IncomingPublish(topic, payload, mid, qos))

    def _finish(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self._open = False
        self.closed_reason = reason
        for acked in self.acks:
            if not acked.done():
                acked.set_result(False)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(reason)


class FakeHub:
    """A DownstreamPort that records enqueues; it can hold them (``gate``) or refuse them (``fail_with``)."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, list[Message]]] = []
        self.attempts = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: list[BaseException] = []

    async def enqueue(self, endpoint: str, messages: Sequence[Message]) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.stored.append((endpoint, list(messages)))

"""An in-memory AMQP 1.0 parent for the upstream link's tests: a server-role proton engine wired to the
link's asyncio protocol through a fake transport, no sockets.

It accepts SASL ANONYMOUS, answers CBS put-token (``tokens`` decides), attaches or refuses links
(``authorize`` decides), settles transfers with ``outcome`` (or holds them for the test), and sends
messages down on devicebound links.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proton import Collector, Condition, Connection, Delivery, Endpoint, Event, Link, Message, Transport

from edgehub.amqp.messages import body_bytes
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.transport import OpenedStream

ACCEPTED = Delivery.ACCEPTED


@dataclass
class PeerState:
    """What every connection to this parent shares: the policy and what arrived."""

    tokens: Callable[[str, str], int] = lambda audience, token: 200
    """put-token (audience, token) -> status code."""
    authorize: Callable[[str, set[str]], str | None] = lambda address, audiences: None
    """(link address, audiences authorized on the connection) -> None to attach, else an error condition."""
    outcome: Callable[[Message], int | None] = lambda message: ACCEPTED
    """Disposition for an incoming transfer; None holds it unsettled (see ``held``)."""
    credit: int = 1000
    reachable: bool = True
    received: list[tuple[str, Message]] = field(default_factory=list)
    puts: list[tuple[str, str]] = field(default_factory=list)
    held: list[Delivery] = field(default_factory=list)
    connections: list[PeerConnection] = field(default_factory=list)
    subprotocols: list[str] = field(default_factory=list)
    twin: Callable[[Message], Message | None] = lambda request: None
    """The answer to a twin request (None: no answer)."""
    service_requests: list[tuple[str, Message]] = field(default_factory=list)
    """Twin requests and method answers the link sent, with their link address."""

    @property
    def bodies(self) -> list[bytes]:
        return [body_bytes(message) for _, message in self.received]

    async def opener(self, config: UpstreamConfig, protocol: asyncio.Protocol,
                     subprotocol: str) -> OpenedStream:
        """A StreamOpener: a new in-memory connection, or EndpointUnavailable while not ``reachable``."""
        from edgehub.errors import EndpointUnavailable

        self.subprotocols.append(f"{config.transport.value}:{subprotocol}")
        if not self.reachable:
            raise EndpointUnavailable(f"cannot connect to {config.host}:{config.port}: refused")
        peer = PeerConnection(self, protocol)
        self.connections.append(peer)
        return OpenedStream(peer.transport, None, b"")

    @property
    def last(self) -> PeerConnection:
        return self.connections[-1]


class _Pipe(asyncio.Transport):
    """The link's side of the wire: writes go to the peer, the peer's bytes come back next loop turn."""

    def __init__(self, peer: PeerConnection) -> None:
        super().__init__()
        self._peer = peer
        self.closed = False

    def write(self, data: Any) -> None:
        if not self.closed:
            self._peer.feed(bytes(data))

    def abort(self) -> None:
        self._peer.drop()

    def close(self) -> None:
        self._peer.drop()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class PeerConnection:
    """One connection at the parent."""

    def __init__(self, state: PeerState, protocol: asyncio.Protocol) -> None:
        self.state = state
        self.protocol = protocol
        self.transport = _Pipe(self)
        self._loop = asyncio.get_running_loop()
        self.connection = Connection()
        self._collector = Collector()
        self.connection.collect(self._collector)
        self._engine = Transport(Transport.SERVER)
        self._engine.sasl().allowed_mechs("ANONYMOUS")
        self._engine.bind(self.connection)
        self.audiences: set[str] = set()
        self._cbs_reply: Link | None = None
        self._c2d_tags = itertools.count(1)
        self.links: dict[str, Link] = {}
        """The parent's sending links (the upstream link receives on them), by address."""
        self.inbound: dict[str, Link] = {}
        """The parent's receiving links (the upstream link sends on them), by address."""

    # -- the wire ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        engine = self._engine
        while data:
            capacity = engine.capacity()
            if capacity <= 0:
                break
            engine.push(data[:capacity])
            data = data[capacity:]
        self._process()

    def drop(self) -> None:
        """The socket closes: the link sees connection_lost on the next loop turn."""
        if not self.transport.closed:
            self.transport.closed = True
            self._loop.call_soon(self.protocol.connection_lost, None)

    def close(self, condition: str | None = None) -> None:
        """The parent closes the connection (with an error condition when given)."""
        if condition:
            self.connection.condition = Condition(condition, "closed by the test")
        self.connection.close()
        self._flush()
        self.drop()

    def _flush(self) -> None:
        pending = self._engine.pending()
        if pending > 0 and not self.transport.closed:
            data = self._engine.peek(pending)
            self._engine.pop(pending)
            self._loop.call_soon(self._deliver, data)

    def _deliver(self, data: bytes | None) -> None:
        if data and not self.transport.closed:
            self.protocol.data_received(data)

    # -- the parent's side ---------------------------------------------------------------------

    def send_down(self, device_id: str, message: Message | bytes) -> Delivery:
        """A cloud-to-device message (or raw transfer bytes) on the device's devicebound link."""
        link = self.links[f"/devices/{device_id}/messages/devicebound"]
        delivery = link.delivery(f"c2d-{next(self._c2d_tags)}")
        link.send(message if isinstance(message, bytes) else message.encode())
        link.advance()
        self._process()
        return delivery

    def reply(self, address: str, message: Message) -> None:
        """A message on the parent's sending link at ``address`` (twin answers, desired patches, calls)."""
        link = self.links[address]
        link.delivery(f"r{len(self.state.service_requests)}-{id(message)}")
        link.send(message.encode())
        link.advance()
        self._process()

    def detach(self, address: str, condition: str) -> None:
        link = self.inbound.pop(address, None) or self.links.pop(address)
        link.condition = Condition(condition, "detached by the test")
        link.close()
        self._process()

    def settle_held(self, outcome: int) -> None:
        for delivery in self.state.held:
            delivery.update(outcome)
            delivery.settle()
        self.state.held.clear()
        self._process()

    def _process(self) -> None:
        while (event := self._collector.peek()) is not None:
            self._on(event)
            self._collector.pop()
        self._flush()

    def _on(self, event: Event) -> None:
        kind = event.type
        if kind is Event.CONNECTION_REMOTE_OPEN:
            self.connection.open()
        elif kind is Event.SESSION_REMOTE_OPEN and event.session is not None:
            event.session.open()
        elif kind is Event.LINK_REMOTE_OPEN and event.link is not None:
            self._attach(event.link)
        elif kind is Event.LINK_REMOTE_CLOSE and event.link is not None:
            event.link.close()
        elif kind is Event.CONNECTION_REMOTE_CLOSE:
            self.connection.close()
        elif kind is Event.DELIVERY and event.delivery is not None:
            self._delivery(event.delivery)

    def _attach(self, link: Link) -> None:
        if link.state & Endpoint.LOCAL_ACTIVE:
            return
        address = (link.remote_target if link.is_receiver else link.remote_source).address or ""
        if address == "$cbs":
            self._accept(link)
            if link.is_sender:
                self._cbs_reply = link
            return
        refusal = self.state.authorize(address, self.audiences)
        if refusal is not None:
            link.condition = Condition(refusal, f"not authorized for {address}")
            link.close()
            return
        self._accept(link)
        (self.links if link.is_sender else self.inbound)[address] = link

    def _accept(self, link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.open()
        if link.is_receiver:
            link.flow(self.state.credit)

    def _delivery(self, delivery: Delivery) -> None:
        link = delivery.link
        if not link.is_receiver or delivery.partial or not delivery.readable:
            return
        data = link.recv(delivery.pending) or b""
        link.advance()
        message = Message()
        message.decode(data)
        address = link.remote_target.address or ""
        if address == "$cbs":
            self._put_token(delivery, message)
            return
        if address.endswith(("/twin", "/methods/devicebound")):
            delivery.update(ACCEPTED)
            delivery.settle()
            link.flow(1)
            self.state.service_requests.append((address, message))
            answer = self.state.twin(message) if address.endswith("/twin") else None
            if answer is not None:
                self.reply(address, answer)
            return
        self.state.received.append((address, message))
        outcome = self.state.outcome(message)
        if outcome is None:
            self.state.held.append(delivery)
        else:
            delivery.update(outcome)
            delivery.settle()
        link.flow(1)

    def _put_token(self, delivery: Delivery, request: Message) -> None:
        properties: dict[Any, Any] = request.properties or {}
        audience, token = str(properties.get("name")), str(request.body)
        self.state.puts.append((audience, token))
        status = self.state.tokens(audience, token)
        if 200 <= status < 300:
            self.audiences.add(audience)
        delivery.update(ACCEPTED)
        delivery.settle()
        delivery.link.flow(1)
        reply = self._cbs_reply
        assert reply is not None, "the CBS reply link is attached before any put-token"
        answer = Message(correlation_id=request.id, properties={
            "status-code": status, "status-description": "OK" if status < 300 else "Unauthorized"})
        reply.delivery(str(request.id))
        reply.send(answer.encode())
        reply.advance()

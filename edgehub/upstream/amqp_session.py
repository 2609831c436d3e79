"""The client side of one AMQP 1.0 connection to the parent, sans-I/O: bytes in, events and bytes out.

Owns one client-role AmqpEngine (edgehub.amqp.engine, shared with the AMQP head) with SASL ANONYMOUS, the one
session, links by name, delivery tags and CBS correlation ids; it never touches sockets, asyncio or
clocks (time is passed in as ``now``) and knows nothing of edgehub messages or identities.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Final

from proton import Delivery, Disposition, Endpoint, Event, Link, Message, Receiver, Sender, Session, symbol

from edgehub.amqp.cbs import CBS_ADDRESS, parse_put_token_response, put_token_request
from edgehub.amqp.engine import AmqpEngine, ClientSasl, Role
from edgehub.amqp.messages import MessageFormatError, decode

CBS_NODE: Final = CBS_ADDRESS
"""The claims-based-security node of IoT Hub and Azure Service Bus (AMQP CBS draft, §3)."""
CBS_REPLY_TO: Final = "cbs"
IDLE_TIMEOUT: Final = 120.0
"""Seconds of silence after which the parent may count us gone (AMQP 1.0 §2.4.5); proton sends empty
frames at half the parent's own idle timeout."""


class Outcome(enum.Enum):
    """The parent's verdict on one transfer (AMQP 1.0 §3.4)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RELEASED = "released"
    MODIFIED = "modified"
    LOST = "lost"
    """The link or connection ended before any outcome came (the parent may or may not have it)."""


_OUTCOMES: Final[dict[int, Outcome]] = {
    int(Disposition.ACCEPTED): Outcome.ACCEPTED,
    int(Disposition.REJECTED): Outcome.REJECTED,
    int(Disposition.RELEASED): Outcome.RELEASED,
    int(Disposition.MODIFIED): Outcome.MODIFIED,
}


@dataclass(frozen=True, slots=True)
class Opened:
    """The parent answered the connection's open: links may attach."""


@dataclass(frozen=True, slots=True)
class LinkAttached:
    name: str


@dataclass(frozen=True, slots=True)
class LinkDetached:
    """The parent detached a link (or refused to attach it: then ``attached`` is False)."""

    name: str
    condition: str
    description: str
    attached: bool


@dataclass(frozen=True, slots=True)
class Settled:
    """The parent's outcome for the transfer ``tag`` on link ``link``."""

    link: str
    tag: int
    outcome: Outcome
    condition: str = ""


@dataclass(frozen=True, slots=True)
class CbsAnswered:
    """The answer to put-token request ``request_id`` (status-code 200/202 = authorized)."""

    request_id: int
    status: int
    description: str


@dataclass(frozen=True, slots=True)
class Received:
    """A whole message on receiver link ``link``; settle it with ``AmqpClientSession.settle(delivery)``."""

    link: str
    delivery: int
    message: Message = field(repr=False)


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection ended (the parent closed it, the transport failed or SASL refused us)."""

    reason: str


SessionEvent = Opened | LinkAttached | LinkDetached | Settled | CbsAnswered | Received | Closed


class AmqpClientSession:
    """One client connection: ``open``, then ``receive_data``/``data_to_send`` and the returned events.

    Links are named by the caller and carry unsettled transfers (at-least-once: the parent settles,
    AMQP 1.0 §2.6.12). The CBS pair (sender to ``$cbs``, receiver from it) attaches on ``open``; a
    put-token answer is matched by correlation id. ``tick(now)`` runs the idle-timeout rules and
    returns the next time it needs calling.
    """

    def __init__(self, *, container_id: str, hostname: str, max_frame_size: int = 65_536) -> None:
        self._engine = AmqpEngine(
            self, role=Role.CLIENT, sasl=ClientSasl("ANONYMOUS"), max_frame_size=max_frame_size,
            idle_timeout=IDLE_TIMEOUT, container_id=container_id,
            # IoT Hub routes by the open's hostname (AMQP 1.0 §2.7.1): the hub's name, not the address.
            hostname=hostname,
        )
        self._connection = self._engine.connection
        self._out: list[SessionEvent] = []
        self._session: Session | None = None
        self._links: dict[str, Link] = {}
        """By the caller's name; proton's link name adds a generation (``{name}#{n}``), so a link attached
        again under the same name is never confused with the one still detaching."""
        self._generations = itertools.count(1)
        self._attached: set[str] = set()
        self._deliveries: dict[int, Delivery] = {}
        self._tags = itertools.count(1)
        self._sent: dict[int, str] = {}
        """The link name of each transfer not settled yet, by tag."""
        self._delivery_ids = itertools.count(1)
        self._cbs_ids = itertools.count(1)
        self._ended = False

    @property
    def ended(self) -> bool:
        """The connection ended (a Closed event was returned)."""
        return self._ended

    # -- commands ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the connection, its session and the CBS links (frames leave with ``data_to_send``)."""
        self._connection.open()
        self._session = self._connection.session()
        self._session.open()
        self.attach_sender(CBS_NODE, CBS_NODE)
        self.attach_receiver(CBS_REPLY_TO, CBS_NODE, credit=10, target=CBS_REPLY_TO)

    def attach_sender(self, name: str, address: str, properties: dict[str, str] | None = None) -> None:
        """A sender link to ``address`` (with attach ``properties``, AMQP 1.0 §2.7.3); transfers stay
        unsettled until the parent settles them."""
        sender = self._require_session().sender(f"{name}#{next(self._generations)}")
        if properties:
            sender.properties = {symbol(key): value for key, value in properties.items()}
        sender.target.address = address
        sender.source.address = name
        sender.snd_settle_mode = Link.SND_UNSETTLED
        sender.rcv_settle_mode = Link.RCV_FIRST
        self._links[name] = sender
        sender.open()

    def attach_receiver(self, name: str, address: str, *, credit: int, target: str | None = None,
                        properties: dict[str, str] | None = None) -> None:
        """A receiver link from ``address`` with ``credit`` messages of link credit (AMQP 1.0 §2.6.7)."""
        receiver = self._require_session().receiver(f"{name}#{next(self._generations)}")
        if properties:
            receiver.properties = {symbol(key): value for key, value in properties.items()}
        receiver.source.address = address
        receiver.target.address = target or name
        receiver.snd_settle_mode = Link.SND_UNSETTLED
        receiver.rcv_settle_mode = Link.RCV_FIRST
        self._links[name] = receiver
        receiver.open()
        receiver.flow(credit)

    def detach(self, name: str) -> None:
        link = self._links.pop(name, None)
        self._attached.discard(name)
        self._forget_sent(name)
        if link is not None and not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def is_attached(self, name: str) -> bool:
        return name in self._attached

    def send(self, name: str, message: Message | bytes) -> int:
        """Queue one unsettled transfer of ``message`` (or its encoded bytes) on sender link ``name``; its
        tag (for the Settled event). Without link credit proton holds it until the parent grants some.
        KeyError for an unknown link."""
        sender = self._links[name]
        if not isinstance(sender, Sender):
            raise KeyError(f"{name} is not a sender link")
        tag = next(self._tags)
        self._sent[tag] = name
        sender.delivery(str(tag))
        sender.send(message if isinstance(message, bytes) else message.encode())
        sender.advance()
        return tag

    def put_token(self, audience: str, token: str) -> int:
        """A CBS put-token request (AMQP CBS draft §3.2) for ``audience``; its request id."""
        request_id = next(self._cbs_ids)
        self.send(CBS_NODE, put_token_request(audience, token, reply_to=CBS_REPLY_TO,
                                              message_id=f"put-token-{request_id}"))
        return request_id

    def settle(self, delivery: int, outcome: Outcome) -> None:
        """Settle an incoming delivery with ``outcome`` and give its credit back (no-op if unknown)."""
        handle = self._deliveries.pop(delivery, None)
        if handle is None:
            return
        handle.update(_DISPOSITIONS[outcome])
        handle.settle()
        link = handle.link
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.flow(1)

    def close(self) -> None:
        """Close the connection cleanly (AMQP 1.0 §2.4.3); the close frame leaves with ``data_to_send``."""
        self._engine.close()

    def connection_lost(self) -> None:
        """The byte stream ended: the engine stops; unsettled transfers end LOST (the caller's to tell)."""
        self._engine.receive_eof()
        self._out.clear()

    # -- bytes ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[SessionEvent]:
        """Feed bytes from the parent; the events they caused."""
        self._engine.receive_data(data)
        return self._events()

    def data_to_send(self) -> bytes:
        return self._engine.data_to_send()

    def tick(self, now: float) -> tuple[float, list[SessionEvent]]:
        """Run the idle-timeout rules at ``now`` (monotonic seconds); (the next deadline or 0, events)."""
        deadline = self._engine.tick(now)
        return deadline, self._events()

    def drain_events(self) -> list[SessionEvent]:
        """Events caused by commands (sends, settles, closes made outside ``receive_data``)."""
        return self._events()

    # -- events --------------------------------------------------------------------------------

    def _require_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("open() the connection first")
        return self._session

    def _events(self) -> list[SessionEvent]:
        self._engine.process()
        engine = self._engine
        if engine.closed and not self._ended:
            self._end(self._out, engine.error or "the AMQP connection ended")
        out, self._out = self._out, []
        return out

    # proton events, by AmqpEngine's dispatch (method names are proton's)

    def on_connection_remote_open(self, event: Event) -> None:
        self._out.append(Opened())

    def on_link_remote_open(self, event: Event) -> None:
        if event.link is not None:
            self._link_opened(event.link, self._out)

    def on_link_remote_close(self, event: Event) -> None:
        if event.link is not None:
            self._link_closed(event.link, self._out)

    on_link_remote_detach = on_link_remote_close

    def on_delivery(self, event: Event) -> None:
        if event.delivery is not None:
            self._delivery(event.delivery, self._out)

    def on_connection_remote_close(self, event: Event) -> None:
        condition = self._connection.remote_condition
        self._end(self._out, _describe(condition) if condition else "the parent closed the connection")

    def on_transport_error(self, event: Event) -> None:
        condition = self._engine.transport.condition
        self._end(self._out, _describe(condition) if condition else "transport error")

    def on_transport_closed(self, event: Event) -> None:
        self._end(self._out, "connection closed")

    def _forget_sent(self, name: str) -> None:
        for tag in [tag for tag, link in self._sent.items() if link == name]:
            del self._sent[tag]

    def _ours(self, link: Link) -> str | None:
        """The caller's name of ``link`` while it is the current link of that name."""
        name = link.name.rpartition("#")[0]
        known = self._links.get(name)
        return name if known is not None and known.name == link.name else None

    def _link_opened(self, link: Link, out: list[SessionEvent]) -> None:
        # A refused attach comes as an attach with a null terminus followed by a detach (AMQP 1.0 §2.6.3).
        terminus = link.remote_target if link.is_sender else link.remote_source
        if terminus is None or terminus.address is None:
            return
        name = self._ours(link)
        if name is not None:
            self._attached.add(name)
            out.append(LinkAttached(name))

    def _link_closed(self, link: Link, out: list[SessionEvent]) -> None:
        condition = link.remote_condition
        name = self._ours(link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()
        if name is None:
            return  # detached by us before: nobody waits for it
        attached = name in self._attached
        del self._links[name]
        self._attached.discard(name)
        self._forget_sent(name)
        out.append(LinkDetached(
            name, (condition.name or "") if condition else "",
            (condition.description or "") if condition else "", attached,
        ))

    def _delivery(self, delivery: Delivery, out: list[SessionEvent]) -> None:
        link = delivery.link
        if isinstance(link, Receiver):
            if delivery.partial or not delivery.readable:
                return
            data = link.recv(delivery.pending) or b""
            link.advance()
            name = self._ours(link) or ""
            try:
                message = decode(data)
            except MessageFormatError:
                delivery.update(Delivery.REJECTED)  # AMQP 1.0 §3.4.2: undecodable, never redelivered as is
                delivery.settle()
                link.flow(1)
                return
            if name == CBS_REPLY_TO:
                delivery.update(Delivery.ACCEPTED)
                delivery.settle()
                link.flow(1)
                out.append(_cbs_answer(message))
                return
            number = next(self._delivery_ids)
            self._deliveries[number] = delivery
            out.append(Received(name, number, message))
            return
        outcome = _OUTCOMES.get(int(delivery.remote_state or 0))
        if outcome is None and not delivery.settled:
            return  # no terminal outcome yet (AMQP 1.0 §3.4: received is not one)
        tag = int(delivery.tag)
        delivery.settle()
        sender = self._sent.pop(tag, None)  # (proton's wrappers are costly: no link lookup per settle)
        if sender is None or sender == CBS_NODE or sender not in self._links:
            return
        reason = ""
        if outcome is Outcome.REJECTED:
            condition = delivery.remote.condition
            reason = (condition.name or "") if condition else ""
        out.append(Settled(sender, tag, outcome or Outcome.ACCEPTED, reason))

    def _end(self, out: list[SessionEvent], reason: str) -> None:
        """The first end reported wins; transfers still unsettled are the caller's to count LOST."""
        if self._ended:
            return
        self._ended = True
        self._links.clear()
        self._sent.clear()
        self._attached.clear()
        self._deliveries.clear()
        out.append(Closed(reason))


_DISPOSITIONS: Final = {
    Outcome.ACCEPTED: Delivery.ACCEPTED,
    Outcome.REJECTED: Delivery.REJECTED,
    Outcome.RELEASED: Delivery.RELEASED,
    Outcome.MODIFIED: Delivery.MODIFIED,
}


def _cbs_answer(message: Message) -> CbsAnswered:
    status, description = parse_put_token_response(message)
    correlation = str(message.correlation_id or "")
    number = correlation.removeprefix("put-token-")
    return CbsAnswered(int(number) if number.isdigit() else 0, status, description)


def _describe(condition: object) -> str:
    name = getattr(condition, "name", "")
    description = getattr(condition, "description", "") or ""
    return f"{name}: {description}" if description else str(name)

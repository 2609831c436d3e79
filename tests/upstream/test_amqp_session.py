"""Tests of the sans-I/O AMQP client session (bytes in, events out) against the in-memory proton parent:
open and the CBS pair, put-token answers, refused and re-attached links, transfer outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proton import Delivery

from edgehub.message import Message
from edgehub.testing.clock import settle
from edgehub.upstream.amqp_session import (
    AmqpClientSession,
    CbsAnswered,
    LinkAttached,
    LinkDetached,
    Opened,
    Outcome,
    SessionEvent,
    Settled,
)
from edgehub.upstream.amqp_wire import encode_telemetry
from tests.upstream.amqp_peer import PeerConnection, PeerState


class Wire(asyncio.Protocol):
    """The session on one end of the in-memory wire, collecting its events."""

    def __init__(self, session: AmqpClientSession) -> None:
        self.session = session
        self.events: list[SessionEvent] = []
        self.peer: PeerConnection | None = None

    def data_received(self, data: bytes) -> None:
        self.events += self.session.receive_data(data)
        self.flush()

    def flush(self) -> None:
        assert self.peer is not None
        self.events += self.session.drain_events()
        data = self.session.data_to_send()
        if data:
            self.peer.feed(data)

    def take(self) -> list[SessionEvent]:
        events, self.events = self.events, []
        return events


async def connected(state: PeerState) -> Wire:
    wire = Wire(AmqpClientSession(container_id="edge/$edgeHub", hostname="hub.example"))
    wire.peer = PeerConnection(state, wire)
    wire.session.open()
    wire.flush()
    await settle()
    return wire


async def until(wire: Wire, condition: Callable[[list[SessionEvent]], bool]) -> list[SessionEvent]:
    seen: list[SessionEvent] = []
    for _ in range(50):
        await asyncio.sleep(0)
        seen += wire.take()
        if condition(seen):
            return seen
    raise AssertionError(f"not seen: {seen}")


async def test_open_attaches_the_cbs_pair_and_a_put_token_is_answered_by_correlation() -> None:
    state = PeerState(tokens=lambda audience, token: 200 if token == "good" else 401)
    wire = await connected(state)
    assert wire.take() == [Opened(), LinkAttached("$cbs"), LinkAttached("cbs")]
    first = wire.session.put_token("hub/devices/d1", "good")
    second = wire.session.put_token("hub/devices/d2", "bad")
    wire.flush()
    events = await until(wire, lambda seen: len(seen) >= 2)
    answers = sorted((e.request_id, e.status) for e in events if isinstance(e, CbsAnswered))
    assert answers == [(first, 200), (second, 401)]


async def test_a_refused_attach_is_a_detach_that_never_attached_with_the_parents_condition() -> None:
    state = PeerState(authorize=lambda address, audiences: "amqp:unauthorized-access")
    wire = await connected(state)
    wire.take()
    wire.session.attach_sender("events:d1", "/devices/d1/messages/events")
    wire.flush()
    events = await until(wire, lambda seen: any(isinstance(e, LinkDetached) for e in seen))
    assert LinkAttached("events:d1") not in events
    refusal = "not authorized for /devices/d1/messages/events"
    assert LinkDetached("events:d1", "amqp:unauthorized-access", refusal, attached=False) in events
    assert not wire.session.is_attached("events:d1")


async def test_a_link_attached_again_under_its_name_is_not_taken_for_the_one_detaching() -> None:
    wire = await connected(PeerState())
    wire.take()
    wire.session.attach_sender("events:d1", "/devices/d1/messages/events")
    wire.flush()
    await until(wire, lambda seen: LinkAttached("events:d1") in seen)
    wire.session.detach("events:d1")
    wire.session.attach_sender("events:d1", "/devices/d1/messages/events")
    wire.flush()
    events = await until(wire, lambda seen: LinkAttached("events:d1") in seen)
    await settle()
    events += wire.take()
    assert not any(isinstance(e, LinkDetached) for e in events)
    assert wire.session.is_attached("events:d1")


async def test_transfers_settle_with_the_parents_outcome_by_tag() -> None:
    state = PeerState(outcome=lambda m: Delivery.REJECTED if m.body == b"bad" else Delivery.ACCEPTED)
    wire = await connected(state)
    wire.session.attach_sender("events:d1", "/devices/d1/messages/events")
    wire.flush()
    await until(wire, lambda seen: LinkAttached("events:d1") in seen)
    good = wire.session.send("events:d1", encode_telemetry(Message(b"good")))
    bad = wire.session.send("events:d1", encode_telemetry(Message(b"bad")))
    wire.flush()
    events = await until(wire, lambda seen: sum(isinstance(e, Settled) for e in seen) == 2)
    settled = sorted((e for e in events if isinstance(e, Settled)), key=lambda e: e.tag)
    assert settled == [Settled("events:d1", good, Outcome.ACCEPTED),
                       Settled("events:d1", bad, Outcome.REJECTED)]

"""The links the hub sends on, for one AMQP connection: queues, credit, settlement, twin and methods.

Sans-I/O bookkeeping beside connection.py: it turns ``send_*`` calls into transfers as the client's
credit allows (AMQP 1.0 §2.6.7) and dispositions into DeliverySettled events; it parses twin
requests and method responses into events. No I/O, no clock, no authorization.

Twin and methods follow IoT Hub over AMQP (edgeHub TwinReceivingLinkHandler, the Node SDK's
AmqpTwinClient and AmqpDeviceMethodClient): requests carry the ``operation`` message annotation
(GET, PATCH ``/properties/reported``, PUT / DELETE ``/notifications/twin/properties/desired``) and a
correlation-id; responses echo the correlation-id with a ``status`` (and ``version``) annotation;
desired patches come without a correlation-id. Method requests carry the ``IoThub-methodname``
application property and the request id as correlation-id; answers ``IoThub-status``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, cast

import proton

from edgehub.amqp.messages import annotation, body_bytes, delivery_to_amqp
from edgehub.heads.amqp.addresses import LinkKind
from edgehub.heads.amqp.events import (
    DeliverySettled,
    Event,
    MethodLinkChanged,
    MethodResponded,
    Outcome,
    TwinOperation,
    TwinRequested,
)
from edgehub.message import Identity, Message
from edgehub.metrics import MESSAGES_DROPPED

log = logging.getLogger(__name__)

METHOD_NAME: Final = "IoThub-methodname"
METHOD_STATUS: Final = "IoThub-status"
MAX_QUEUED_REPLIES: Final = 1000
"""Twin and method messages waiting for credit on one link; beyond, the oldest go (a client that
grants no credit must not grow memory)."""


@dataclass(slots=True, eq=False)
class HubLink:
    """One attached link: its kind, the identity its address names, the identity that allowed it."""

    kind: LinkKind
    identity: Identity | None
    owner: Identity | None
    link: proton.Link
    queue: deque[tuple[bytes, int | None, int]] = field(default_factory=deque)
    """Encoded messages waiting for credit: (payload, send token or None if pre-settled, index)."""
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Delivery tag → (send token, index) of unsettled transfers."""

    @property
    def hub_receives(self) -> bool:
        """The client sends on it (``$cbs`` exists in both directions)."""
        return bool(self.link.is_receiver)


class OutboundLinks:
    """The hub's sending links of one connection, by kind and identity."""

    def __init__(self, events: list[Event]) -> None:
        self._events = events
        self._by_identity: dict[tuple[LinkKind, Identity], HubLink] = {}
        self._cbs: dict[proton.Session, HubLink] = {}
        self._tags = itertools.count(1)
        self._tokens = itertools.count(1)

    def opened(self, state: HubLink) -> None:
        if state.kind is LinkKind.CBS:
            self._cbs[state.link.session] = state
        elif state.identity is not None:
            self._by_identity[(state.kind, state.identity)] = state  # a newer link replaces an older

    def closed(self, state: HubLink) -> None:
        if state.kind is LinkKind.CBS:
            if self._cbs.get(state.link.session) is state:
                del self._cbs[state.link.session]
        elif state.identity is not None and self._by_identity.get((state.kind, state.identity)) is state:
            del self._by_identity[(state.kind, state.identity)]
        for token, index in state.sent.values():
            self._events.append(DeliverySettled(token, index, Outcome.LOST))
        for _payload, token_or_none, index in state.queue:
            if token_or_none is not None:
                self._events.append(DeliverySettled(token_or_none, index, Outcome.LOST))
        state.sent.clear()
        state.queue.clear()

    def link(self, kind: LinkKind, identity: Identity) -> HubLink | None:
        return self._by_identity.get((kind, identity))

    # --- messages (module inputs, cloud-to-device) ---------------------------------------------

    def send_messages(self, kind: LinkKind, identity: Identity, messages: list[Message],
                      input_name: str | None) -> int | None:
        """Queue ``messages`` on ``identity``'s ``kind`` link; the send token (its DeliverySettled
        events follow, one per message), or None when there is no such link."""
        state = self._by_identity.get((kind, identity))
        if state is None:
            return None
        token = next(self._tokens)
        limit = state.link.remote_max_message_size or 0
        for index, message in enumerate(messages):
            payload = delivery_to_amqp(message, input_name).encode()
            if limit and len(payload) > limit:
                MESSAGES_DROPPED.labels("too_large_for_client", "", "").inc()
                self._events.append(DeliverySettled(token, index, Outcome.REJECTED))
                continue
            state.queue.append((payload, token, index))
        self.pump(state)
        return token

    def send_reply(self, kind: LinkKind, identity: Identity, message: proton.Message) -> bool:
        """Send a twin or method message pre-settled (at most once, as edgeHub); False without a link."""
        state = self._by_identity.get((kind, identity))
        if state is None:
            return False
        if len(state.queue) >= MAX_QUEUED_REPLIES:
            state.queue.popleft()
        state.queue.append((message.encode(), None, 0))
        self.pump(state)
        return True

    def send_cbs_response(self, session: proton.Session, response: proton.Message) -> None:
        state = self._cbs.get(session) or next(iter(self._cbs.values()), None)
        if state is None:
            log.debug("AMQP put-token answered on no link: the client attached no $cbs receiver")
            return
        state.queue.append((response.encode(), None, 0))
        self.pump(state)

    def pump(self, state: HubLink) -> None:
        link = state.link
        while state.queue and link.credit > 0 and link.state & proton.Endpoint.LOCAL_ACTIVE:
            payload, token, index = state.queue.popleft()
            tag = str(next(self._tags))
            delivery = link.delivery(tag)
            link.send(payload)
            link.advance()
            if token is None:
                delivery.settle()
            else:
                state.sent[tag] = (token, index)

    def settled(self, state: HubLink, delivery: proton.Delivery) -> None:
        """The client updated or settled a transfer of ours."""
        if not delivery.updated and not delivery.settled:
            return
        entry = state.sent.pop(_text(delivery.tag), None)
        remote = delivery.remote_state
        delivery.settle()
        if entry is None:
            return
        if remote == proton.Delivery.REJECTED:
            outcome = Outcome.REJECTED
        elif remote in (proton.Delivery.RELEASED, proton.Delivery.MODIFIED):
            outcome = Outcome.RELEASED
        else:
            outcome = Outcome.ACCEPTED  # accepted, or settled without a state (receiver settles first)
        self._events.append(DeliverySettled(entry[0], entry[1], outcome))
        if outcome is Outcome.RELEASED:
            self._hold_back(state, entry[0])

    def _hold_back(self, state: HubLink, token: int) -> None:
        """A message of send ``token`` comes again: so do the ones queued after it, unsent, so that
        the next attempt delivers them in order (docs/architecture.md §1 invariant 4)."""
        kept: deque[tuple[bytes, int | None, int]] = deque()
        for entry in state.queue:
            if entry[1] == token:
                self._events.append(DeliverySettled(token, entry[2], Outcome.RELEASED))
            else:
                kept.append(entry)
        state.queue = kept


class ServiceRequests:
    """Twin and method traffic of one connection: requests in as events, answers out."""

    def __init__(self, events: list[Event], outbound: OutboundLinks) -> None:
        self._events = events
        self._outbound = outbound

    def opened(self, state: HubLink) -> None:
        if state.kind is LinkKind.METHOD_REQUESTS and state.identity is not None:
            self._events.append(MethodLinkChanged(state.identity, True))

    def closed(self, state: HubLink) -> None:
        identity = state.identity
        if identity is None:
            return
        if state.kind is LinkKind.METHOD_REQUESTS and self._outbound.link(state.kind, identity) is None:
            self._events.append(MethodLinkChanged(identity, False))
        elif state.kind is LinkKind.TWIN_RESPONSES and self._outbound.link(state.kind, identity) is None:
            # No link to push desired patches on any more: the same as DELETE notifications.
            self._events.append(TwinRequested(identity, TwinOperation.DELETE, "", b""))

    def received(self, state: HubLink, message: proton.Message) -> None:
        identity = state.identity
        if identity is None:
            return
        if state.kind is LinkKind.TWIN_REQUESTS:
            self._twin_request(identity, message)
        elif state.kind is LinkKind.METHOD_RESPONSES:
            properties: dict[Any, Any] = message.properties or {}
            status = properties.get(METHOD_STATUS)
            rid = message.correlation_id
            if rid is None or not isinstance(status, int | str):
                log.info("AMQP method response of %s without correlation-id or %s dropped",
                         identity, METHOD_STATUS)
                return
            try:
                code = int(status)
                body = body_bytes(message)
            except ValueError:
                log.info("AMQP method response of %s with a bad status or body dropped", identity)
                return
            self._events.append(MethodResponded(identity, _text(rid), code, body))

    def _twin_request(self, identity: Identity, message: proton.Message) -> None:
        operation = annotation(message, "operation")
        correlation = message.correlation_id
        try:
            kind = TwinOperation(operation)
            body = body_bytes(message)
        except ValueError:
            log.info("AMQP twin request of %s with operation %r dropped", identity, str(operation)[:20])
            if correlation is not None:
                self.send_twin_response(identity, _text(correlation), 400, b'{"message":"unknown operation"}')
            return
        if correlation is None and kind is not TwinOperation.PATCH:
            log.info("AMQP twin %s of %s without correlation-id dropped", kind.value, identity)
            return
        rid = "" if correlation is None else _text(correlation)
        self._events.append(TwinRequested(identity, kind, rid, body))

    def send_twin_response(self, identity: Identity, correlation_id: str, status: int, body: bytes,
                           version: int | None = None) -> bool:
        response: Any = proton.Message(body=body)
        response.inferred = True
        response.correlation_id = correlation_id
        annotations: dict[proton.symbol, Any] = {proton.symbol("status"): proton.int32(status)}
        if version is not None:
            annotations[proton.symbol("version")] = proton.ulong(version) if version >= 0 else version
        response.annotations = annotations
        return self._outbound.send_reply(LinkKind.TWIN_RESPONSES, identity, cast(proton.Message, response))

    def send_desired(self, identity: Identity, patch: dict[str, Any]) -> bool:
        """A desired-properties patch: no correlation-id (Node SDK AmqpTwinClient)."""
        message: Any = proton.Message(body=json.dumps(patch, separators=(",", ":")).encode())
        message.inferred = True
        version = patch.get("$version")
        if isinstance(version, int):
            message.annotations = {proton.symbol("version"): proton.ulong(max(version, 0))}
        return self._outbound.send_reply(LinkKind.TWIN_RESPONSES, identity, cast(proton.Message, message))

    def send_method_request(self, identity: Identity, name: str, rid: str, payload: bytes) -> bool:
        request: Any = proton.Message(body=payload)
        request.inferred = True
        request.correlation_id = rid
        request.properties = {METHOD_NAME: name}
        return self._outbound.send_reply(LinkKind.METHOD_REQUESTS, identity, cast(proton.Message, request))


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)

"""One client's AMQP connection to the hub, sans-I/O: authentication, links, credit and settlement.

Owns the rules of the AMQP head (which links exist, who may attach them, when a delivery is
settled, which error a bad peer gets); it never awaits, opens sockets or reads a clock: the glue
passes ``now`` (Unix seconds) and acts on the returned events (edgehub.heads.amqp.events).

Rules (IoT Hub's AMQP surface as edgeHub serves it, docs/architecture.md §4):
- SASL PLAIN proves the connection's identity at once; SASL ANONYMOUS (or EXTERNAL) connections
  prove identities with CBS put-token on ``$cbs``, as many as they like; with ClientCertAuthEnabled
  a TLS client certificate proves the identity a link names. A link's address never proves anything.
- A credential runs out at its expiry: that identity's links are detached with
  ``amqp:unauthorized-access``; a put-token renewal before then moves the expiry.
- Telemetry is settled ``accepted`` only after the glue reports the durable write (``ingested``),
  ``rejected`` with the reason when the store refused it. Credit per receiving link is
  ``link_credit`` and comes back as deliveries settle (AMQP 1.0 §2.6.7), so memory is bounded.
- Messages the hub sends go out as the client's credit allows; their dispositions come back as
  DeliverySettled (accepted = delivered, released/modified = again, rejected = dropped).
- Errors: unknown address ``amqp:not-found``, identity not authenticated
  ``amqp:unauthorized-access``, message over the size bound ``amqp:link:message-size-exceeded``,
  over the session or link bound ``amqp:resource-limit-exceeded``, undecodable message
  ``amqp:decode-error`` (AMQP 1.0 §2.8.15).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import proton

from edgehub.amqp import cbs
from edgehub.amqp.engine import AmqpEngine, Role
from edgehub.amqp.messages import MessageFormatError, decode, from_amqp
from edgehub.amqp.sasl import SaslCode, SaslInit, SaslServer, parse_plain
from edgehub.auth.authorize import acts_for_others
from edgehub.errors import AuthError
from edgehub.heads.amqp.addresses import LinkKind, parse_address
from edgehub.heads.amqp.auth import AmqpAuthenticator
from edgehub.heads.amqp.events import (
    DeliveryLinkChanged,
    Event,
    IdentityAuthenticated,
    IdentityEnded,
    TelemetryReceived,
)
from edgehub.heads.amqp.links import HubLink, OutboundLinks, ServiceRequests
from edgehub.heads.mqtt.topics import connection_properties
from edgehub.logs import RateLimitedLine
from edgehub.message import Identity, Message

log = logging.getLogger(__name__)
_refused_line = RateLimitedLine(log, logging.INFO)

UNAUTHORIZED: Final = "amqp:unauthorized-access"
NOT_FOUND: Final = "amqp:not-found"
SIZE_EXCEEDED: Final = "amqp:link:message-size-exceeded"
RESOURCE_LIMIT: Final = "amqp:resource-limit-exceeded"
DECODE_ERROR: Final = "amqp:decode-error"

DELIVERY_KINDS: Final = frozenset({LinkKind.MODULE_INPUTS, LinkKind.DEVICEBOUND})
_SERVICE_KINDS: Final = frozenset({LinkKind.TWIN_REQUESTS, LinkKind.TWIN_RESPONSES, LinkKind.METHOD_REQUESTS,
                                   LinkKind.METHOD_RESPONSES})
_ON_BEHALF_OWN_DEVICE: Final = _SERVICE_KINDS | {LinkKind.MODULE_INPUTS}
"""What a child edge hub may use for the modules of its own device (and, for twins and methods, for any
device below it), as on MQTT (edgehub.auth.authorize, edgeHub's nested dialect)."""


@dataclass(frozen=True, slots=True)
class AmqpLimits:
    """Per-connection bounds (docs/architecture.md §1 invariant 6)."""

    max_message_size: int = 262_144
    max_sessions: int = 16
    max_links: int = 64
    link_credit: int = 100
    """Unsettled messages a client may have in flight on one link it sends on."""
    edge_hub_link_credit: int = 1000
    """The same for a child edge hub's telemetry links (it sends for everyone below it); reading
    still pauses above the glue's pending-bytes bound, so memory stays bounded."""
    max_frame_size: int = 64 * 1024
    idle_timeout: float = 240.0
    """Our idle timeout (AMQP 1.0 §2.4.5): a peer silent this long is closed; 0 for none."""

    def __post_init__(self) -> None:
        if min(self.max_message_size, self.max_sessions, self.max_links, self.link_credit,
               self.edge_hub_link_credit) < 1:
            raise ValueError("AmqpLimits: bounds must be positive")
        if self.max_frame_size < 512:
            raise ValueError("AmqpLimits: max_frame_size must be at least 512 (AMQP 1.0 §2.7.1)")


class AmqpServerConnection:
    """The hub's end of one AMQP connection; handler of its engine's proton events."""

    def __init__(
        self, authenticator: AmqpAuthenticator, limits: AmqpLimits, now: float, *,
        peer_certificates: Sequence[bytes] = (), container_id: str = "edgehub",
    ) -> None:
        self._auth = authenticator
        self.limits = limits
        self._now = now
        self._peer_certificates = tuple(peer_certificates)
        mechanisms = ("PLAIN", "ANONYMOUS") + (("EXTERNAL",) if self._peer_certificates else ())
        self._sasl = SaslServer(mechanisms, self._on_sasl_init)
        self.engine = AmqpEngine(
            self, role=Role.SERVER, sasl=self._sasl, max_frame_size=limits.max_frame_size,
            idle_timeout=limits.idle_timeout, container_id=container_id, channel_max=limits.max_sessions - 1,
        )
        self.identities: dict[Identity, float | None] = {}
        """Authenticated identities and when their credential ends (None: never)."""
        self._events: list[Event] = []
        self._links: dict[proton.Link, HubLink] = {}
        self._sessions = 0
        self._batch: list[Message] = []
        self._batch_deliveries: list[tuple[proton.Delivery, proton.Link]] = []
        self._ingests: dict[int, list[tuple[proton.Delivery, proton.Link]]] = {}
        self._tokens = itertools.count(1)
        self.outbound = OutboundLinks(self._events)
        self.services = ServiceRequests(self._events, self.outbound)
        self.refusals = 0
        """Links and messages refused (for tests and the log)."""

    # --- bytes and time ----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        self._now = now
        self.engine.receive_data(data)
        self._end_batch()
        return self._take_events()

    def data_to_send(self) -> bytes:
        return self.engine.data_to_send()

    @property
    def closed(self) -> bool:
        return self.engine.closed

    @property
    def authenticated(self) -> bool:
        return bool(self.identities)

    def tick(self, now: float) -> list[Event]:
        """Expire credentials that ran out and run the idle-timeout timers."""
        self._now = now
        expired = [identity for identity, ends in self.identities.items() if ends is not None and ends <= now]
        for identity in expired:
            _refused_line("AMQP credential of %s expired: its links are detached", identity)
            self._end_identity(identity, "the credential expired")
        if expired and not self.identities:
            # Nothing proven any more: the connection holds no slot and serves nobody (bounded).
            self.close(UNAUTHORIZED, "every credential of this connection expired")
        self.engine.tick(now)
        return self._take_events()

    def connection_lost(self) -> list[Event]:
        for link in list(self._links):
            self._forget_link(link)
        for identity in list(self.identities):
            self._events.append(IdentityEnded(identity))
        self.identities.clear()
        return self._take_events()

    def close(self, condition: str | None = None, description: str | None = None) -> None:
        self.engine.close(condition, description)

    # --- results from the glue ---------------------------------------------------------------

    def ingested(self, token: int, refusal: tuple[str, str] | None = None) -> None:
        """The batch ``token`` was stored (settle accepted) or refused (settle rejected with the
        ``(condition, description)``); either way its credit comes back."""
        credit: dict[proton.Link, int] = {}
        outcome = proton.Delivery.ACCEPTED if refusal is None else proton.Delivery.REJECTED
        for delivery, link in self._ingests.pop(token, []):
            if refusal is not None:
                delivery.local.condition = proton.Condition(*refusal)
            delivery.update(outcome)
            delivery.settle()
            credit[link] = credit.get(link, 0) + 1
        for link, count in credit.items():
            if link.state & proton.Endpoint.LOCAL_ACTIVE:
                link.flow(count)  # one flow frame per link for the whole batch (AMQP 1.0 §2.6.7)
        self.engine.process()

    def send_messages(
        self, identity: Identity, input_name: str | None, messages: list[Message],
    ) -> int | None:
        """Send ``messages`` to ``identity``'s module input ``input_name`` (or, when None, as its
        cloud-to-device messages); the send token of the DeliverySettled events that follow, or
        None when ``identity`` has no such link here."""
        kind = LinkKind.DEVICEBOUND if input_name is None else LinkKind.MODULE_INPUTS
        token = self.outbound.send_messages(kind, identity, messages, input_name)
        self.engine.process()
        return token

    def take_events(self) -> list[Event]:
        """Events caused by calls the glue made (send, ingested) rather than by bytes."""
        return self._take_events()

    # --- SASL --------------------------------------------------------------------------------

    def _on_sasl_init(self, init: SaslInit) -> SaslCode:
        if init.mechanism != "PLAIN":
            return SaslCode.OK  # ANONYMOUS / EXTERNAL: identities come by CBS or the certificate
        try:
            _authzid, username, password = parse_plain(init.initial_response)
            result = self._auth.plain(username, password, self._now)
        except (ValueError, AuthError) as exc:
            _refused_line("AMQP SASL PLAIN refused: %s", exc)
            return SaslCode.AUTH
        self._add_identity(result.identity, result.expires_at)
        return SaslCode.OK

    def _add_identity(self, identity: Identity, expires_at: float | None) -> None:
        fresh = identity not in self.identities
        self.identities[identity] = expires_at
        if fresh:
            self._events.append(IdentityAuthenticated(identity))

    def _end_identity(self, identity: Identity, why: str) -> None:
        self.identities.pop(identity, None)
        for link, state in list(self._links.items()):
            if state.owner == identity:
                self._close_link(link, UNAUTHORIZED, f"{identity}: {why}")
        self._events.append(IdentityEnded(identity))

    # --- proton events: connection and sessions ----------------------------------------------

    def on_connection_remote_open(self, event: Any) -> None:
        event.connection.open()

    def on_connection_remote_close(self, event: Any) -> None:
        event.connection.close()

    def on_session_remote_open(self, event: Any) -> None:
        session = event.session
        self._sessions += 1
        session.open()
        if self._sessions > self.limits.max_sessions:
            # channel-max bounds it on the wire already; a peer that ignores it still gets an error.
            limit = self.limits.max_sessions
            session.condition = proton.Condition(RESOURCE_LIMIT, f"at most {limit} sessions")
            session.close()

    def on_session_remote_close(self, event: Any) -> None:
        self._sessions -= 1
        event.session.close()

    # --- proton events: links ----------------------------------------------------------------

    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        hub_receives = link.is_receiver
        terminus = link.remote_target if hub_receives else link.remote_source
        address = terminus.address
        link.source.address = link.remote_source.address
        link.target.address = link.remote_target.address
        if len(self._links) >= self.limits.max_links:
            self._refuse(link, RESOURCE_LIMIT, f"at most {self.limits.max_links} links per connection")
            return
        parsed = parse_address(address, hub_receives=hub_receives)
        if parsed is None:
            role = "sender" if hub_receives else "receiver"
            self._refuse(link, NOT_FOUND, f"no {role} link at {str(address)[:120]!r}")
            return
        owner = None if parsed.kind is LinkKind.CBS else self._owner(parsed.kind, parsed.identity)
        if parsed.kind is not LinkKind.CBS and owner is None:
            self._refuse(link, UNAUTHORIZED, f"{parsed.identity} is not authenticated on this connection")
            return
        state = HubLink(parsed.kind, parsed.identity, owner, link)
        self._links[link] = state
        if hub_receives:
            link.max_message_size = self.limits.max_message_size
            link.open()
            # A child edge hub carries the messages of many senders on one link: a wider window.
            wide = owner is not None and acts_for_others(owner) and parsed.kind is LinkKind.TELEMETRY
            link.flow(self.limits.edge_hub_link_credit if wide else self.limits.link_credit)
            return
        link.open()
        self.outbound.opened(state)
        if parsed.kind in DELIVERY_KINDS and parsed.identity is not None:
            self._events.append(DeliveryLinkChanged(parsed.identity, True))
        self.services.opened(state)

    def on_link_remote_close(self, event: Any) -> None:
        link = event.link
        if link.state & proton.Endpoint.LOCAL_ACTIVE:
            link.close()
        self._forget_link(link)

    on_link_remote_detach = on_link_remote_close

    def on_link_flow(self, event: Any) -> None:
        state = self._links.get(event.link)
        if state is not None and not state.hub_receives:
            self.outbound.pump(state)

    def on_delivery_only(self, delivery: proton.Delivery) -> None:
        link = delivery.link
        state = self._links.get(link)
        if state is None:
            return
        if not state.hub_receives:
            self.outbound.settled(state, delivery)
            return
        if delivery.pending > self.limits.max_message_size:
            self._close_link(link, SIZE_EXCEEDED, f"message over {self.limits.max_message_size} bytes")
            return
        if not delivery.readable or delivery.partial:
            return
        data = link.recv(delivery.pending) or b""
        link.advance()
        try:
            message = decode(data)
        except MessageFormatError as exc:
            self._reject(delivery, DECODE_ERROR, str(exc))
            return
        if state.kind is LinkKind.TELEMETRY:
            self._on_telemetry(state, delivery, link, message)
        elif state.kind is LinkKind.CBS:
            self._on_put_token(state, delivery, message)
        else:
            self.services.received(state, message)
            self._settle(delivery, proton.Delivery.ACCEPTED)

    # --- telemetry -----------------------------------------------------------------------------

    def _on_telemetry(self, state: HubLink, delivery: proton.Delivery, link: proton.Link,
                      message: proton.Message) -> None:
        sender = state.identity
        assert sender is not None
        try:
            parsed = from_amqp(message)
        except MessageFormatError as exc:
            self._reject(delivery, DECODE_ERROR, str(exc))
            return
        self._batch.append(Message(parsed.body, parsed.properties,
                                   connection_properties(sender, parsed.system_properties)))
        self._batch_deliveries.append((delivery, link))

    def _end_batch(self) -> None:
        if not self._batch:
            return
        token = next(self._tokens)
        self._ingests[token] = self._batch_deliveries
        self._events.append(TelemetryReceived(self._batch, token))
        self._batch, self._batch_deliveries = [], []

    # --- CBS -----------------------------------------------------------------------------------

    def _on_put_token(self, state: HubLink, delivery: proton.Delivery, message: proton.Message) -> None:
        self._settle(delivery, proton.Delivery.ACCEPTED)
        try:
            request = cbs.parse_put_token(message)
        except cbs.CbsError as exc:
            _refused_line("AMQP CBS request refused: %s", exc)
            response = cbs.put_token_response(None, 400, str(exc), message.id, message.reply_to)
        else:
            try:
                result = self._auth.put_token(request.token, self._now)
            except AuthError as exc:
                _refused_line("AMQP CBS put-token for %s refused: %s", request.audience[:120], exc)
                response = cbs.put_token_response(request, 401, "unauthorized: " + str(exc)[:200])
            else:
                self._add_identity(result.identity, result.expires_at)
                response = cbs.put_token_response(request, 200, "OK")
        self.outbound.send_cbs_response(state.link.session, response)

    # --- who may attach what -----------------------------------------------------------------

    def _owner(self, kind: LinkKind, identity: Identity | None) -> Identity | None:
        """The authenticated identity that lets this connection use a link for ``identity``."""
        if identity is None:
            return None
        if identity in self.identities:
            return identity
        for held in self.identities:
            # A child edge hub sends and receives for the devices and modules below it
            # (edgehub.auth.authorize.acts_for_others, as on MQTT).
            if acts_for_others(held) and (
                kind is LinkKind.TELEMETRY
                or (kind is LinkKind.DEVICEBOUND and identity.module_id is None)
                or (kind in _ON_BEHALF_OWN_DEVICE and identity.device_id == held.device_id)
                or (kind in _SERVICE_KINDS and identity.module_id is None)
            ):
                return held
        if self._peer_certificates and self._auth.client_cert_auth:
            try:
                result = self._auth.certificate(identity, self._peer_certificates, self._now)
            except AuthError as exc:
                _refused_line("AMQP client certificate refused for %s: %s", identity, exc)
                return None
            self._add_identity(result.identity, result.expires_at)
            return result.identity
        return None

    # --- helpers -------------------------------------------------------------------------------

    def _refuse(self, link: proton.Link, condition: str, description: str) -> None:
        """Refuse an attach: attach back, then detach with the error (AMQP 1.0 §2.6.3)."""
        self.refusals += 1
        _refused_line("AMQP link %r refused: %s (%s)", str(link.name)[:80], condition, description)
        link.open()
        link.condition = proton.Condition(condition, description)
        link.close()

    def _close_link(self, link: proton.Link, condition: str, description: str) -> None:
        self.refusals += 1
        if link.state & proton.Endpoint.LOCAL_ACTIVE:
            link.condition = proton.Condition(condition, description)
            link.close()
        self._forget_link(link)

    def _forget_link(self, link: proton.Link) -> None:
        state = self._links.pop(link, None)
        if state is None:
            return
        if state.hub_receives:
            return
        self.outbound.closed(state)
        self.services.closed(state)
        if state.kind in DELIVERY_KINDS and state.identity is not None and not any(
            s.identity == state.identity and s.kind in DELIVERY_KINDS for s in self._links.values()
        ):
            self._events.append(DeliveryLinkChanged(state.identity, False))

    def _reject(self, delivery: proton.Delivery, condition: str, description: str) -> None:
        self.refusals += 1
        _refused_line("AMQP message refused: %s (%s)", condition, description[:200])
        delivery.local.condition = proton.Condition(condition, description[:200])
        self._settle(delivery, proton.Delivery.REJECTED)

    def _settle(self, delivery: proton.Delivery, outcome: int) -> None:
        delivery.update(outcome)
        delivery.settle()
        link = delivery.link
        if link.state & proton.Endpoint.LOCAL_ACTIVE:
            link.flow(1)

    def _take_events(self) -> list[Event]:
        events = self._events[:]
        self._events.clear()
        return events


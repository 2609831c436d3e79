"""Upstream as a cloud IoT hub sees it: one connection per sending identity, opened on demand.

Owns the pool of per-identity links (credentials, the connection cap, idle closing) and the
``$upstream`` endpoint that sends each message on its own sender's link; it never reads queues
or checkpoints (the pump does), and each link keeps its own connection with MqttUpstream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Final

from edgehub.clock import Clock, within
from edgehub.endpoints.base import ReachableListeners, SendResult, Unsubscribe
from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.message import Identity, MessageId
from edgehub.store.base import QueuedMessage
from edgehub.twins.port import MethodPort
from edgehub.upstream.config import SubscriptionScope, UpstreamConfig
from edgehub.upstream.credentials import Credentials, IotHubLogin, SasCredentials, SasToken
from edgehub.upstream.endpoint import UPSTREAM_ENDPOINT
from edgehub.upstream.mqtt import ConnectionFactory, MqttUpstream
from edgehub.upstream.port import DownstreamPort
from edgehub.upstream.presented import PresentedTokens
from edgehub.upstream.twin_sync import TwinCache, UpstreamTwins

log = logging.getLogger(__name__)

CONNECT_WAIT: Final = 10.0
"""Seconds a send waits for a newly opened identity's connection before it counts as 'not now'."""
SWEEP_INTERVAL: Final = 60.0
"""How often idle per-identity connections are looked for."""
MAX_SENT_AHEAD: Final = 100_000
"""Most message ids remembered as confirmed beyond the leading run (entries of expired messages
would otherwise stay)."""
@dataclass(frozen=True, slots=True)
class PresentedCredentials(IotHubLogin):
    """Credentials of an identity without a key here: the latest token it presented itself."""

    tokens: PresentedTokens = field(repr=False)

    def token(self, now: float) -> SasToken:
        known = self.tokens.valid(self.identity, now)
        if known is None:
            raise AuthError(f"no valid token of {self.identity} to connect upstream with")
        return SasToken(known[0], now, int(known[1]))


KeyLookup = Callable[[Identity], str | None]
"""The base64 symmetric key of an identity in the local registry, or None."""


class IdentityLinks:
    """Per-identity MqttUpstream links, at most ``max_links`` at once.

    Credentials, in order: a SAS token signed with the identity's key from the local registry;
    else the token the client presented, while it is valid; else none (the identity's messages
    wait). Cap policy: at the cap, the least recently used link with nothing in flight and no
    local client following its twin closes to make room; if every link is busy, the new identity
    waits ("not now") until one frees. A link idle for ``idle_timeout`` (no send, no followed
    twin or methods) closes; the next message opens it again.
    """

    def __init__(
        self, base: UpstreamConfig, clock: Clock, *, keys: Callable[[], KeyLookup],
        presented: PresentedTokens, factory: ConnectionFactory, twins: TwinCache, methods: MethodPort,
        idle_timeout: float, max_links: int,
    ) -> None:
        self._base = base
        self._clock = clock
        self._keys = keys
        self._presented = presented
        self._factory = factory
        self._twins = twins
        self._methods = methods
        self._idle_timeout = idle_timeout
        self._max_links = max_links
        self._links: dict[Identity, MqttUpstream] = {}
        self._last_used: dict[Identity, float] = {}
        self._followed: set[Identity] = set()
        self._hub: DownstreamPort | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.reachable = ReachableListeners()

    @property
    def hub_hostname(self) -> str:
        credentials = self._base.credentials
        return credentials.hub_hostname if isinstance(credentials, IotHubLogin) else self._base.host

    def __len__(self) -> int:
        return len(self._links)

    def credentials(self, identity: Identity) -> Credentials | None:
        key = self._keys()(identity)
        if key is not None:
            return SasCredentials(self.hub_hostname, identity, key)
        if self._presented.valid(identity, self._clock.time()) is not None:
            return PresentedCredentials(self.hub_hostname, identity, self._presented)
        return None

    async def start(self, hub: DownstreamPort) -> None:
        self._hub = hub
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="upstream idle links")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        links, self._links = self._links, {}
        await asyncio.gather(*(link.stop() for link in links.values()), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    def link(self, identity: Identity) -> MqttUpstream | None:
        """The started link of ``identity`` (opened now if needed), or None when it has no
        credentials or the cap is reached with every link busy."""
        self._last_used[identity] = self._clock.monotonic()
        link = self._links.get(identity)
        if link is not None:
            return link
        credentials = self.credentials(identity)
        if credentials is None or self._hub is None:
            return None
        if len(self._links) >= self._max_links and not self._close_one_for_room():
            return None
        link = MqttUpstream(self._config_for(credentials), self._clock, connection_factory=self._factory)
        link.twins = UpstreamTwins(identity, self._clock, self._twins, self._methods, multiplexed=False,
                                   follow_own=False)
        link.upstream_endpoint.subscribe_reachable(self.reachable.notify)
        self._links[identity] = link
        self._spawn(link.start(self._hub))
        log.info("upstream: opening a connection as %s (%d per-identity)", identity, len(self._links))
        return link

    def follow(self, identity: Identity) -> UpstreamTwins | None:
        """Keep ``identity``'s link up for its twin and method calls (until ``unfollow``)."""
        link = self.link(identity)
        if link is None or link.twins is None:
            return None
        self._followed.add(identity)
        link.twins.follow(identity)
        return link.twins

    def unfollow(self, identity: Identity) -> None:
        """Its local client left: the link may close when idle."""
        self._followed.discard(identity)

    def twins(self) -> list[UpstreamTwins]:
        return [link.twins for link in self._links.values() if link.twins is not None]

    def _config_for(self, credentials: Credentials) -> UpstreamConfig:
        # A device receives its own cloud-to-device messages on its connection; IoT Hub sends a
        # module nothing but twin and method traffic (module inputs come from the edge hub).
        scope = SubscriptionScope.NONE if credentials.identity.module_id else SubscriptionScope.OWN
        return dataclasses.replace(self._base, credentials=credentials, subscription_scope=scope)

    def _idle(self, identity: Identity, now: float, idle_for: float) -> bool:
        link = self._links[identity]
        return (
            identity not in self._followed
            and link.upstream_endpoint.in_flight_bytes == 0
            and now - self._last_used.get(identity, now) >= idle_for
        )

    def _close_one_for_room(self) -> bool:
        now = self._clock.monotonic()
        candidates = [i for i in self._links if self._idle(i, now, 0.0)]
        if not candidates:
            log.warning("upstream: %d per-identity connections, all busy; new senders wait", len(self._links))
            return False
        oldest = min(candidates, key=lambda i: self._last_used.get(i, 0.0))
        self._close(oldest, "to make room")
        return True

    def _close(self, identity: Identity, why: str) -> None:
        link = self._links.pop(identity)
        self._last_used.pop(identity, None)
        log.info("upstream: closing the connection of %s (%s)", identity, why)
        self._spawn(link.stop())

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sweep_forever(self) -> None:
        interval = min(SWEEP_INTERVAL, self._idle_timeout)
        while True:
            await self._clock.sleep(interval)
            now = self._clock.monotonic()
            for identity in [i for i in self._links if self._idle(i, now, self._idle_timeout)]:
                self._close(identity, f"idle for {self._idle_timeout:.0f} s")


class PerIdentityEndpoint:
    """``$upstream`` over per-identity links: each message goes up on its sender's connection.

    A batch is split by sender (each sender's messages keep their order) and the parts are sent
    at once; the result is the leading run of messages whose sender's link confirmed them. A
    message confirmed beyond that run is remembered, so the pump's resend of the batch does not
    send it twice while another sender's link is down.
    """

    def __init__(self, links: IdentityLinks, own: MqttUpstream, clock: Clock, *,
                 max_batch_size: int, connect_wait: float = CONNECT_WAIT) -> None:
        self._links = links
        self._own = own
        self._clock = clock
        self._max_batch_size = max_batch_size
        self._connect_wait = connect_wait
        self._sent_ahead: set[MessageId] = set()
        self._listeners = ReachableListeners()
        links.reachable.subscribe(self._listeners.notify)
        own.upstream_endpoint.subscribe_reachable(self._listeners.notify)

    @property
    def name(self) -> str:
        return UPSTREAM_ENDPOINT

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        return self._listeners.subscribe(callback)

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        if not messages:
            return SendResult(0)
        parts: dict[Identity, list[int]] = {}
        for index, queued in enumerate(messages):
            if queued.id in self._sent_ahead:
                continue
            parts.setdefault(self._sender(queued), []).append(index)
        outcomes = await asyncio.gather(
            *(self._send_part(sender, [messages[i] for i in indexes]) for sender, indexes in parts.items())
        )
        confirmed = {q.id for q in messages if q.id in self._sent_ahead}
        rejected_ids: set[MessageId] = set()
        for indexes, (delivered, rejected) in zip(parts.values(), outcomes, strict=True):
            confirmed.update(messages[i].id for i in indexes[:delivered])
            if rejected and delivered < len(indexes):
                rejected_ids.add(messages[indexes[delivered]].id)
        lead = 0
        while lead < len(messages) and messages[lead].id in confirmed:
            lead += 1
        sent_ahead = self._sent_ahead
        sent_ahead.difference_update(q.id for q in messages[:lead])
        sent_ahead.update(q.id for q in messages[lead:] if q.id in confirmed)
        if len(sent_ahead) > MAX_SENT_AHEAD:
            sent_ahead.clear()  # bounded memory; the price is duplicates, never loss
        if lead < len(messages) and messages[lead].id in rejected_ids:
            return SendResult(lead, rejected=True)
        if lead == 0 and not confirmed:
            raise EndpointUnavailable("no sender's upstream connection took its messages")
        return SendResult(lead)

    def _sender(self, queued: QueuedMessage) -> Identity:
        return queued.message.source or self._own.config.identity

    async def _send_part(self, sender: Identity, part: list[QueuedMessage]) -> tuple[int, bool]:
        link = self._own if sender == self._own.config.identity else self._links.link(sender)
        if link is None:
            log.debug("upstream: no connection for %s yet; its messages wait", sender)
            return 0, False
        endpoint = link.upstream_endpoint
        if not endpoint.reachable and not await self._reachable(link):
            return 0, False
        try:
            result = await endpoint.send(part)
        except EndpointUnavailable:
            return 0, False
        return result.delivered, result.rejected

    async def _reachable(self, link: MqttUpstream) -> bool:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def up() -> None:
            if not ready.done():
                ready.set_result(None)

        unsubscribe = link.upstream_endpoint.subscribe_reachable(up)
        try:
            if not link.upstream_endpoint.reachable:
                await within(self._clock, ready, self._connect_wait)
        finally:
            unsubscribe()
        return link.upstream_endpoint.reachable

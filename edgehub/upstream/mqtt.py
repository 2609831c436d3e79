"""The upstream link over MQTT (``UpstreamProtocol`` Mqtt, MqttWs): one connection to the parent, kept up.

Owns reconnecting with backoff, SAS token renewal, subscriptions, storing devicebound/module-input
messages before acking them, and the offline metrics; it never reads or checkpoints queues (pumps do).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from edgehub.clock import Clock
from edgehub.endpoints.backoff import Backoff
from edgehub.endpoints.base import Endpoint
from edgehub.errors import AuthError, EndpointUnavailable, StoreFullError
from edgehub.iothub.topics import devicebound_filter, module_inputs_filter
from edgehub.iothub.twin_topics import PREFIX as TWIN_PREFIX
from edgehub.metrics import MESSAGES_DROPPED, OFFLINE_COUNT, OFFLINE_DURATION
from edgehub.upstream.config import SubscriptionScope, UpstreamConfig
from edgehub.upstream.connection import (
    SUBACK_FAILURE,
    IncomingPublish,
    OnMessage,
    UpstreamConnection,
)
from edgehub.upstream.credentials import SasToken
from edgehub.upstream.endpoint import UPSTREAM_ENDPOINT, PublishChannel, UpstreamEndpoint
from edgehub.upstream.native import NativeMqttConnection
from edgehub.upstream.port import DownstreamPort
from edgehub.upstream.topics import DownstreamMessage, parse_downstream
from edgehub.upstream.twin_sync import UpstreamTwins

log = logging.getLogger(__name__)

ConnectionFactory = Callable[[UpstreamConfig, str, OnMessage], UpstreamConnection]
"""Makes one connection from the config, a SAS token password and the incoming-message callback."""

DOWNSTREAM_BATCH: Final = 100
"""Most received messages stored in one ``DownstreamPort.enqueue`` round."""


@dataclass(frozen=True, slots=True)
class _Received:
    """An incoming PUBLISH and the connection it came on (a PUBACK goes back on that one only)."""

    connection: UpstreamConnection
    publish: IncomingPublish
    parsed: DownstreamMessage | None


PROBE_INITIAL: Final = 0.1
PROBE_CAP: Final = 1.0


class MqttUpstream:
    """Implements edgehub.plugins.UpstreamLink for ``UpstreamProtocol`` Mqtt and MqttWs.

    Connection life: connect (TLS, SAS token, CleanSession=0), subscribe, then
    ``endpoint.attach`` so waiting pumps resume at once (docs/architecture.md §1 invariant 7). On loss:
    ``endpoint.detach`` (sends raise EndpointUnavailable), ``edgehub_offline_count_total``
    +1, and reconnect attempts after 1 s doubling to 60 s, with jitter; the next connect
    observes ``edgehub_offline_duration_seconds``. At 80% of the token's lifetime the link
    renews it: no new sends, in-flight ones finish, DISCONNECT, connect again at once with
    a fresh token (not counted as offline).

    Downstream: devicebound and module-input messages (see SubscriptionScope) go to
    ``DownstreamPort.enqueue`` in arrival order, and each is PUBACKed only after that
    returned, so nothing acknowledged is lost (docs/architecture.md §1 invariant 1). While the store is
    full they stay unacknowledged and the link retries with backoff; the parent's in-flight
    window then stops the flow, and a reconnect makes it send them again [MQTT-4.4.0-1].
    """

    def __init__(
        self,
        config: UpstreamConfig,
        clock: Clock,
        *,
        connection_factory: ConnectionFactory = NativeMqttConnection,
        backoff: Backoff | None = None,
        probe_backoff: Backoff | None = None,
        store_backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.config = config
        self._clock = clock
        self._connection_factory = connection_factory
        # Refused credentials: 1 s doubling to 60 s (retrying faster cannot help).
        self._backoff = backoff or Backoff()
        # Unreachable parent: 0.1 s doubling to 1 s, so delivery resumes within a second of
        # the parent coming back (docs/architecture.md §1 invariant 7; edgeHub waited out its retry timer,
        # Azure/iotedge PR #7528). A refused TCP connect a second is cheap.
        self._probe = probe_backoff or Backoff(initial=PROBE_INITIAL, cap=PROBE_CAP)
        self._store_backoff = store_backoff
        self.upstream_endpoint = UpstreamEndpoint(
            clock,
            config.identity,
            max_batch_size=config.max_batch_size,
            ack_timeout=config.ack_timeout,
            max_message_bytes=config.max_message_bytes,
            max_in_flight_bytes=config.max_in_flight_bytes,
            on_ack_timeout=self._ack_timed_out,
            generic_topic=config.generic_topic,
        )
        self.endpoint: Endpoint = self.upstream_endpoint
        """``$upstream`` for its EndpointPump (UpstreamLink.endpoint, typed as the protocol)."""
        self._connection: UpstreamConnection | None = None
        # Unbounded, but only the parent's in-flight window of unacknowledged messages can be in it.
        self._received: asyncio.Queue[_Received] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._offline_since: float | None = None
        # edgeHub labels going offline with its own module id (``{device}/$edgeHub``).
        self._offline_count = OFFLINE_COUNT.labels(id=str(config.identity))
        self._offline_duration = OFFLINE_DURATION.labels(id=str(config.identity))
        self._unroutable = MESSAGES_DROPPED.labels("no_route", UPSTREAM_ENDPOINT, "")
        self.connects = 0
        """Successful connects so far (the first, reconnects and token renewals)."""
        self.twins: UpstreamTwins | None = None
        """Twin and method traffic with the parent; the hub sets it before ``start``."""

    @property
    def connection_factory(self) -> ConnectionFactory:
        """How this link makes connections (per-identity links are made the same way)."""
        return self._connection_factory

    @property
    def connection(self) -> UpstreamConnection | None:
        """The connection sends go through now; None while disconnected."""
        return self._connection

    # -- UpstreamLink ----------------------------------------------------------------------------

    async def start(self, hub: DownstreamPort) -> None:
        """Start connecting in the background; never raises for an unreachable parent."""
        if self._tasks:
            raise RuntimeError("upstream link already started")
        self._tasks = [
            asyncio.create_task(self._keep_connected(), name="upstream connection"),
            asyncio.create_task(self._store_downstream(hub), name="upstream downstream"),
        ]
        if self.twins is not None:
            self._tasks.append(asyncio.create_task(self.twins.run(), name="upstream twins"))

    async def stop(self) -> None:
        """Stop reconnecting and close the connection (DISCONNECT); idempotent.

        Sends still waiting for PUBACKs end unconfirmed: stop the ``$upstream`` pump first.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.twins is not None:
            await self.twins.stop()
        self.upstream_endpoint.detach()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    # -- the connection loop ---------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        while True:
            try:
                connection, token = await self._connect()
            except AuthError as exc:
                self._went_offline(str(exc))
                await self._retry_delay(self._backoff)
                continue
            except EndpointUnavailable as exc:
                self._went_offline(str(exc))
                await self._retry_delay(self._probe)
                continue
            except Exception as exc:
                log.exception("upstream: connecting to %s failed unexpectedly", self.config.url)
                self._went_offline(repr(exc))
                await self._retry_delay(self._backoff)
                continue
            self._backoff.reset()
            self._probe.reset()
            self._came_online()
            self._connection = connection
            self.upstream_endpoint.attach(connection)
            if self.twins is not None:
                self.twins.connected(connection)
            reason = await self._serve(connection, token)
            self.upstream_endpoint.detach()
            if self.twins is not None:
                self.twins.disconnected()
            if reason is None:
                await self._renew(connection)
                continue
            self._connection = None
            self._went_offline(reason)
            await self._retry_delay(self._probe)

    async def _connect(self) -> tuple[UpstreamConnection, SasToken]:
        token = self.config.credentials.token(self._clock.time())

        def received(publish: IncomingPublish) -> None:
            twins = self.twins
            twin_traffic = twins is not None and publish.topic.startswith(TWIN_PREFIX)
            if twin_traffic and twins is not None and twins.on_publish(publish, connection):
                return
            parsed = parse_downstream(publish.topic, publish.payload, self.config.local_device_id)
            self._received.put_nowait(_Received(connection, publish, parsed))

        connection = self._connection_factory(self.config, token.text, received)
        try:
            await connection.open()
            await self._subscribe(connection)
        except BaseException:
            await connection.close()
            raise
        return connection, token

    async def _subscribe(self, connection: UpstreamConnection) -> None:
        config = self.config
        scope = config.subscription_scope
        if scope is SubscriptionScope.AUTO:
            scope = SubscriptionScope.NONE if config.is_iot_hub else SubscriptionScope.ALL
        identity = config.identity
        own = [
            module_inputs_filter(identity.device_id, identity.module_id)
            if identity.module_id
            else devicebound_filter(identity.device_id)
        ]
        if scope is SubscriptionScope.NONE:
            return
        wanted = own if scope is SubscriptionScope.OWN else [
            devicebound_filter(),
            module_inputs_filter(config.local_device_id),
        ]
        refused = _refused(wanted, await connection.subscribe(wanted))
        if refused and config.subscription_scope is SubscriptionScope.AUTO and wanted is not own:
            log.info("upstream: the parent refused %s; subscribing to %s instead", refused, own)
            refused = _refused(own, await connection.subscribe(own))
        if refused:
            log.warning("upstream: the parent refused the subscriptions %s", refused)

    async def _serve(self, connection: UpstreamConnection, token: SasToken) -> str | None:
        """Until the connection ends (why) or the token is due for renewal (None)."""
        ended = asyncio.ensure_future(connection.wait_closed())
        renewal = asyncio.ensure_future(self._clock.sleep(max(0.0, token.renew_at - self._clock.time())))
        try:
            await asyncio.wait({ended, renewal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            renewal.cancel()
            ended.cancel()
        return ended.result() if ended.done() and not ended.cancelled() else None

    async def _renew(self, connection: UpstreamConnection) -> None:
        """Replace the connection before its token expires: let sends finish, DISCONNECT."""
        log.info("upstream: renewing the SAS token; reconnecting to %s", self.config.url)
        idle = asyncio.ensure_future(self.upstream_endpoint.wait_idle())
        # Sends end within the ack timeout (after which they drop the connection themselves).
        limit = asyncio.ensure_future(self._clock.sleep(self.config.ack_timeout))
        try:
            await asyncio.wait({idle, limit}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            limit.cancel()
        self._connection = None
        await connection.close()

    async def _retry_delay(self, backoff: Backoff) -> None:
        delay = backoff.next_delay()
        log.debug("upstream: connect attempt %d failed; next in %.2f s", backoff.failures, delay)
        await self._clock.sleep(delay)

    def _ack_timed_out(self, channel: PublishChannel) -> None:
        connection = self._connection
        if connection is not None and connection is channel and connection.is_open:
            connection.abort("no PUBACK within MessageAckTimeoutSecs")

    def _went_offline(self, reason: str) -> None:
        if self._offline_since is None:
            self._offline_since = self._clock.monotonic()
            self._offline_count.inc()
            log.warning("upstream %s unreachable: %s; reconnecting with backoff", self.config.url, reason)
        else:
            log.debug("upstream %s still unreachable: %s", self.config.url, reason)

    def _came_online(self) -> None:
        self.connects += 1
        if self._offline_since is None:
            log.info("upstream connected to %s as %s", self.config.url, self.config.identity)
            return
        offline = self._clock.monotonic() - self._offline_since
        self._offline_since = None
        self._offline_duration.observe(offline)
        log.info("upstream connected to %s again after %.1f s offline", self.config.url, offline)

    # -- downstream ------------------------------------------------------------------------------

    async def _store_downstream(self, hub: DownstreamPort) -> None:
        while True:
            received = [await self._received.get()]
            while len(received) < DOWNSTREAM_BATCH and not self._received.empty():
                received.append(self._received.get_nowait())
            for endpoint, run in self._runs(received):
                await self._store(hub, endpoint, run)

    def _runs(self, received: list[_Received]) -> Iterator[tuple[str, list[_Received]]]:
        """Consecutive messages for the same local endpoint, in arrival order; acks the unroutable."""
        routable: list[_Received] = []
        for item in received:
            if item.parsed is not None:
                routable.append(item)
                continue
            # Not a devicebound or local module-input topic: nobody here could take it, and
            # leaving it unacknowledged would only make the parent send it again and again.
            log.warning("upstream: dropped a message on %r (not a devicebound or local input topic)",
                        item.publish.topic)
            self._unroutable.inc()
            _ack(item)
        for endpoint, run in itertools.groupby(routable, key=_endpoint_of):
            yield endpoint, list(run)

    async def _store(self, hub: DownstreamPort, endpoint: str, run: list[_Received]) -> None:
        backoff = self._store_backoff()
        while True:
            # A message whose connection ended was never acknowledged: the parent sends it again.
            run = [item for item in run if item.publish.qos == 0 or item.connection.is_open]
            if not run:
                return
            try:
                await hub.enqueue(endpoint, [item.parsed.message for item in run if item.parsed])
            except StoreFullError:
                if not backoff.failures:
                    log.warning("upstream: store full; %d message(s) for %s stay unacknowledged upstream",
                                len(run), endpoint)
            except Exception:
                log.exception("upstream: storing %d message(s) for %s failed; retrying", len(run), endpoint)
            else:
                for item in run:
                    _ack(item)
                return
            await self._clock.sleep(backoff.next_delay())


def _endpoint_of(item: _Received) -> str:
    return item.parsed.endpoint if item.parsed is not None else ""


def _ack(item: _Received) -> None:
    if item.publish.qos > 0:
        item.connection.ack(item.publish.mid)


def _refused(filters: list[str], granted: list[int]) -> list[str]:
    return [topic for topic, code in zip(filters, granted, strict=False) if code >= SUBACK_FAILURE]

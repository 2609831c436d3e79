"""The upstream link over AMQP 1.0 (``UpstreamProtocol`` Amqp, AmqpWs): one connection to the parent, kept up,
a sender link per sending identity, each authorized by a CBS token.

Owns reconnecting with backoff (``Amqp`` falling back to ``AmqpWs`` when 5671 is unreachable), CBS
put-token and renewal on the open connection, sender and devicebound receiver links, storing
messages coming down before accepting them, and the offline metrics; it never reads or checkpoints
queues (the pump does, through AmqpUpstreamEndpoint).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Final

from edgehub.amqp.messages import MessageFormatError, from_amqp
from edgehub.auth.sas import sas_resource
from edgehub.clock import Clock
from edgehub.endpoints.backoff import Backoff
from edgehub.endpoints.base import Endpoint
from edgehub.errors import AuthError, EndpointUnavailable, StoreFullError
from edgehub.message import Identity
from edgehub.metrics import OFFLINE_COUNT, OFFLINE_DURATION
from edgehub.upstream.amqp_addresses import devicebound_address, telemetry_address
from edgehub.upstream.amqp_connection import AMQP_WS_SUBPROTOCOL, AmqpConnection, StreamOpener, _open_stream
from edgehub.upstream.amqp_endpoint import AmqpUpstreamEndpoint, TransferChannel
from edgehub.upstream.amqp_session import Outcome, Received
from edgehub.upstream.amqp_twins import AmqpTwinChannel
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.credentials import Credentials, IotHubLogin, SasToken
from edgehub.upstream.port import DownstreamPort
from edgehub.upstream.twin_sync import UpstreamTwins

log = logging.getLogger(__name__)

PROBE_INITIAL: Final = 0.1
PROBE_CAP: Final = 1.0
DOWNSTREAM_CREDIT: Final = 100
"""Link credit of each devicebound receiver: the most messages the parent sends before we settle."""

CredentialsLookup = Callable[[Identity], Credentials | None]
"""Credentials of a sending identity (registry key, presented token), or None: its messages wait."""


def amqp_url(config: UpstreamConfig) -> str:
    """For log lines: ``amqps://host:5671`` or ``wss://host:443/$iothub/websocket``."""
    return dataclasses.replace(config, amqp=True).url if not config.amqp else config.url


@dataclass(slots=True)
class _Authority:
    """One CBS-authorized identity on the current connection and its renewal timer."""

    credentials: Credentials
    audience: str
    token: SasToken
    renewal: asyncio.Task[None] | None = None


class _Sender:
    """TransferChannel of one attached sender link."""

    def __init__(self, connection: AmqpConnection, name: str) -> None:
        self._connection = connection
        self.name = name

    def transfer(self, message: bytes) -> asyncio.Future[Outcome]:
        return self._connection.send(self.name, message)


class AmqpUpstream:
    """Implements edgehub.plugins.UpstreamLink (and ClientPresence) for ``UpstreamProtocol`` Amqp and AmqpWs.

    Connection life: TLS (or WebSocket ``AMQPWSB10``, through ``config.proxy``), SASL ANONYMOUS, open,
    then CBS put-token for the hub's own identity, which must succeed (else AuthError: 1 s doubling
    to 60 s); then ``endpoint.reachable()`` so waiting pumps resume at once. ``Amqp`` whose TLS port
    is unreachable tries ``websocket_fallback`` (``AmqpWs`` on 443, proxy included) in the same attempt.
    On loss: ``edgehub_offline_count_total`` +1, reconnect after 0.1 s doubling to 1 s.

    Identities (docs/architecture.md §1 invariant 9): with ``on_behalf`` (a parent edge hub in
    multiplexed mode) every sender's link is authorized by the hub's own token, as edgeHub's nested
    hubs act for their children; otherwise each sender's link needs that sender's own token
    (``sender_credentials``: a registry key or the token it presented), put before its link attaches.
    Every token is put again at 80% of its lifetime on the open connection (CBS needs no reconnect).

    Downstream: a receiver on ``/devices/{d}/messages/devicebound`` for each connected local device;
    each message is accepted only after ``DownstreamPort.enqueue`` returned (docs/architecture.md §1
    invariant 1); while the store is full it stays unsettled and the link retries.
    """

    def __init__(
        self, config: UpstreamConfig, clock: Clock, *, on_behalf: bool,
        sender_credentials: CredentialsLookup = lambda identity: None,
        websocket_fallback: UpstreamConfig | None = None, opener: StreamOpener = _open_stream,
        backoff: Backoff | None = None, probe_backoff: Backoff | None = None,
        store_backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.config = config
        self._clock = clock
        self.on_behalf = on_behalf
        """The hub's own token authorizes every sender's link (a parent edge hub acting for children)."""
        self.sender_credentials = sender_credentials
        """Whose token authorizes a sender's link when not ``on_behalf`` (the hub sets it)."""
        self.websocket_fallback = websocket_fallback
        """Where ``Amqp`` goes when its TLS port is unreachable (AMQP over WebSocket), or None."""
        self._prefer_fallback = False
        self._opener = opener
        self._backoff = backoff or Backoff()
        self._probe = probe_backoff or Backoff(initial=PROBE_INITIAL, cap=PROBE_CAP)
        self._store_backoff = store_backoff
        self.upstream_endpoint = AmqpUpstreamEndpoint(
            self, clock, config.identity, max_batch_size=config.max_batch_size,
            ack_timeout=config.ack_timeout, max_message_bytes=config.max_message_bytes,
            max_in_flight_bytes=config.max_in_flight_bytes,
        )
        self.endpoint: Endpoint = self.upstream_endpoint
        self._connection: AmqpConnection | None = None
        self._authorities: dict[Identity, _Authority] = {}
        self._authorizing: dict[Identity, asyncio.Future[None]] = {}
        self._senders: dict[Identity, asyncio.Future[_Sender | None]] = {}
        self._devices: set[str] = set()
        self._receiving: set[str] = set()
        self._received: asyncio.Queue[tuple[AmqpConnection, Received]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._offline_since: float | None = None
        self._offline_count = OFFLINE_COUNT.labels(id=str(config.identity))
        self._offline_duration = OFFLINE_DURATION.labels(id=str(config.identity))
        self.connects = 0
        """Successful connects so far."""
        self.url = amqp_url(config)
        """Where the current (or last) connection went."""
        self.twins: UpstreamTwins | None = None
        """Twin and method traffic with the parent (on AmqpTwinChannel); the hub sets it before ``start``."""

    # -- UpstreamLink ----------------------------------------------------------------------------

    async def start(self, hub: DownstreamPort) -> None:
        if self._tasks:
            raise RuntimeError("upstream link already started")
        self._tasks = [
            asyncio.create_task(self._keep_connected(), name="upstream amqp connection"),
            asyncio.create_task(self._store_downstream(hub), name="upstream amqp downstream"),
        ]
        if self.twins is not None:
            self._tasks.append(asyncio.create_task(self.twins.run(), name="upstream amqp twins"))

    async def stop(self) -> None:
        """Stop reconnecting and close the connection; idempotent. Stop the ``$upstream`` pump first."""
        tasks, self._tasks = self._tasks, []
        for task in [*tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*tasks, *self._background, return_exceptions=True)
        if self.twins is not None:
            await self.twins.stop()
        connection, self._connection = self._connection, None
        self._forget()
        if connection is not None:
            await connection.close()

    # -- ClientPresence: devices get their cloud-to-device messages while connected --------------

    def client_connected(self, identity: Identity) -> None:
        if identity.module_id is not None or identity.device_id in self._devices:
            return
        self._devices.add(identity.device_id)
        connection = self._connection
        if connection is not None and connection.is_open:
            self._spawn(self._receive_devicebound(connection, identity))

    def client_disconnected(self, identity: Identity) -> None:
        if identity.module_id is not None:
            return
        self._devices.discard(identity.device_id)
        name = _receiver_name(identity.device_id)
        self._receiving.discard(name)
        connection = self._connection
        if connection is not None:
            connection.detach(name)

    # -- SenderLinks (for the endpoint) ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and connection.is_open

    async def sender(self, identity: Identity) -> TransferChannel | None:
        connection = self._connection
        if connection is None or not connection.is_open:
            raise EndpointUnavailable("upstream is not connected")
        pending = self._senders.get(identity)
        stale = pending is not None and pending.done() and (
            pending.cancelled() or pending.exception() is not None or not self._live(pending))
        if pending is None or stale:
            pending = asyncio.ensure_future(self._attach_sender(connection, identity))
            self._senders[identity] = pending
        return await asyncio.shield(pending)

    def disposition_timed_out(self) -> None:
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.abort("no AMQP disposition within MessageAckTimeoutSecs")

    # -- the connection loop ---------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        while True:
            try:
                connection = await self._connect()
            except AuthError as exc:
                self._went_offline(str(exc))
                await self._retry_delay(self._backoff)
                continue
            except EndpointUnavailable as exc:
                self._went_offline(str(exc))
                await self._retry_delay(self._probe)
                continue
            except Exception as exc:
                log.exception("upstream: connecting to %s failed unexpectedly", self.url)
                self._went_offline(repr(exc))
                await self._retry_delay(self._backoff)
                continue
            self._backoff.reset()
            self._probe.reset()
            self._connection = connection
            self._came_online()
            for device in sorted(self._devices):
                self._spawn(self._receive_devicebound(connection, Identity(device)))
            self.upstream_endpoint.reachable()
            if self.twins is not None:
                self.twins.connected(AmqpTwinChannel(connection, self.twins, self._authorizer(connection)))
            reason = await connection.wait_closed()
            if self.twins is not None:
                self.twins.disconnected()
            self._connection = None
            self._forget()
            self._went_offline(reason)
            await self._retry_delay(self._probe)

    async def _connect(self) -> AmqpConnection:
        """The preferred transport first, then the other one (``Amqp``'s fallback). Once the fallback
        carried a connection it stays first, so each reconnect does not wait out a blocked 5671 again."""
        fallback = self.websocket_fallback
        first, second = self.config, fallback
        if fallback is not None and self._prefer_fallback:
            first, second = fallback, self.config
        try:
            return await self._open(first)
        except AuthError:
            raise
        except EndpointUnavailable as exc:
            if second is None:
                raise
            log.info("upstream: %s unreachable (%s); trying %s", amqp_url(first), exc, amqp_url(second))
            connection = await self._open(second)
            self._prefer_fallback = second is fallback
            return connection

    async def _open(self, config: UpstreamConfig) -> AmqpConnection:
        own = self.config.credentials
        connection = AmqpConnection(config, container_id=own.client_id, hostname=_hub_hostname(self.config),
                                    opener=self._opener)
        try:
            await connection.open(AMQP_WS_SUBPROTOCOL)
            await self._authorize(connection, own)
        except BaseException:
            self._forget()
            await connection.close()
            raise
        connection.on_detached(self._link_detached)
        self.url = amqp_url(config)
        return connection

    async def _authorize(self, connection: AmqpConnection, credentials: Credentials) -> None:
        """Put ``credentials``' token on the connection (once per connection, however many links wait
        for it at once; renewed before expiry). AuthError when refused (the next call tries again)."""
        identity = credentials.identity
        pending = self._authorizing.get(identity)
        if pending is None or pending.cancelled() or (pending.done() and pending.exception() is not None):
            pending = asyncio.ensure_future(self._put_first_token(connection, credentials))
            self._authorizing[identity] = pending
        await asyncio.shield(pending)

    async def _put_first_token(self, connection: AmqpConnection, credentials: Credentials) -> None:
        identity = credentials.identity
        token = credentials.token(self._clock.time())
        audience = _audience(self.config, identity)
        await connection.put_token(audience, token.text)
        log.debug("upstream: the parent took the CBS token of %s (audience %s)", identity, audience)
        authority = _Authority(credentials, audience, token)
        self._authorities[identity] = authority
        authority.renewal = asyncio.ensure_future(self._renew(connection, authority))
        self._background.add(authority.renewal)
        authority.renewal.add_done_callback(self._background.discard)

    def _authorizer(self, connection: AmqpConnection) -> Callable[[Identity], Awaitable[bool]]:
        async def authorize(identity: Identity) -> bool:
            credentials = self._authority_for(identity)
            if credentials is None:
                return False
            await self._authorize(connection, credentials)
            return True

        return authorize

    async def _renew(self, connection: AmqpConnection, authority: _Authority) -> None:
        """Put a fresh token at 80% of the current one's lifetime, for as long as the connection lives."""
        while True:
            await self._clock.sleep(max(0.0, authority.token.renew_at - self._clock.time()))
            if not connection.is_open:
                return
            try:
                token = authority.credentials.token(self._clock.time())
                await connection.put_token(authority.audience, token.text)
            except (AuthError, EndpointUnavailable) as exc:
                log.warning("upstream: renewing the token of %s failed: %s; its links end at expiry",
                            authority.credentials.identity, exc)
                return
            authority.token = token
            log.debug("upstream: renewed the CBS token of %s", authority.credentials.identity)

    def _authority_for(self, identity: Identity) -> Credentials | None:
        if identity == self.config.identity or self.on_behalf:
            return self.config.credentials
        return self.sender_credentials(identity)

    async def _attach_sender(self, connection: AmqpConnection, identity: Identity) -> _Sender | None:
        credentials = self._authority_for(identity)
        if credentials is None:
            return None
        await self._authorize(connection, credentials)
        name = f"events:{identity.id}"
        await connection.attach_sender(name, telemetry_address(identity))
        log.info("upstream: sending as %s on %s", identity, telemetry_address(identity))
        return _Sender(connection, name)

    def _live(self, pending: asyncio.Future[_Sender | None]) -> bool:
        """Still usable: attached on the current connection (no credentials is looked up again)."""
        sender = pending.result()
        connection = self._connection
        return sender is not None and connection is not None and connection.is_attached(sender.name)

    def _link_detached(self, name: str, condition: str) -> None:
        """The parent detached a link (an expired token, say): the next send attaches it again."""
        self._receiving.discard(name)

    def _forget(self) -> None:
        for authority in self._authorities.values():
            if authority.renewal is not None:
                authority.renewal.cancel()
        self._authorities.clear()
        # Not cancelled: their waiters get EndpointUnavailable from the closed connection.
        self._authorizing.clear()
        self._senders.clear()
        self._receiving.clear()

    async def _retry_delay(self, backoff: Backoff) -> None:
        await self._clock.sleep(backoff.next_delay())

    def _went_offline(self, reason: str) -> None:
        if self._offline_since is None:
            self._offline_since = self._clock.monotonic()
            self._offline_count.inc()
            log.warning("upstream %s unreachable: %s; reconnecting with backoff", self.url, reason)
        else:
            log.debug("upstream %s still unreachable: %s", self.url, reason)

    def _came_online(self) -> None:
        self.connects += 1
        if self._offline_since is None:
            log.info("upstream connected to %s over AMQP as %s", self.url, self.config.identity)
            return
        offline = self._clock.monotonic() - self._offline_since
        self._offline_since = None
        self._offline_duration.observe(offline)
        log.info("upstream connected to %s again after %.1f s offline", self.url, offline)

    # -- downstream ------------------------------------------------------------------------------

    async def _receive_devicebound(self, connection: AmqpConnection, device: Identity) -> None:
        name = _receiver_name(device.device_id)
        if name in self._receiving:
            return
        credentials = self._authority_for(device)
        if credentials is None:
            return
        self._receiving.add(name)
        try:
            await self._authorize(connection, credentials)
            await connection.attach_receiver(
                name, devicebound_address(device.device_id), DOWNSTREAM_CREDIT,
                lambda received: self._received.put_nowait((connection, received)))
        except (AuthError, EndpointUnavailable) as exc:
            self._receiving.discard(name)
            log.info("upstream: no cloud-to-device link for %s: %s", device, exc)

    async def _store_downstream(self, hub: DownstreamPort) -> None:
        while True:
            connection, received = await self._received.get()
            device = received.link.partition(":")[2]
            endpoint = f"/devices/{device}/messages/devicebound"
            try:
                message = from_amqp(received.message)
            except MessageFormatError:
                log.warning("upstream: a malformed cloud-to-device message for %s; rejected", device)
                connection.settle(received.delivery, Outcome.REJECTED)
                continue
            backoff = self._store_backoff()
            while connection.is_open:
                try:
                    await hub.enqueue(endpoint, [message])
                except StoreFullError:
                    if not backoff.failures:
                        log.warning("upstream: store full; a message for %s stays unsettled upstream",
                                    endpoint)
                except Exception:
                    log.exception("upstream: storing a message for %s failed; retrying", endpoint)
                else:
                    connection.settle(received.delivery, Outcome.ACCEPTED)
                    break
                await self._clock.sleep(backoff.next_delay())

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _receiver_name(device_id: str) -> str:
    return f"devicebound:{device_id}"


def _hub_hostname(config: UpstreamConfig) -> str:
    credentials = config.credentials
    return credentials.hub_hostname if isinstance(credentials, IotHubLogin) else config.host


def _audience(config: UpstreamConfig, identity: Identity) -> str:
    """The put-token ``name``: the token's resource, ``{hub}/devices/{d}[/modules/{m}]`` (IoT Hub CBS)."""
    return sas_resource(_hub_hostname(config), identity)

"""The Hub: ingest and routing into the store, a pump per endpoint, TTL cleanup, twins and methods,
the config in force (file or own twin) and the device scope's identities.

Owns the start/stop order (heads start last and stop first; the store closes last). Built by
edgehub.assembly, which picks the store backend, the heads and the upstream link.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from edgehub import __version__, metrics
from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.clock import Clock, SystemClock, now_ms
from edgehub.config_file import HubConfig
from edgehub.config_twin import TwinConfig
from edgehub.endpoints.base import Endpoint, SendResult, Unsubscribe
from edgehub.endpoints.link import ClientLink
from edgehub.endpoints.module import ClientDirectory, DeviceboundEndpoint, ModuleInputEndpoint
from edgehub.endpoints.pump import EndpointPump
from edgehub.errors import ConfigError, EdgeHubError, EndpointUnavailable, StoreDamagedError
from edgehub.message import DEFAULT_PRIORITY, Identity, Message
from edgehub.plugins import Head, UpstreamLink
from edgehub.routing.router import RouteMatch, Router, compile_routes
from edgehub.settings import ConfigSource, Settings
from edgehub.store.base import Delivery, IngestItem, QueuedMessage, QueueKey, Store
from edgehub.store.group_commit import GroupCommitter
from edgehub.twins.document import combine_patches
from edgehub.twins.edgehub_twin import EdgeHubReported, VersionInfo
from edgehub.twins.gateway import TwinGateway
from edgehub.twins.methods import MethodRouter
from edgehub.twins.notification import twin_change_message
from edgehub.twins.port import ClientPresence, JsonObject, NoPresence, TwinError
from edgehub.twins.service import TwinService
from edgehub.upstream.presented import PresentedTokens

if TYPE_CHECKING:  # the upstream link's parts are imported only when one is configured
    from edgehub.upstream.device_scope import DeviceScope

log = logging.getLogger(__name__)

UPSTREAM: Final = "$upstream"
LOCAL_BATCH_SIZE: Final = 100
"""Messages per send to a local client; the session's in-flight window bounds what is on the wire."""
LOCAL_IN_FLIGHT_BATCHES: Final = 2
"""Two batches per local endpoint in flight, so the next is on the wire while PUBACKs of the last return."""
HUB_TWIN_FLUSH_SECS: Final = 1.0
"""How often client connects and disconnects are written to the ``$edgeHub`` reported properties
(coalesced: a connection storm is one write a second, not one per client)."""
EDGE_HUB_MODULE: Final = "$edgeHub"


class StandaloneUpstream:
    """``$upstream`` when no EdgeHubConnectionString is set: never reachable,
    so messages routed upstream wait in the store until their TTL."""

    name = UPSTREAM
    max_batch_size = 100

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        raise EndpointUnavailable("no upstream configured (EdgeHubConnectionString is not set)")

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        return _nothing


def _nothing() -> None:
    """An Unsubscribe for a signal that never fires."""


def local_endpoint(directory: ClientDirectory, edge_device_id: str, name: str) -> Endpoint:
    """The endpoint of a local queue name: ``/modules/{m}/inputs/{i}`` (a module of
    this edge device) or ``/devices/{d}/messages/devicebound``. ValueError otherwise."""
    parts = name.split("/")
    if len(parts) == 5 and parts[1] == "modules" and parts[3] == "inputs":
        return ModuleInputEndpoint(directory, Identity(edge_device_id, parts[2]), parts[4],
                                   max_batch_size=LOCAL_BATCH_SIZE)
    if len(parts) == 5 and parts[1] == "devices" and parts[3:] == ["messages", "devicebound"]:
        return DeviceboundEndpoint(directory, Identity(parts[2]), max_batch_size=LOCAL_BATCH_SIZE)
    raise ValueError(f"not a local endpoint name: {name!r}")


@dataclass(slots=True)
class _RouteTable:
    """The router of the current config and the deliveries each match set maps to."""

    router: Router
    default_ttl_ms: int
    plans: dict[tuple[RouteMatch, ...], tuple[tuple[QueueKey, int], ...]] = field(default_factory=dict)

    def plan(self, matches: tuple[RouteMatch, ...]) -> tuple[tuple[QueueKey, int], ...]:
        plan = self.plans.get(matches)
        if plan is None:
            plan = tuple(
                (
                    QueueKey(m.endpoint, m.priority),
                    (m.time_to_live_secs * 1000) if m.time_to_live_secs > 0 else self.default_ttl_ms,
                )
                for m in matches
            )
            self.plans[matches] = plan
        return plan


def build_route_table(config: HubConfig) -> _RouteTable:
    return _RouteTable(Router(compile_routes(config.routes)), config.time_to_live_secs * 1000)


class Hub:
    """Implements HubPort for the heads; runs pumps, TTL cleanup and config reload."""

    def __init__(
        self,
        settings: Settings,
        config: HubConfig,
        store: Store,
        *,
        clock: Clock | None = None,
        heads: Sequence[Head] = (),
        upstream: UpstreamLink | None = None,
    ) -> None:
        self.settings = settings
        self.file_config = config
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.heads = list(heads)
        self.upstream = upstream
        self.directory = ClientDirectory()
        self.committer = GroupCommitter(store, sync=settings.store_sync_writes)
        # Twins and direct methods (IoT Hub's device twin and direct method model, served locally).
        self.hub_identity = Identity(settings.edge_device_id, EDGE_HUB_MODULE)
        self.twin_service = TwinService(store, on_reported=self._on_reported)
        # Routes and store settings: the hub's own twin's (configSource=twin, cached), else the file's.
        self.twin_config = TwinConfig(self.hub_identity, self.twin_service, validate_config(settings),
                                      enabled=settings.config_source is ConfigSource.TWIN)
        self.config = config = self.twin_config.effective(config)
        self.twin_config.subscribe(self._hub_desired_changed)
        self._routes = build_route_table(config)
        # Identities in the device's scope upstream (an Azure IoT Hub's registry), beside the file's.
        self.scope_identities: tuple[IdentitySpec, ...] = ()
        self.device_scope: DeviceScope | None = None
        self.registry = build_registry(settings, config)
        self._pumps: dict[str, EndpointPump] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        # Store damage found while running that the store could not route around: the CLI stops
        # the hub with exit 3 (docs/architecture.md §1 invariant 8).
        self.store_failure: StoreDamagedError | None = None
        self.failed = asyncio.Event()
        self.listening: list[str] = []
        self.twins = TwinGateway(self.twin_service, MethodRouter(self.clock))
        self._hub_twin = EdgeHubReported(self.hub_identity, VersionInfo(__version__))
        self._hub_twin_patch: JsonObject = {}
        self._hub_twin_dirty = asyncio.Event()
        self._desired_version = 0
        self._hub_twin_refused = False
        self._background: set[asyncio.Task[None]] = set()
        # Per-identity upstream: tokens clients presented, and who is connected (hub.build_upstream).
        self.presented_tokens = PresentedTokens()
        self.upstream_clients: ClientPresence = NoPresence()

    # -- HubPort -----------------------------------------------------------------

    def takes_topic(self, topic: str) -> bool:
        """Whether a route ``FROM /topics/{filter}`` takes generic MQTT messages on ``topic``."""
        return self._routes.router.takes_topic(topic)

    async def ingest(self, messages: Sequence[Message]) -> None:
        started = self.clock.monotonic()
        now = now_ms(self.clock)
        routes = self._routes
        match, plan_of = routes.router.match, routes.plan
        items: list[IngestItem] = []
        # One deliveries tuple per distinct plan in this batch (plans are cached objects).
        deliveries_of: dict[int, tuple[Delivery, ...]] = {}
        unrouted = 0
        for message in messages:
            stamped = Message(message.body, message.properties, message.system_properties, now)
            plan = plan_of(match(stamped))
            if not plan:
                unrouted += 1
                continue
            deliveries = deliveries_of.get(id(plan))
            if deliveries is None:
                deliveries = tuple(Delivery(queue, now + ttl) for queue, ttl in plan)
                deliveries_of[id(plan)] = deliveries
            items.append(IngestItem(stamped, deliveries))
        if unrouted:
            metrics.MESSAGES_DROPPED.labels("no_route", "", "").inc(unrouted)
        if items:
            try:
                await self.committer.append(items)
            except StoreDamagedError as exc:
                self.store_damaged(exc)
                raise
        metrics.INGEST_DURATION.observe(self.clock.monotonic() - started)
        touched = {d.queue for deliveries in deliveries_of.values() for d in deliveries}
        for queue in touched:
            self._pump_for(queue.endpoint).notify(queue.priority)

    async def enqueue(self, endpoint: str, messages: Sequence[Message]) -> None:
        """DownstreamPort: messages from the parent for one local endpoint, bypassing
        routes, with the global TTL; durable when this returns."""
        now = now_ms(self.clock)
        queue = QueueKey(endpoint, DEFAULT_PRIORITY)
        delivery = (Delivery(queue, now + self._routes.default_ttl_ms),)
        items = [
            IngestItem(Message(m.body, m.properties, m.system_properties, now), delivery) for m in messages
        ]
        await self.committer.append(items)
        self._pump_for(endpoint).notify(queue.priority)

    # -- ClientPresence: the $edgeHub twin's clients --------------------------------------------

    def client_connected(self, identity: Identity) -> None:
        self._hub_twin_change(self._hub_twin.client_connected(identity, self.clock.time()))
        self.upstream_clients.client_connected(identity)

    def client_disconnected(self, identity: Identity) -> None:
        self._hub_twin_change(self._hub_twin.client_disconnected(identity, self.clock.time()))
        self.upstream_clients.client_disconnected(identity)

    def config_refused(self, reason: str) -> None:
        """A new config file was refused: say so in ``lastDesiredStatus`` too (400, as edgeHub)."""
        self._hub_twin_change(self._hub_twin.desired_applied(self._desired_version + 1, 400, reason[:512]))

    def attach(self, identity: Identity, link: ClientLink) -> None:
        self.directory.attach(identity, link)

    def detach(self, identity: Identity, link: ClientLink) -> None:
        self.directory.detach(identity, link)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Pumps for every known queue, cleanup, upstream, then heads (last)."""
        for location, reason in self.config.warnings:
            log.warning("config %s: %s: %s (ignored)", self.config.source, location, reason)
        for queue in self.store.queues():
            self._pump_for(queue.endpoint).notify(queue.priority)
        self._tasks.append(asyncio.create_task(self._cleanup_loop(), name="ttl-cleanup"))
        self._hub_twin_change(self._hub_twin.started())
        self._apply_desired(self.config)
        self._tasks.append(asyncio.create_task(self._hub_twin_loop(), name="edgehub-twin"))
        if self.upstream is not None:
            await self.upstream.start(self)
        if self.device_scope is not None:
            self._tasks.append(asyncio.create_task(self.device_scope.run(), name="device-scope"))
        for head in self.heads:
            self.listening.extend(await head.start(self))

    async def stop(self) -> None:
        """Reverse order: heads first, then upstream, pumps, pending writes; the store last.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        errors: list[BaseException] = []
        for head in reversed(self.heads):
            await _collect(head.stop(), errors)
        # Pumps before the upstream link, so sends waiting for PUBACKs settle first
        # (an unconfirmed send would go out again at the next start, as a duplicate).
        for pump in self._pumps.values():
            await _collect(pump.stop(), errors)
        if self.upstream is not None:
            await _collect(self.upstream.stop(), errors)
        self._write_hub_twin()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await _collect(self.committer.close(), errors)
        try:
            self.store.close()
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below, after every part stopped
            errors.append(exc)
        if errors:
            raise errors[0]

    def apply_config(self, config: HubConfig) -> None:
        """A new, already validated config file: new routes and TTL from now on (with a config in
        the hub's own twin, the twin's routes and store settings stay over the file's)."""
        self.file_config = config
        self._take_config(self.twin_config.effective(config))

    def take_scope(self, identities: tuple[IdentitySpec, ...]) -> None:
        """New identities in the device's scope upstream: the registry is rebuilt with them (the
        config file's entries win); a scope the registry refuses leaves the current one in place."""
        try:
            registry = build_registry(self.settings, self.config, identities)
        except ConfigError as exc:
            log.warning("device scope identities not taken: %s", exc)
            return
        self.scope_identities, self.registry = identities, registry

    def credentials_refused(self) -> None:
        """A client's credentials were refused: read the device scope again soon (rate-limited)."""
        if self.device_scope is not None:
            self.device_scope.credentials_refused()

    def _hub_desired_changed(self) -> None:
        """The hub's own twin changed upstream: take the config it holds, or refuse it and keep
        the current one (``lastDesiredStatus`` 400, as edgeHub)."""
        try:
            composed = self.twin_config.compose(self.file_config)
        except EdgeHubError as exc:
            held = self.twin_service.upstream_desired(self.hub_identity)
            version = held[1] if held is not None else self._desired_version + 1
            log.warning("config in the twin of %s refused, keeping the current config: %s",
                        self.hub_identity, exc)
            self._hub_twin_change(self._hub_twin.desired_applied(version, 400, str(exc)[:512]))
            return
        if composed is None:
            if self.twin_config.version is not None:  # the twin no longer holds a config: the file's again
                self.twin_config.version = None
                self._take_config(self.file_config)
            return
        config, version = composed
        if version == self.twin_config.version:
            return
        self.twin_config.version = version
        self._take_config(config)

    def _take_config(self, config: HubConfig) -> None:
        self._routes = build_route_table(config)
        self.registry = build_registry(self.settings, config, self.scope_identities)
        self.config = config
        for name, pump in self._pumps.items():  # storeAndForwardConfiguration.drainOrder
            pump.set_drain_order(config.drain_order_of(name))
        self._apply_desired(config)
        log.info("config from %s: %d routes", config.source, len(config.routes))

    # -- internals ---------------------------------------------------------------

    def _apply_desired(self, config: HubConfig) -> None:
        """The manifest's desired properties of each module (connected ones get the difference),
        and ``lastDesiredVersion``/``lastDesiredStatus`` of the hub's own twin."""
        wanted = {Identity(self.settings.edge_device_id, m): d for m, d in config.module_desired.items()}
        wanted.update(config.identity_desired)
        for identity, desired in wanted.items():
            try:
                self.twin_service.set_desired(identity, desired)
            except TwinError as exc:
                log.warning("desired properties of %s not applied: %s", identity, exc.reason)
        self._desired_version = self.twin_config.version or self._desired_version + 1
        self._hub_twin_change(self._hub_twin.desired_applied(self._desired_version, 200))

    def _on_reported(self, identity: Identity, patch: JsonObject, version: int) -> None:
        """A durable reported-properties change becomes a twin change notification for routes."""
        if identity == self.hub_identity:
            return
        message = twin_change_message(identity, patch, version, edge_device_id=self.settings.edge_device_id)
        task = asyncio.get_running_loop().create_task(self._ingest_notification(message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ingest_notification(self, message: Message) -> None:
        try:
            await self.ingest([message])
        except Exception as exc:  # noqa: BLE001 - a lost notification must not fail the PATCH already stored
            log.warning("twin change notification not stored: %s", exc)

    def _hub_twin_change(self, patch: JsonObject | None) -> None:
        if patch is None:
            return
        self._hub_twin_patch = combine_patches(self._hub_twin_patch, patch)
        self._hub_twin_dirty.set()

    async def _hub_twin_loop(self) -> None:
        while True:
            await self._hub_twin_dirty.wait()
            self._write_hub_twin()
            await self.clock.sleep(HUB_TWIN_FLUSH_SECS)

    def _write_hub_twin(self) -> None:
        patch, self._hub_twin_patch = self._hub_twin_patch, {}
        self._hub_twin_dirty.clear()
        if not patch:
            return
        try:
            self.twin_service.update_reported(self.hub_identity, patch)
        except TwinError as exc:
            # IoT Hub's 32 KB bound: with about a thousand clients the clients list no longer
            # fits (edgeHub has the same bound); the hub keeps running, the twin stays as it was.
            if not self._hub_twin_refused:
                log.warning("the hub's own reported properties were not updated: %s", exc.reason[:200])
            self._hub_twin_refused = True
            return
        except Exception:
            log.exception("the hub's own reported properties could not be written")
            return
        self._hub_twin_refused = False
        self.twins.upstream.reported_changed()

    def store_damaged(self, exc: StoreDamagedError) -> None:
        """The store is damaged beyond what it could take out by itself: stop (exit 3), once."""
        if self.store_failure is None:
            self.store_failure = exc
            log.critical("store damaged while running: %s; stopping the hub (exit 3)", exc)
        self.failed.set()

    def _pump_failed(self, name: str, exc: BaseException) -> None:
        """A pump reported damage or crashed: store damage stops the hub; any other crash gets the
        endpoint a new pump, so no endpoint stays undelivered behind a dead task."""
        if isinstance(exc, StoreDamagedError):
            self.store_damaged(exc)
            return
        if self._stopped or self._pumps.get(name) is None:
            return
        log.error("endpoint %s: starting a new pump after the crash", name)
        del self._pumps[name]
        for queue in self.store.queues():
            if queue.endpoint == name:
                self._pump_for(name).notify(queue.priority)

    def _pump_for(self, endpoint_name: str) -> EndpointPump:
        pump = self._pumps.get(endpoint_name)
        if pump is None:
            endpoint = self._endpoint(endpoint_name)
            upstream = endpoint_name == UPSTREAM
            fan_out = self.settings.upstream_fan_out_factor if upstream else LOCAL_IN_FLIGHT_BATCHES
            pump = EndpointPump(
                self.store, endpoint, self.clock, max_in_flight_batches=fan_out,
                drain_order=self.config.drain_order_of(endpoint_name), on_failure=self._pump_failed,
            )
            self._pumps[endpoint_name] = pump
            pump.start()
        return pump

    def _endpoint(self, name: str) -> Endpoint:
        if name == UPSTREAM:
            return self.upstream.endpoint if self.upstream is not None else StandaloneUpstream()
        return local_endpoint(self.directory, self.settings.edge_device_id, name)

    async def _cleanup_loop(self) -> None:
        """TTL cleanup every MessageCleanupIntervalSecs (edgeHub: 30 min), also for dead endpoints."""
        interval = self.settings.message_cleanup_interval_secs
        while True:
            await self.clock.sleep(interval)
            try:
                dropped = await asyncio.to_thread(self.store.expire, now_ms(self.clock))
            except StoreDamagedError as exc:
                self.store_damaged(exc)
                return
            except Exception:
                log.exception("TTL cleanup failed; retrying in %ss", interval)
                continue
            # edgeHub's reason; the store counts expiries per queue, not per sender.
            metrics.MESSAGES_DROPPED.labels("ttl_expiry", "", "").inc(sum(dropped.values()))
            self._publish_store_gauges()

    def _publish_store_gauges(self) -> None:
        # In-memory counters only: stats() walks every ref, too costly every few seconds.
        metrics.STORE_SIZE.set(self.store.size_bytes())
        for queue, length in self.store.queue_lengths().items():
            metrics.QUEUE_LENGTH.labels(queue.endpoint, str(queue.priority)).set(length)


async def _collect(awaitable: Awaitable[object], errors: list[BaseException]) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.exception("error while stopping")
        errors.append(exc)


def build_registry(
    settings: Settings, config: HubConfig, scope: Sequence[IdentitySpec] = (),
) -> IdentityRegistry:
    """The identities of ``config`` and of the device's scope upstream (the file's win), accepting
    SAS ``sr`` on every name the hub answers to."""
    names = [settings.iothub_hostname, settings.edgehub_hostname]
    if settings.gateway_hostname:
        names.append(settings.gateway_hostname)
    configured = {spec.identity for spec in config.identities}
    specs = (*config.identities, *(spec for spec in scope if spec.identity not in configured))
    return IdentityRegistry(specs, names, settings.trust_bundle_file)


def validate_config(settings: Settings) -> Callable[[HubConfig], None]:
    """What a new config file must pass before the hub takes it: routes and identities."""

    def validate(config: HubConfig) -> None:
        compile_routes(config.routes)
        build_registry(settings, config)

    return validate



"""The composition root: settings → store → router → pumps → upstream → heads.

Owns the start/stop order (heads start last and stop first; the store closes last)
and the ingest path. The only module that knows which store backend exists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edgehub import __version__, metrics
from edgehub.auth.registry import IdentityRegistry
from edgehub.clock import Clock, SystemClock, now_ms
from edgehub.config_file import HubConfig, default_config, load_config_file
from edgehub.config_watch import ConfigWatcher
from edgehub.endpoints.base import Endpoint, SendResult, Unsubscribe
from edgehub.endpoints.link import ClientLink
from edgehub.endpoints.module import ClientDirectory, DeviceboundEndpoint, ModuleInputEndpoint
from edgehub.endpoints.pump import EndpointPump
from edgehub.errors import EndpointUnavailable, StoreDamagedError
from edgehub.message import DEFAULT_PRIORITY, Identity, Message
from edgehub.plugins import Head, UpstreamLink
from edgehub.routing.router import RouteMatch, Router, compile_routes
from edgehub.settings import Settings, UpstreamIdentityMode
from edgehub.store.base import Delivery, IngestItem, QueuedMessage, QueueKey, Store
from edgehub.store.group_commit import GroupCommitter
from edgehub.store.open import open_store
from edgehub.tls import ensure_dev_certificates, server_ssl_context
from edgehub.twins.edgehub_twin import EdgeHubReported, VersionInfo
from edgehub.twins.gateway import TwinGateway
from edgehub.twins.methods import MethodRouter
from edgehub.twins.notification import twin_change_message
from edgehub.twins.port import ClientPresence, JsonObject, NoPresence, TwinError
from edgehub.twins.service import TwinService
from edgehub.upstream.config import SubscriptionScope
from edgehub.upstream.factory import create_upstream
from edgehub.upstream.identity_links import IdentityLinks, PresentedTokens
from edgehub.upstream.mqtt import MqttUpstream
from edgehub.upstream.per_identity import IdentityTwins, PerIdentityUpstream
from edgehub.upstream.twin_sync import UpstreamTwins

if TYPE_CHECKING:  # imported where used: a disabled head is never imported
    from edgehub.heads.mqtt.head import MqttHead
    from edgehub.probe_server import ProbeServer

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
        self.config = config
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.heads = list(heads)
        self.upstream = upstream
        self.directory = ClientDirectory()
        self.committer = GroupCommitter(store, sync=settings.store_sync_writes)
        self._routes = build_route_table(config)
        self.registry = build_registry(settings, config)
        self._pumps: dict[str, EndpointPump] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        # Store damage found while running that the store could not route around: the CLI stops
        # the hub with exit 3 (docs/architecture.md §1 invariant 8).
        self.store_failure: StoreDamagedError | None = None
        self.failed = asyncio.Event()
        self.listening: list[str] = []
        # Twins and direct methods (IoT Hub's device twin and direct method model, served locally).
        self.hub_identity = Identity(settings.edge_device_id, EDGE_HUB_MODULE)
        self.twin_service = TwinService(store, on_reported=self._on_reported)
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
        """A new, already validated config (file changed): new routes and TTL from now on."""
        self._routes = build_route_table(config)
        self.registry = build_registry(self.settings, config)
        self.config = config
        for name, pump in self._pumps.items():  # storeAndForwardConfiguration.drainOrder
            pump.set_drain_order(config.drain_order_of(name))
        self._apply_desired(config)
        log.info("config reloaded from %s: %d routes", config.source, len(config.routes))

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
        self._desired_version += 1
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
        self._hub_twin_patch = _merge_patches(self._hub_twin_patch, patch)
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


def _merge_patches(first: JsonObject, second: JsonObject) -> JsonObject:
    """One patch with the effect of ``first`` then ``second`` (JSON merge patch; null kept)."""
    merged = dict(first)
    for key, value in second.items():
        previous = merged.get(key)
        if isinstance(value, dict) and isinstance(previous, dict):
            merged[key] = _merge_patches(previous, value)
        else:
            merged[key] = value
    return merged


async def _collect(awaitable: Awaitable[object], errors: list[BaseException]) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.exception("error while stopping")
        errors.append(exc)



class HubStatus:
    """The hub as the probes see it (edgehub.status.StatusSource).

    Ready: the store is open (between HubAssembly start and stop) and every head is bound
    (its ``bound`` property; a head without one counts as bound once the hub serves).
    Stats come from the store's in-memory counters plus one read of each non-empty queue's
    head for the oldest age: never a walk of the store.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.serving = False

    def ready(self) -> tuple[bool, dict[str, Any]]:
        heads = {head.name: {"bound": bool(getattr(head, "bound", self.serving))} for head in self.hub.heads}
        ready = self.serving and all(part["bound"] for part in heads.values())
        return ready, {"store": {"open": self.serving}, "heads": heads}

    def stats(self) -> dict[str, Any]:
        store = self.hub.store
        connected = int(metrics.sample_value("edgehub_connected_clients"))
        if not self.serving:
            return {"serving": False, "queues": [], "store_bytes": 0, "connected_clients": connected}
        now = now_ms(self.hub.clock)
        queues: list[dict[str, Any]] = []
        for queue, length in sorted(store.queue_lengths().items()):
            oldest = store.read(queue, -1, 1, now) if length else []
            age = round((now - oldest[0].message.enqueued_ms) / 1000, 3) if oldest else None
            queues.append({"endpoint": queue.endpoint, "priority": queue.priority, "length": length,
                           "oldest_age_seconds": age})
        return {"serving": True, "queues": queues, "store_bytes": store.size_bytes(),
                "connected_clients": connected}


class HubAssembly:
    """Everything ``edgehub run`` starts: the hub, its config watcher and the metrics listener
    (the HTTP head's plain site when that head is on, else the minimal edgehub.probe_server)."""

    def __init__(self, hub: Hub, config_path: Path | None, status: HubStatus | None = None) -> None:
        self.hub = hub
        self.config_path = config_path
        self.status = status or HubStatus(hub)
        self._watch_task: asyncio.Task[None] | None = None
        self._probe_server: ProbeServer | None = None
        self._probe_port = 0

    async def start(self) -> None:
        settings = self.hub.settings
        await self.hub.start()
        self.status.serving = True
        if self.config_path is not None:
            watcher = ConfigWatcher(
                self.config_path, self.hub.apply_config, self.hub.clock,
                validate=validate_config(settings),
                current=self.hub.config,
                on_refused=self.hub.config_refused,
            )
            self._watch_task = asyncio.create_task(watcher.run(), name="config-watch")
        if settings.metrics_port and not any(head.name == "http" for head in self.hub.heads):
            from edgehub.probe_server import start_probe_server

            self._probe_server, self._probe_port = await start_probe_server(
                self.status, "0.0.0.0", settings.metrics_port,
            )

    async def stop(self) -> None:
        self.status.serving = False
        if self._probe_server is not None:
            await self._probe_server.stop()
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        await self.hub.stop()

    def describe(self) -> list[str]:
        settings = self.hub.settings
        location = store_folder(settings.storage_folder).resolve()
        kind = type(getattr(self.hub.store, "kv", self.hub.store)).__name__
        backend = {"RocksKeyValue": "RocksDB", "SqliteKeyValue": "SQLite"}.get(kind, kind)
        sync = ", fsync per batch" if settings.store_sync_writes else ""
        memory = "" if settings.optimize_for_performance else ", low-memory mode"
        lines = [f"store: {location} ({backend}{sync}{memory})"]
        lines += self.hub.listening
        if self._probe_port:
            lines.append(f"metrics: http://0.0.0.0:{self._probe_port}/metrics (also /health, /ready, /stats)")
        upstream = self.hub.upstream
        if upstream is None:
            lines.append("upstream: standalone (no EdgeHubConnectionString; $upstream messages wait)")
        else:
            mode = " (a connection per sender)" if isinstance(upstream, PerIdentityUpstream) else ""
            lines.append(f"upstream: {getattr(getattr(upstream, 'config', None), 'url', 'configured')}{mode}")
        return lines


def store_folder(storage_folder: Path) -> Path:
    """The store lives in its own folder under StorageFolder, beside ``certs/``."""
    return storage_folder / "store"


def build_registry(settings: Settings, config: HubConfig) -> IdentityRegistry:
    """The identities of ``config``, accepting SAS ``sr`` on every name the hub answers to."""
    names = [settings.iothub_hostname, settings.edgehub_hostname]
    if settings.gateway_hostname:
        names.append(settings.gateway_hostname)
    return IdentityRegistry(config.identities, names, settings.trust_bundle_file)


def server_tls(settings: Settings, config: HubConfig) -> ssl.SSLContext:
    """The production certificate; under the IoT Edge runtime (``IOTEDGE_WORKLOADURI``) one issued by
    the workload API; else a generated dev CA and server certificate (warned)."""
    if settings.server_certificate_file and settings.server_private_key_file:
        cert, key = settings.server_certificate_file, settings.server_private_key_file
    elif settings.workload_uri is not None:
        from edgehub.workload import WorkloadClient, fetch_server_certificate

        client = WorkloadClient(settings.workload_uri, settings.module_id,
                                settings.module_generation_id or "", settings.workload_api_version)
        cert, key = fetch_server_certificate(client, settings.edgehub_hostname,
                                             settings.storage_folder / "certs")
    else:
        dev = ensure_dev_certificates(
            settings.storage_folder / "certs", [settings.edgehub_hostname, settings.iothub_hostname]
        )
        cert, key = dev.cert_file, dev.key_file
    ca_files = [Path(spec.x509_ca_file) for spec in config.identities if spec.x509_ca_file]
    return server_ssl_context(cert, key, settings.trust_bundle_file, extra_client_ca_files=ca_files)


def build_heads(
    settings: Settings, config: HubConfig, hub: Hub, status: HubStatus | None = None,
) -> list[Head]:
    """The enabled heads; a disabled head is neither imported nor bound (docs/architecture.md §4).

    MQTT over WebSocket belongs to the HTTP head: with ``mqttSettings__enabled=false`` and
    the HTTP head on, the HTTP head runs an MQTT server without TCP listeners of its own.
    """
    heads: list[Head] = []
    tls = server_tls(settings, config) if settings.mqtt.enabled or settings.http.enabled else None
    mqtt_head = _mqtt_head(settings, hub, tls, tcp=True) if settings.mqtt.enabled and tls else None
    if mqtt_head is not None:
        heads.append(mqtt_head)
    if settings.http.enabled and tls is not None:
        from edgehub.heads.http.auth import HttpAuthenticator
        from edgehub.heads.http.head import HttpHead, HttpHeadConfig

        http_config = HttpHeadConfig(
            host="0.0.0.0", port=settings.http.port, metrics_port=settings.metrics_port,
            max_message_size=settings.max_message_size_bytes, edge_device_id=settings.edge_device_id,
        )
        heads.append(HttpHead(
            http_config, authenticator=HttpAuthenticator(lambda: hub.registry, hub.clock.time),
            ssl_context=tls, status=status or HubStatus(hub),
            mqtt=mqtt_head or _mqtt_head(settings, hub, tls, tcp=False), owns_mqtt=mqtt_head is None,
            clock=hub.clock, methods=hub.twins,
        ))
    if settings.amqp.enabled:
        log.info("amqp head is not part of this version yet; amqpSettings__enabled has no effect")
    return heads


def _mqtt_head(settings: Settings, hub: Hub, tls: ssl.SSLContext, *, tcp: bool) -> MqttHead:
    from edgehub.heads.credentials import RegistryAuthenticator
    from edgehub.heads.mqtt.head import MqttHead, MqttHeadConfig
    from edgehub.heads.mqtt.session_store import DurableSessionStore

    auth = RegistryAuthenticator(
        lambda: hub.registry, hub.clock, client_cert_auth=settings.client_cert_auth_enabled,
        generic_topics=settings.mqtt.generic_topics, on_token=hub.presented_tokens.record,
    )
    head_config = MqttHeadConfig(
        host="0.0.0.0", tls_port=settings.mqtt.port, plain_port=settings.mqtt.plain_port,
        max_message_size=settings.max_message_size_bytes,
        max_connected_clients=settings.max_connected_clients,
        low_memory=not settings.optimize_for_performance, tcp=tcp,
    )
    return MqttHead(head_config, auth, tls, hub.clock, twins=hub.twins, methods=hub.twins, presence=hub,
                    sessions=DurableSessionStore(hub.store, hub.clock.time))


def validate_config(settings: Settings) -> Callable[[HubConfig], None]:
    """What a new config file must pass before the hub takes it: routes and identities."""

    def validate(config: HubConfig) -> None:
        compile_routes(config.routes)
        build_registry(settings, config)

    return validate


def per_identity(settings: Settings, upstream: MqttUpstream) -> bool:
    """Whether senders go up on connections of their own (UpstreamIdentityMode): always toward an
    Azure IoT Hub host in auto mode (it authorizes one identity per connection); a parent edge hub
    or a broker takes everyone on the hub's own connection, which is cheaper."""
    mode = settings.upstream_identity_mode
    if mode is UpstreamIdentityMode.AUTO:
        return upstream.config.is_iot_hub
    return mode is UpstreamIdentityMode.PER_IDENTITY


def build_upstream(settings: Settings, hub: Hub) -> UpstreamLink | None:
    """The upstream link and its twin sync, in the connection model ``per_identity`` picks."""
    own = create_upstream(settings, hub.clock)
    if own is None:
        return None
    if not per_identity(settings, own):
        # Multiplexed: a parent edge hub holds the twins of every identity below this hub
        # (edgeHub's nested dialect); a broker answers no twin request and twins stay local.
        sync = UpstreamTwins(own.config.identity, hub.clock, hub.twin_service, hub.twins, multiplexed=True)
        own.twins = sync
        hub.twins.upstream = sync
        return own
    # Each device's connection subscribes to its own cloud-to-device messages; the hub's own to its own.
    own.config = dataclasses.replace(own.config, subscription_scope=SubscriptionScope.OWN)
    own.twins = UpstreamTwins(own.config.identity, hub.clock, hub.twin_service, hub.twins, multiplexed=False)
    links = IdentityLinks(
        own.config, hub.clock, keys=lambda: hub.registry.signing_key, presented=hub.presented_tokens,
        factory=own.connection_factory, twins=hub.twin_service, methods=hub.twins,
        idle_timeout=settings.cloud_connection_idle_timeout_secs, max_links=settings.max_connected_clients,
    )
    upstream = PerIdentityUpstream(own, links, hub.clock)
    hub.twins.upstream = IdentityTwins(upstream)
    hub.upstream_clients = upstream
    return upstream


def assemble(settings: Settings, config_path: Path | None, *, clock: Clock | None = None) -> HubAssembly:
    """Load and validate the config, open the store, build heads. ConfigError / StoreOpenError."""
    config = load_config_file(config_path) if config_path is not None else default_config()
    validate_config(settings)(config)
    metrics.set_common_labels(settings.iothub_hostname, settings.edge_device_id)
    store = open_store(
        store_folder(settings.storage_folder),
        backend=settings.store_backend,
        sync=settings.store_sync_writes,
        low_memory=not settings.optimize_for_performance,
        max_size_bytes=config.max_store_size_bytes,
        recovery=settings.store_recovery,
    )
    hub = Hub(settings, config, store, clock=clock)
    hub.upstream = build_upstream(settings, hub)
    status = HubStatus(hub)
    try:
        hub.heads = build_heads(settings, config, hub, status)
    except Exception:
        store.close()
        raise
    return HubAssembly(hub, config_path, status)

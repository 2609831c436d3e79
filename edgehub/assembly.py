"""Builds what ``edgehub run`` runs from settings and a config file: the store, the TLS context,
the heads, the upstream link (and the device scope), the hub; and HubAssembly, which starts them
with the config watcher and the metrics listener. The composition root's wiring; the Hub itself
(ingest, pumps, twins, config) is edgehub.hub.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgehub import metrics
from edgehub.clock import Clock, now_ms
from edgehub.config_file import HubConfig, default_config, load_config_file
from edgehub.config_watch import ConfigWatcher
from edgehub.hub import Hub, validate_config
from edgehub.plugins import Head, UpstreamLink
from edgehub.settings import Settings, UpstreamIdentityMode
from edgehub.store.open import open_store
from edgehub.tls import dev_certificates, server_ssl_context

if TYPE_CHECKING:  # imported where used: a disabled head, an unconfigured upstream are never imported
    from edgehub.heads.amqp.head import AmqpHead
    from edgehub.heads.mqtt.generic import GenericTopics
    from edgehub.heads.mqtt.head import MqttHead
    from edgehub.probe_server import ProbeServer
    from edgehub.upstream.mqtt import MqttUpstream

log = logging.getLogger(__name__)


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
            from edgehub.upstream.per_identity import PerIdentityUpstream

            mode = " (a connection per sender)" if isinstance(upstream, PerIdentityUpstream) else ""
            lines.append(f"upstream: {getattr(getattr(upstream, 'config', None), 'url', 'configured')}{mode}")
        return lines


def store_folder(storage_folder: Path) -> Path:
    """The store lives in its own folder under StorageFolder, beside ``certs/``."""
    return storage_folder / "store"


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
        dev = dev_certificates(
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
    any_tls = settings.mqtt.enabled or settings.http.enabled or settings.amqp.enabled
    tls = server_tls(settings, config) if any_tls else None
    mqtt_head = _mqtt_head(settings, hub, tls, tcp=True) if settings.mqtt.enabled and tls else None
    if mqtt_head is not None:
        heads.append(mqtt_head)
    amqp_head = _amqp_head(settings, hub, tls) if settings.amqp.enabled and tls else None
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
            amqp_websocket=amqp_head.handle_websocket if amqp_head is not None else None,
        ))
    if amqp_head is not None:
        heads.append(amqp_head)  # after HTTP: it stops first, ending its WebSocket connections too
    return heads


def _amqp_head(settings: Settings, hub: Hub, tls: ssl.SSLContext) -> AmqpHead:
    # Imported here only: with amqpSettings__enabled=false proton is never loaded.
    from edgehub.heads.amqp.auth import AmqpAuthenticator
    from edgehub.heads.amqp.head import AmqpHead, AmqpHeadConfig

    auth = AmqpAuthenticator(lambda: hub.registry, client_cert_auth=settings.client_cert_auth_enabled,
                             on_token=hub.presented_tokens.record, on_refused=hub.credentials_refused)
    config = AmqpHeadConfig(host="0.0.0.0", port=settings.amqp.port,
                            max_message_size=settings.max_message_size_bytes,
                            low_memory=not settings.optimize_for_performance)
    return AmqpHead(config, auth, tls, hub.clock, twins=hub.twins, methods=hub.twins, presence=hub)


def _mqtt_head(settings: Settings, hub: Hub, tls: ssl.SSLContext, *, tcp: bool) -> MqttHead:
    from edgehub.heads.credentials import RegistryAuthenticator
    from edgehub.heads.mqtt.head import MqttHead, MqttHeadConfig
    from edgehub.heads.mqtt.session_store import DurableSessionStore

    auth = RegistryAuthenticator(
        lambda: hub.registry, hub.clock, client_cert_auth=settings.client_cert_auth_enabled,
        generic_topics=settings.mqtt.generic_topics, on_token=hub.presented_tokens.record,
        on_refused=hub.credentials_refused,
    )
    head_config = MqttHeadConfig(
        host="0.0.0.0", tls_port=settings.mqtt.port, plain_port=settings.mqtt.plain_port,
        max_message_size=settings.max_message_size_bytes,
        max_connected_clients=settings.max_connected_clients,
        low_memory=not settings.optimize_for_performance, tcp=tcp,
    )
    return MqttHead(head_config, auth, tls, hub.clock, twins=hub.twins, methods=hub.twins, presence=hub,
                    sessions=DurableSessionStore(hub.store, hub.clock.time),
                    generic=_generic_topics(settings, hub), allow_anonymous=settings.mqtt.allow_anonymous)


def _generic_topics(settings: Settings, hub: Hub) -> GenericTopics | None:
    """The generic MQTT broker (mqttSettings__genericTopics), its state in the hub's store."""
    if not settings.mqtt.generic_topics:
        return None
    from edgehub.broker.core import Broker
    from edgehub.heads.mqtt.broker_store import DurableBrokerStore
    from edgehub.heads.mqtt.generic import GenericTopics
    from edgehub.store.message_store import MessageStore

    store = DurableBrokerStore(hub.store.broker_table()) if isinstance(hub.store, MessageStore) else None
    broker = Broker(max_queued=settings.mqtt.max_queued_messages_per_session, store=store)
    return GenericTopics(broker, acl_rules=lambda: hub.file_config.acl, wall_time=hub.clock.time,
                         routed=lambda topic: hub.takes_topic(topic))


def per_identity(settings: Settings, upstream: MqttUpstream) -> bool:
    """Whether senders go up on connections of their own (UpstreamIdentityMode): always toward an
    Azure IoT Hub host in auto mode (it authorizes one identity per connection); a parent edge hub
    or a broker takes everyone on the hub's own connection, which is cheaper."""
    mode = settings.upstream_identity_mode
    if mode is UpstreamIdentityMode.AUTO:
        return upstream.config.is_iot_hub
    return mode is UpstreamIdentityMode.PER_IDENTITY


def build_upstream(settings: Settings, hub: Hub) -> UpstreamLink | None:
    """The upstream link and its twin sync, in the connection model ``per_identity`` picks; None for a
    standalone hub, which then loads none of the upstream link's modules (0.6 MiB)."""
    if settings.standalone:
        return None
    from edgehub.upstream.device_scope import device_scope_for
    from edgehub.upstream.factory import create_upstream
    from edgehub.upstream.mqtt import MqttUpstream
    from edgehub.upstream.twin_sync import UpstreamTwins

    own = create_upstream(settings, hub.clock)
    if own is None:
        return None
    hub.device_scope = device_scope_for(own.config, settings.storage_folder, hub.clock,
                                        settings.device_scope_cache_refresh_rate_secs, hub.take_scope)
    if hub.device_scope is not None and hub.device_scope.identities:
        hub.take_scope(hub.device_scope.identities)  # the cached scope, for a start while offline
    if not isinstance(own, MqttUpstream):
        # AMQP: one connection, a sender link per sender, twins and methods on its twin/method links.
        from edgehub.upstream.amqp_factory import SenderCredentials

        own.sender_credentials = SenderCredentials(
            own.config, hub.clock, lambda: hub.registry.signing_key, hub.presented_tokens)
        # Every identity's twin and method links share the connection, each authorized by the token
        # its sender links use (the hub's own toward a parent, the identity's own toward IoT Hub).
        own.twins = UpstreamTwins(own.config.identity, hub.clock, hub.twin_service, hub.twins,
                                  multiplexed=True)
        hub.twins.upstream = own.twins
        hub.upstream_clients = own
        return own
    if not per_identity(settings, own):
        # Multiplexed: a parent edge hub holds the twins of every identity below this hub
        # (edgeHub's nested dialect); a broker answers no twin request and twins stay local.
        sync = UpstreamTwins(own.config.identity, hub.clock, hub.twin_service, hub.twins, multiplexed=True)
        own.twins = sync
        hub.twins.upstream = sync
        return own
    from edgehub.upstream.config import SubscriptionScope
    from edgehub.upstream.identity_links import IdentityLinks
    from edgehub.upstream.per_identity import IdentityTwins, PerIdentityUpstream

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

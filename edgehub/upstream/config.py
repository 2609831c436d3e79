"""What the upstream MQTT link needs to know: where to connect, how, as whom, and its limits.

A frozen value built once from Settings (``upstream_config``); no sockets, no clocks, no paho here.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from edgehub.message import Identity
from edgehub.settings import Settings, UpstreamProtocol
from edgehub.upstream.credentials import Credentials, SasCredentials, WorkloadCredentials
from edgehub.upstream.proxy import HttpsProxy

if TYPE_CHECKING:
    from edgehub.workload import WorkloadClient

log = logging.getLogger(__name__)

WEBSOCKET_PATH: Final = "/$iothub/websocket"
"""Where IoT Hub (and this hub's HTTP head) serve MQTT over WebSocket."""

IOT_HUB_SUFFIXES: Final = (
    ".azure-devices.net", ".azure-devices.cn", ".azure-devices.us", ".azure-devices.de"
)
"""Host names of the Azure IoT Hub cloud service (public and sovereign clouds)."""

DEFAULT_KEEPALIVE: Final = 30
"""MQTT keep-alive (s): an idle link pings after this and counts the parent lost when no
PINGRESP follows within as long again (MQTT 3.1.1 §3.1.2.10); the Azure IoT C# SDK default is 300 s."""

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
AMQPS_PORT: Final = 5671
AMQP_PORT: Final = 5672
"""AMQP over TLS and plain (AMQP 1.0 §2.2; IoT Hub serves 5671 only)."""
IOT_HUB_MAX_MESSAGE_BYTES: Final = 262_144
"""IoT Hub's device-to-cloud message limit (256 KiB)."""

MAX_BATCH_BYTES: Final = 262_144
"""Bytes (topics + bodies) one batch may put in flight; ``UpstreamFanOutFactor`` batches of it bound
the link's unacknowledged bytes (see UpstreamEndpoint)."""


class UpstreamTransport(enum.Enum):
    """MQTT over TCP (``Mqtt``) or over a WebSocket (``MqttWs``), each with or without TLS."""

    TCP = "tcp"
    WEBSOCKETS = "websockets"

    def default_port(self, tls: bool) -> int:
        if self is UpstreamTransport.TCP:
            return 8883 if tls else 1883
        return 443 if tls else 80


class SubscriptionScope(enum.Enum):
    """Which devicebound and module-input topics the link subscribes to at the parent.

    ``ALL``: every downstream device's devicebound topic and every local module's inputs
    (``devices/+/messages/devicebound/#``, ``devices/{edge}/modules/+/inputs/#``), for a
    parent that lets this identity act for its children (a generic MQTT broker, a parent
    edgehub). ``OWN``: only this identity's own topic, for a parent that enforces identity
    on subscriptions. ``NONE``: nothing (Azure IoT Hub: its C2D messages reach a downstream
    device only over that device's own connection, which this single link does not open).
    ``AUTO``: NONE for an Azure IoT Hub host name, else ALL, falling back to OWN for any
    wildcard filter the parent refuses in its SUBACK (0x80).
    """

    AUTO = "auto"
    ALL = "all"
    OWN = "own"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream MQTT link's settings; ``host`` is where it connects (GatewayHostName or HostName)."""

    credentials: Credentials
    host: str
    port: int
    transport: UpstreamTransport = UpstreamTransport.TCP
    tls: bool = True
    ca_file: Path | None = None
    ca_pem: str | None = None
    """More trust anchors, PEM: under the IoT Edge runtime its workload API's trust bundle (the edge
    CA a parent edge hub's certificate is issued by), as edgeHub adds it to its trust store."""
    generic_topic: str = ""
    """``mqttSettings__genericUpstreamTopic``: the upstream topic of generic MQTT messages ("" = as
    their sender's telemetry)."""
    edge_device_id: str = ""
    """The device whose modules' inputs come down (``EdgeDeviceId``); the identity's device when empty."""
    websocket_path: str = WEBSOCKET_PATH
    keepalive: int = DEFAULT_KEEPALIVE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    ack_timeout: float = 30.0
    """``MessageAckTimeoutSecs``: a PUBACK later than this counts as not delivered."""
    max_batch_size: int = 100
    """``MaxUpstreamBatchSize``."""
    fan_out: int = 10
    """``UpstreamFanOutFactor``: batches the pump keeps in flight."""
    max_message_bytes: int = IOT_HUB_MAX_MESSAGE_BYTES
    """A body larger than this is refused for good (SendResult.rejected), never retried."""
    subscription_scope: SubscriptionScope = SubscriptionScope.AUTO
    proxy: HttpsProxy | None = None
    """The HTTP CONNECT proxy a WebSocket transport goes through (``https_proxy``, unless ``no_proxy``)."""
    amqp: bool = False
    """AMQP 1.0 rather than MQTT over the transport (``Amqp``, ``AmqpWs``); names the scheme of ``url``."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.port <= 65535:
            problems.append(f"port must be 1-65535, got {self.port}")
        if self.keepalive < 1:
            problems.append(f"keepalive must be >= 1 s, got {self.keepalive}")
        if self.connect_timeout <= 0 or self.ack_timeout <= 0:
            problems.append("timeouts must be > 0 s")
        if self.max_batch_size < 1 or self.fan_out < 1 or self.max_message_bytes < 1:
            problems.append("batch size, fan-out and message size must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def identity(self) -> Identity:
        return self.credentials.identity

    @property
    def local_device_id(self) -> str:
        return self.edge_device_id or self.identity.device_id

    @property
    def max_in_flight_bytes(self) -> int:
        """Unacknowledged bytes the link allows: a batch's worth per batch the pump keeps in flight."""
        return MAX_BATCH_BYTES * self.fan_out

    @property
    def url(self) -> str:
        """For log lines: ``mqtts://host:8883``, ``amqps://host:5671``, ``wss://host:443/$iothub/websocket``..."""
        if self.transport is UpstreamTransport.TCP:
            scheme = "amqp" if self.amqp else "mqtt"
            return f"{scheme}{'s' if self.tls else ''}://{self.host}:{self.port}"
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}{self.websocket_path}"

    @property
    def is_iot_hub(self) -> bool:
        """True when the link talks to the Azure IoT Hub service itself (not a parent hub or broker)."""
        return self.host.lower().endswith(IOT_HUB_SUFFIXES)


def upstream_config(settings: Settings) -> UpstreamConfig | None:
    """The link's config from Settings; None without ``EdgeHubConnectionString`` nor
    ``IOTEDGE_WORKLOADURI`` (standalone hub).

    Credentials: the connection string's key when it is set; else, under the IoT Edge runtime,
    tokens signed by the workload API for ``{IOTEDGE_DEVICEID}/{IOTEDGE_MODULEID}`` on
    ``IOTEDGE_IOTHUBHOSTNAME``. ``Mqtt`` and ``Amqp`` are TCP transports (8883, AMQP's 5671),
    ``MqttWs`` and ``AmqpWs`` WebSocket ones (443). With ``GatewayHostName`` (the setting, else the
    connection string's) the link connects to that parent on the protocol's default port; otherwise
    to HostName, on its ``:port`` if given.
    """
    if settings.standalone:
        return None
    connection = settings.connection_string
    transport = (
        UpstreamTransport.WEBSOCKETS
        if settings.upstream_protocol in (UpstreamProtocol.MQTT_WS, UpstreamProtocol.AMQP_WS)
        else UpstreamTransport.TCP
    )
    default_port = transport.default_port(settings.upstream_tls)
    if settings.upstream_protocol is UpstreamProtocol.AMQP:
        default_port = AMQPS_PORT if settings.upstream_tls else AMQP_PORT
    gateway = settings.gateway_hostname or (connection.gateway_hostname if connection else None)
    credentials: Credentials
    ca_pem: str | None = None
    if gateway:
        host, port = gateway, default_port
    elif connection is not None:
        host, port = connection.hostname, connection.port or default_port
    else:
        host, port = settings.iothub_hostname, default_port
    if connection is not None:
        credentials = SasCredentials(
            settings.iothub_hostname,
            Identity(connection.device_id, connection.module_id),
            connection.shared_access_key,
        )
    else:
        from edgehub.workload import WorkloadClient, workload_signer

        client = WorkloadClient(settings.workload_uri or "", settings.module_id,
                                settings.module_generation_id or "", settings.workload_api_version)
        credentials = WorkloadCredentials(
            settings.iothub_hostname, Identity(settings.edge_device_id, settings.module_id),
            workload_signer(client),
        )
        ca_pem = _trust_bundle(client)
    # IoT Hub closes the connection on a larger message, which would then be retried forever;
    # any other parent gets what the hub itself accepts (maxMessageSizeBytes).
    limit = IOT_HUB_MAX_MESSAGE_BYTES if host.lower().endswith(IOT_HUB_SUFFIXES) else None
    return UpstreamConfig(
        credentials=credentials,
        host=host,
        port=port,
        transport=transport,
        tls=settings.upstream_tls,
        ca_file=settings.upstream_ca_file,
        ca_pem=ca_pem,
        generic_topic=settings.mqtt.generic_upstream_topic if settings.mqtt.generic_topics else "",
        edge_device_id=settings.edge_device_id,
        ack_timeout=settings.message_ack_timeout_secs,
        max_batch_size=settings.max_upstream_batch_size,
        fan_out=settings.upstream_fan_out_factor,
        max_message_bytes=limit or settings.max_message_size_bytes,
        amqp=settings.upstream_protocol in (UpstreamProtocol.AMQP, UpstreamProtocol.AMQP_WS),
    )


def _trust_bundle(client: WorkloadClient) -> str | None:
    """The workload API's trust bundle, or None (with a warning: the system CAs and
    ``UpstreamCaFile`` still serve, enough for a cloud IoT hub) when it cannot be read."""
    from edgehub.workload import WorkloadError

    try:
        return client.trust_bundle()
    except WorkloadError as exc:
        log.warning("upstream: no trust bundle from the workload API (%s); trusting the system CAs "
                    "and UpstreamCaFile only", exc)
        return None

"""Environment variables → one frozen, validated Settings (names and defaults as edgeHub's;
docs/architecture.md §4).

Owns every variable's name, default, meaning and check; must not open sockets or stores, create
folders or read the config file (edgehub.config_file does that), only check that named files exist.
Plain dataclasses over edgehub.settings_fields: no pydantic, so a small device does not pay for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

from edgehub.config_identities import identity_id_problem
from edgehub.connection_string import ConnectionString, hostname_problem
from edgehub.settings_env import describe, load
from edgehub.settings_fields import (
    Problem,
    as_bool,
    as_float,
    as_int,
    as_path,
    as_text,
    choice,
    existing_file,
    group,
    parse_fields,
    port,
    positive,
    positive_seconds,
    refuse,
    setting,
    then,
)

MQTT_MAX_PACKET_BYTES: Final = 268_435_455
"""[MQTT-2.2.3] the largest Remaining Length; no message can be bigger on the MQTT head."""

CONNECTION_STRING_VARIABLE: Final = "EdgeHubConnectionString"

ENV_ALIASES: Final = {
    # What edgeHub also reads, and what edgeAgent injects into the edgeHub module's container.
    CONNECTION_STRING_VARIABLE: ("IotHubConnectionString",),
    "IotHubHostName": ("IOTEDGE_IOTHUBHOSTNAME",),
    "EdgeDeviceId": ("IOTEDGE_DEVICEID",),
    "GatewayHostName": ("IOTEDGE_GATEWAYHOSTNAME",),
    "EdgeHubHostName": ("EdgeDeviceHostName",),
}
"""Each setting's other names: the first name set wins, in this order (the setting's own name first)."""


# --- enumerations (case-insensitive; edgeHub's spellings accepted) ---------------------------------


class UpstreamIdentityMode(StrEnum):
    """``UpstreamIdentityMode``: which identity each sender's messages go up as."""

    AUTO = "auto"
    PER_IDENTITY = "perIdentity"
    MULTIPLEXED = "multiplexed"


class UpstreamProtocol(StrEnum):
    """``UpstreamProtocol``: how the hub talks to its upstream."""

    MQTT = "Mqtt"
    MQTT_WS = "MqttWs"
    AMQP = "Amqp"
    AMQP_WS = "AmqpWs"


class ConfigSource(StrEnum):
    """``configSource`` (edgeHub's name): where the routes and store-and-forward settings come from."""

    TWIN = "twin"
    """The hub's own module twin upstream, when its desired properties carry them (cached for
    offline starts); else the config file."""
    LOCAL = "local"
    """The config file only."""


StoreBackend = Literal["auto", "rocksdb", "sqlite"]
"""``storeBackend``: which store the hub opens (auto: the store already there, else rocksdb if importable
and not in low-memory mode, else sqlite)."""

StoreRecovery = Literal["fail", "quarantine"]
"""``storeRecovery``: what to do with a corrupt store (docs/architecture.md §1 invariant 8)."""


class LogLevel(StrEnum):
    """``RuntimeLogLevel``; edgeHub's names (verbose, information, warn, fatal...) map onto these."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def python_level(self) -> int:
        """The matching ``logging`` level number."""
        return _PYTHON_LEVELS[self]


_PYTHON_LEVELS: Final = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}

_LOG_LEVEL_ALIASES: Final = {
    # edgeHub (Serilog) level names, as its RuntimeLogLevel accepts them.
    "verbose": LogLevel.DEBUG,
    "trace": LogLevel.DEBUG,
    "information": LogLevel.INFO,
    "warn": LogLevel.WARNING,
    "fatal": LogLevel.ERROR,
    "critical": LogLevel.ERROR,
}


# --- value checks of this hub's settings -----------------------------------------------------------


def _message_size(value: int) -> int:
    if not 1 <= value <= MQTT_MAX_PACKET_BYTES:
        raise ValueError(f"must be between 1 and {MQTT_MAX_PACKET_BYTES} (the largest MQTT packet)")
    return value


def _storage_folder(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ValueError("exists but is not a directory")
    return path


def _hostname(text: str) -> str:
    if (problem := hostname_problem(text)) is not None:
        raise ValueError(problem)
    return text


def _workload_uri(text: str) -> str:
    scheme, _, rest = text.partition("://")
    if scheme not in ("unix", "http") or not rest.strip("/"):
        raise ValueError("must be unix:///path/to/workload.sock or http://host:port")
    return text


def _device_id(text: str) -> str:
    if (problem := identity_id_problem(text)) is not None:
        raise ValueError(problem)
    return text


def _connection_string(value: object) -> ConnectionString:
    if isinstance(value, ConnectionString):
        return value
    if isinstance(value, str):
        return ConnectionString.parse(value)
    raise ValueError("must be a connection string")


def _upstream_topic_template(text: str) -> str:
    if text and ("+" in text or "#" in text or text.startswith("$") or "\x00" in text):
        raise ValueError("must be a topic name (no + or #, not starting with $), {topic} allowed")
    return text


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ValueError("must be greater than or equal to 1")
    return value


PORT: Final = then(as_int, port)
POSITIVE: Final = then(as_int, positive)
SECONDS: Final = then(as_float, positive_seconds)
FILE: Final = then(as_path, existing_file)
HOST_NAME: Final = then(as_text, _hostname)
DEVICE_ID: Final = then(as_text, _device_id)
HEAD_ENABLED: Final = "a disabled head is neither imported nor bound"

_DERIVED: Final[Any] = None
"""Default of a setting computed from others at construction (``IotHubHostName``, ``EdgeDeviceId``)."""


# --- the settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The MQTT head (``mqttSettings__*``)."""

    enabled: bool = setting(True, "enabled", HEAD_ENABLED, as_bool)
    port: int = setting(8883, "port", "MQTT over TLS port (0 = the OS picks a free one)", PORT)
    plain_port: int = setting(0, "plainPort", "plaintext MQTT port for loopback/dev; 0 = off", PORT)
    generic_topics: bool = setting(
        False, "genericTopics",
        "plain MQTT pub/sub between local clients on topics outside the IoT Hub scheme", as_bool,
    )
    generic_upstream_topic: str = setting(
        "", "genericUpstreamTopic",
        "with genericTopics and an MQTT upstream: the topic a generic message goes up on, {topic} standing "
        "for its own (e.g. site1/{topic}); empty: its sender's telemetry topic with mqttTopic in the bag",
        then(as_text, _upstream_topic_template), shown="—",
    )
    allow_anonymous: bool = setting(
        False, "allowAnonymous",
        "with genericTopics: clients without credentials may connect (ACLs still apply)", as_bool,
    )
    max_queued_messages_per_session: int = setting(
        100_000, "maxQueuedMessagesPerSession",
        "generic QoS 1/2 messages kept for an offline persistent session (oldest dropped beyond)",
        then(as_int, _at_least_one),
    )

    def __post_init__(self) -> None:
        refuse(parse_fields(self))


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """The AMQP head (``amqpSettings__*``)."""

    enabled: bool = setting(True, "enabled", HEAD_ENABLED, as_bool)
    port: int = setting(5671, "port", "AMQPS port (0 = the OS picks a free one)", PORT)

    def __post_init__(self) -> None:
        refuse(parse_fields(self))


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP head (``httpSettings__*``): REST, WebSocket (``mqtt``, ``AMQPWSB10``) and health."""

    enabled: bool = setting(True, "enabled", HEAD_ENABLED, as_bool)
    port: int = setting(
        443, "port", "HTTPS port: REST and WebSocket at /$iothub/websocket (0 = the OS picks a free one)",
        PORT,
    )

    def __post_init__(self) -> None:
        refuse(parse_fields(self))


@dataclass(frozen=True, slots=True)
class Settings:
    """Every environment setting of the hub, validated; build it with ``load_settings``.

    ``Settings()`` and ``Settings(field=value)`` never read the environment, so tests get the
    documented defaults; ``load_settings(environ)`` is the one way in from environment variables.
    Every value is checked at construction (ConfigError naming each problem); text is parsed as
    the environment's would be.
    """

    mqtt: MqttSettings = group(MqttSettings, "mqttSettings")
    amqp: AmqpSettings = group(AmqpSettings, "amqpSettings")
    http: HttpSettings = group(HttpSettings, "httpSettings")
    metrics_port: int = setting(
        9600, "Metrics__Listener__Port", "Prometheus /metrics, plain HTTP; 0 = off", PORT
    )
    optimize_for_performance: bool = setting(
        True, "OptimizeForPerformance", "false = low-memory mode (docs/architecture.md §6)", as_bool
    )
    storage_folder: Path = setting(
        Path("data"), "StorageFolder", "store location; keep it on a mounted volume",
        then(as_path, _storage_folder), shown="./data (container: /data)",
    )
    store_backend: StoreBackend = setting(
        "auto", "storeBackend", "rocksdb, sqlite, or auto (the existing store, else rocksdb if importable, "
        "sqlite in low-memory mode)",
        choice(get_args(StoreBackend)),
    )
    store_sync_writes: bool = setting(False, "storeSyncWrites", "fsync once per group-commit batch", as_bool)
    store_recovery: StoreRecovery = setting(
        "fail", "storeRecovery",
        "fail = exit if the store cannot be opened; quarantine = move it aside and start empty",
        choice(get_args(StoreRecovery)),
    )
    upstream_protocol: UpstreamProtocol = setting(
        UpstreamProtocol.AMQP, "UpstreamProtocol", "Mqtt, MqttWs, Amqp or AmqpWs (Amqp falls back to AmqpWs)",
        choice(UpstreamProtocol),
    )
    connection_string: ConnectionString | None = setting(
        None, CONNECTION_STRING_VARIABLE,
        "HostName=host[:port];DeviceId=…;ModuleId=$edgeHub;SharedAccessKey=…: the hub's identity "
        "upstream; without it the hub runs standalone (no $upstream delivery, messages wait)",
        _connection_string, secret=True,
    )
    iothub_hostname: str = setting(
        _DERIVED, "IotHubHostName", "the hub name in usernames and in SAS sr", HOST_NAME,
        shown="HostName of EdgeHubConnectionString, else localhost",
    )
    edge_device_id: str = setting(
        _DERIVED, "EdgeDeviceId", "the device the local modules belong to", DEVICE_ID,
        shown="DeviceId of EdgeHubConnectionString, else edge",
    )
    edgehub_hostname: str = setting(
        "localhost", "EdgeHubHostName", "name in the dev server certificate; SAS sr may use it too", HOST_NAME
    )
    gateway_hostname: str | None = setting(
        None, "GatewayHostName", "parent hub for nested deployments (upstream connects there)", HOST_NAME
    )
    upstream_tls: bool = setting(True, "UpstreamTls", "false = plaintext upstream (a test broker)", as_bool)
    upstream_ca_file: Path | None = setting(
        None, "UpstreamCaFile", "extra CA (PEM) to trust for the upstream", FILE, shown="system CAs"
    )
    server_certificate_file: Path | None = setting(
        None, "ServerCertificateFile",
        "server certificate chain (PEM) for every TLS port; without it a dev CA and server "
        "certificate are generated under {StorageFolder}/certs",
        FILE,
    )
    server_private_key_file: Path | None = setting(
        None, "ServerPrivateKeyFile", "private key (PEM) of ServerCertificateFile", FILE
    )
    trust_bundle_file: Path | None = setting(
        None, "TrustBundleFile", "CAs (PEM) trusted for X.509 client certificates", FILE
    )
    client_cert_auth_enabled: bool = setting(
        False, "ClientCertAuthEnabled", "accept X.509 client certificates", as_bool
    )
    max_upstream_batch_size: int = setting(
        100, "MaxUpstreamBatchSize", "messages per upstream send (edgeHub: 10)", POSITIVE
    )
    upstream_fan_out_factor: int = setting(10, "UpstreamFanOutFactor", "concurrent upstream sends", POSITIVE)
    upstream_identity_mode: UpstreamIdentityMode = setting(
        UpstreamIdentityMode.AUTO, "UpstreamIdentityMode",
        "perIdentity: a connection per sender; multiplexed: every sender on the hub's own; "
        "auto: perIdentity toward an Azure IoT Hub host, multiplexed toward a parent edge hub or broker",
        choice(UpstreamIdentityMode),
    )
    config_source: ConfigSource = setting(
        ConfigSource.TWIN, "configSource",
        "twin: routes and storeAndForwardConfiguration from the hub's own twin upstream when it has them "
        "(else the config file); local: the config file only",
        choice(ConfigSource),
    )
    device_scope_cache_refresh_rate_secs: float = setting(
        3600.0, "DeviceScopeCacheRefreshRateSecs",
        "toward an Azure IoT Hub: how often the identities in the device's scope are read again", SECONDS,
    )
    cloud_connection_idle_timeout_secs: float = setting(
        3600.0, "CloudConnectionIdleTimeoutSecs", "a per-identity upstream connection idle this long closes",
        SECONDS,
    )
    message_ack_timeout_secs: float = setting(
        30.0, "MessageAckTimeoutSecs", "how long to wait for a destination's ack", SECONDS
    )
    message_cleanup_interval_secs: float = setting(
        5.0, "MessageCleanupIntervalSecs", "how often expired messages are removed (edgeHub: 1800)", SECONDS
    )
    max_message_size_bytes: int = setting(
        262_144, "maxMessageSizeBytes", "largest accepted message body", then(as_int, _message_size)
    )
    max_connected_clients: int = setting(
        1000, "MaxConnectedClients", "connections beyond this are refused", POSITIVE
    )
    log_level: LogLevel = setting(
        LogLevel.INFO, "RuntimeLogLevel",
        "debug, info, warning or error (edgeHub's verbose/information/warn/fatal too)",
        choice(LogLevel, _LOG_LEVEL_ALIASES),
    )
    workload_uri: str | None = setting(
        None, "IOTEDGE_WORKLOADURI",
        "the IoT Edge workload API (unix:///var/run/iotedge/workload.sock, set by edgeAgent): "
        "signs the upstream SAS tokens and issues the server certificate",
        then(as_text, _workload_uri),
    )
    workload_api_version: str = setting(
        "2019-01-30", "IOTEDGE_APIVERSION", "api-version of the workload API calls (set by edgeAgent)",
        as_text,
    )
    module_id: str = setting(
        "$edgeHub", "IOTEDGE_MODULEID", "the hub's module identity with the workload API (set by edgeAgent)",
        DEVICE_ID,
    )
    module_generation_id: str | None = setting(
        None, "IOTEDGE_MODULEGENERATIONID",
        "generation id of the hub's module identity; required with IOTEDGE_WORKLOADURI", as_text,
    )

    def __post_init__(self) -> None:
        refuse(parse_fields(self))
        connection = self.connection_string
        if cast("str | None", self.iothub_hostname) is None:
            object.__setattr__(self, "iothub_hostname", connection.hostname if connection else "localhost")
        if cast("str | None", self.edge_device_id) is None:
            object.__setattr__(self, "edge_device_id", connection.device_id if connection else "edge")
        # Checks across fields run only once every field is valid.
        refuse([*_certificate_pair_problems(self), *_port_clash_problems(self), *_workload_problems(self),
                *_generic_problems(self)])

    @property
    def standalone(self) -> bool:
        """No upstream link: neither ``EdgeHubConnectionString`` nor ``IOTEDGE_WORKLOADURI`` is set
        (``$upstream`` messages wait in the store until their TTL)."""
        return self.connection_string is None and self.workload_uri is None


def _certificate_pair_problems(settings: Settings) -> Iterator[Problem]:
    if settings.server_certificate_file is not None and settings.server_private_key_file is None:
        yield "ServerPrivateKeyFile", "required when ServerCertificateFile is set"
    if settings.server_private_key_file is not None and settings.server_certificate_file is None:
        yield "ServerCertificateFile", "required when ServerPrivateKeyFile is set"


def _generic_problems(settings: Settings) -> Iterator[Problem]:
    if settings.mqtt.generic_upstream_topic and not settings.mqtt.generic_topics:
        yield "mqttSettings__genericUpstreamTopic", "has no effect without mqttSettings__genericTopics=true"
    if settings.mqtt.generic_upstream_topic and settings.upstream_protocol.value.startswith("Amqp"):
        yield ("mqttSettings__genericUpstreamTopic",
               "applies to an MQTT upstream (UpstreamProtocol Mqtt or MqttWs)")


def _workload_problems(settings: Settings) -> Iterator[Problem]:
    if settings.workload_uri is not None and not settings.module_generation_id:
        yield "IOTEDGE_MODULEGENERATIONID", "required when IOTEDGE_WORKLOADURI is set"


def _port_clash_problems(settings: Settings) -> Iterator[Problem]:
    listeners = [
        ("mqttSettings__port", settings.mqtt.port, settings.mqtt.enabled),
        ("mqttSettings__plainPort", settings.mqtt.plain_port, settings.mqtt.enabled),
        ("amqpSettings__port", settings.amqp.port, settings.amqp.enabled),
        ("httpSettings__port", settings.http.port, settings.http.enabled),
        ("Metrics__Listener__Port", settings.metrics_port, True),
    ]
    owner: dict[int, str] = {}
    for variable, number, enabled in listeners:
        if not enabled or number == 0:
            continue
        if number in owner:
            yield variable, f"port {number} is already used by {owner[number]}"
        else:
            owner[number] = variable


# --- loading from the environment, and the documentation ------------------------------------------


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (None = ``os.environ``); raises ConfigError listing every problem.

    Names are case-insensitive, ``__`` (or .NET's ``:``) nests into a group, an empty value means
    the default, and variables that name no setting are ignored (unknown ones inside a group are not).
    """
    return load(Settings, os.environ if environ is None else environ, ENV_ALIASES)


def describe_settings() -> list[tuple[str, str, str]]:
    """``(variable, default, meaning)`` for every setting, in declaration order (the README table)."""
    return describe(Settings, ENV_ALIASES)

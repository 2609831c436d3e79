"""Environment variables → one frozen, validated Settings (names and defaults as edgeHub's;
docs/architecture.md §4).

Owns every variable's name, default, meaning and check; must not open sockets or stores, create
folders or read the config file (edgehub.config_file does that), only check that named files exist.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from edgehub.config_file import identity_id_problem
from edgehub.connection_string import ConnectionString, hostname_problem
from edgehub.errors import ConfigError

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


def _names(variable: str) -> AliasChoices:
    """The ``validation_alias`` of a setting with IoT Edge aliases (ENV_ALIASES)."""
    return AliasChoices(variable, *ENV_ALIASES.get(variable, ()))


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


StoreBackend = Literal["auto", "rocksdb", "sqlite"]
"""``storeBackend``: which store the hub opens (auto = rocksdb if importable, else sqlite)."""

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


def _choice(values: Iterable[str], aliases: Mapping[str, str] | None = None) -> BeforeValidator:
    """Case-insensitive parsing of an enumeration, refusing anything else with the allowed values."""
    canonical = list(values)
    by_name = {value.lower(): value for value in canonical} | dict(aliases or {})

    def parse(value: object) -> object:
        if isinstance(value, str) and (known := by_name.get(value.strip().lower())) is not None:
            return known
        raise ValueError(f"must be one of {', '.join(canonical)}")

    return BeforeValidator(parse)


# --- value checks ---------------------------------------------------------------------------------


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number between 0 and 65535")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be a positive whole number")
    return value


def _positive_seconds(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _message_size(value: int) -> int:
    if not 1 <= value <= MQTT_MAX_PACKET_BYTES:
        raise ValueError(f"must be between 1 and {MQTT_MAX_PACKET_BYTES} (the largest MQTT packet)")
    return value


def _existing_file(path: Path) -> Path:
    if not path.exists():
        raise ValueError("no such file")
    if not path.is_file():
        raise ValueError("not a regular file")
    if not os.access(path, os.R_OK):
        raise ValueError("the file is not readable")
    return path


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


Port = Annotated[int, AfterValidator(_port)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
PositiveSeconds = Annotated[float, AfterValidator(_positive_seconds)]
ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
HostName = Annotated[str, AfterValidator(_hostname)]


# --- the hub's upstream identity ------------------------------------------------------------------


def _connection_string(value: object) -> ConnectionString | None:
    if value is None or isinstance(value, ConnectionString):
        return value
    if isinstance(value, str):
        return ConnectionString.parse(value)
    raise ValueError("must be a connection string")


def _default_iothub_hostname(validated: dict[str, Any]) -> str:
    connection = validated.get("connection_string")
    return connection.hostname if isinstance(connection, ConnectionString) else "localhost"


def _default_edge_device_id(validated: dict[str, Any]) -> str:
    connection = validated.get("connection_string")
    return connection.device_id if isinstance(connection, ConnectionString) else "edge"


# --- the settings ---------------------------------------------------------------------------------

_GROUP_CONFIG: Final = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)


def _shown(default: str) -> dict[str, Any]:
    """How ``describe_settings`` shows a default that is computed or platform-dependent."""
    return {"shown_default": default}


class MqttSettings(BaseModel):
    """The MQTT head (``mqttSettings__*``)."""

    model_config = _GROUP_CONFIG

    enabled: bool = Field(
        default=True, validation_alias="enabled", description="a disabled head is neither imported nor bound"
    )
    port: Port = Field(
        default=8883, validation_alias="port", description="MQTT over TLS port (0 = the OS picks a free one)"
    )
    plain_port: Port = Field(
        default=0, validation_alias="plainPort", description="plaintext MQTT port for loopback/dev; 0 = off"
    )
    generic_topics: bool = Field(
        default=False,
        validation_alias="genericTopics",
        description="plain MQTT pub/sub between local clients on topics outside the IoT Hub scheme",
    )
    allow_anonymous: bool = Field(
        default=False,
        validation_alias="allowAnonymous",
        description="with genericTopics: clients without credentials may connect (ACLs still apply)",
    )
    max_queued_messages_per_session: int = Field(
        default=1000,
        ge=1,
        validation_alias="maxQueuedMessagesPerSession",
        description="generic QoS 1/2 messages kept for an offline persistent session (oldest dropped beyond)",
    )


class AmqpSettings(BaseModel):
    """The AMQP head (``amqpSettings__*``)."""

    model_config = _GROUP_CONFIG

    enabled: bool = Field(
        default=True, validation_alias="enabled", description="a disabled head is neither imported nor bound"
    )
    port: Port = Field(
        default=5671, validation_alias="port", description="AMQPS port (0 = the OS picks a free one)"
    )


class HttpSettings(BaseModel):
    """The HTTP head (``httpSettings__*``): REST, WebSocket (``mqtt``, ``AMQPWSB10``) and health."""

    model_config = _GROUP_CONFIG

    enabled: bool = Field(
        default=True, validation_alias="enabled", description="a disabled head is neither imported nor bound"
    )
    port: Port = Field(
        default=443,
        validation_alias="port",
        description="HTTPS port: REST and WebSocket at /$iothub/websocket (0 = the OS picks a free one)",
    )


class Settings(BaseSettings):
    """Every environment setting of the hub, validated; build it with ``load_settings``.

    ``Settings()`` and ``Settings(field=value)`` never read the environment, so tests get the
    documented defaults; ``load_settings(environ)`` is the one way in from environment variables.
    """

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    mqtt: MqttSettings = Field(default=MqttSettings(), validation_alias="mqttSettings")
    amqp: AmqpSettings = Field(default=AmqpSettings(), validation_alias="amqpSettings")
    http: HttpSettings = Field(default=HttpSettings(), validation_alias="httpSettings")
    metrics_port: Port = Field(
        default=9600,
        validation_alias="Metrics__Listener__Port",
        description="Prometheus /metrics, plain HTTP; 0 = off",
    )
    optimize_for_performance: bool = Field(
        default=True,
        validation_alias="OptimizeForPerformance",
        description="false = low-memory mode (docs/architecture.md §6)",
    )
    storage_folder: Annotated[Path, AfterValidator(_storage_folder)] = Field(
        default=Path("data"),
        validation_alias="StorageFolder",
        description="store location; keep it on a mounted volume",
        json_schema_extra=_shown("./data (container: /data)"),
    )
    store_backend: Annotated[StoreBackend, _choice(get_args(StoreBackend))] = Field(
        default="auto",
        validation_alias="storeBackend",
        description="rocksdb, sqlite, or auto (rocksdb if importable)",
    )
    store_sync_writes: bool = Field(
        default=False, validation_alias="storeSyncWrites", description="fsync once per group-commit batch"
    )
    store_recovery: Annotated[StoreRecovery, _choice(get_args(StoreRecovery))] = Field(
        default="fail",
        validation_alias="storeRecovery",
        description="fail = exit if the store cannot be opened; quarantine = move it aside and start empty",
    )
    upstream_protocol: Annotated[UpstreamProtocol, _choice(UpstreamProtocol)] = Field(
        default=UpstreamProtocol.AMQP,
        validation_alias="UpstreamProtocol",
        description="Mqtt, MqttWs, Amqp or AmqpWs (Amqp falls back to AmqpWs)",
    )
    connection_string: Annotated[ConnectionString | None, PlainValidator(_connection_string)] = Field(
        default=None,
        validation_alias=_names(CONNECTION_STRING_VARIABLE),
        description=(
            "HostName=host[:port];DeviceId=…;ModuleId=$edgeHub;SharedAccessKey=…: the hub's identity "
            "upstream; without it the hub runs standalone (no $upstream delivery, messages wait)"
        ),
    )
    iothub_hostname: HostName = Field(
        default_factory=_default_iothub_hostname,
        validation_alias=_names("IotHubHostName"),
        description="the hub name in usernames and in SAS sr",
        json_schema_extra=_shown("HostName of EdgeHubConnectionString, else localhost"),
    )
    edge_device_id: Annotated[str, AfterValidator(_device_id)] = Field(
        default_factory=_default_edge_device_id,
        validation_alias=_names("EdgeDeviceId"),
        description="the device the local modules belong to",
        json_schema_extra=_shown("DeviceId of EdgeHubConnectionString, else edge"),
    )
    edgehub_hostname: HostName = Field(
        default="localhost",
        validation_alias=_names("EdgeHubHostName"),
        description="name in the dev server certificate; SAS sr may use it too",
    )
    gateway_hostname: HostName | None = Field(
        default=None,
        validation_alias=_names("GatewayHostName"),
        description="parent hub for nested deployments (upstream connects there)",
    )
    upstream_tls: bool = Field(
        default=True, validation_alias="UpstreamTls", description="false = plaintext upstream (a test broker)"
    )
    upstream_ca_file: ExistingFile | None = Field(
        default=None,
        validation_alias="UpstreamCaFile",
        description="extra CA (PEM) to trust for the upstream",
        json_schema_extra=_shown("system CAs"),
    )
    server_certificate_file: ExistingFile | None = Field(
        default=None,
        validation_alias="ServerCertificateFile",
        description=(
            "server certificate chain (PEM) for every TLS port; without it a dev CA and server "
            "certificate are generated under {StorageFolder}/certs"
        ),
    )
    server_private_key_file: ExistingFile | None = Field(
        default=None,
        validation_alias="ServerPrivateKeyFile",
        description="private key (PEM) of ServerCertificateFile",
    )
    trust_bundle_file: ExistingFile | None = Field(
        default=None,
        validation_alias="TrustBundleFile",
        description="CAs (PEM) trusted for X.509 client certificates",
    )
    client_cert_auth_enabled: bool = Field(
        default=False,
        validation_alias="ClientCertAuthEnabled",
        description="accept X.509 client certificates",
    )
    max_upstream_batch_size: PositiveInt = Field(
        default=100,
        validation_alias="MaxUpstreamBatchSize",
        description="messages per upstream send (edgeHub: 10)",
    )
    upstream_fan_out_factor: PositiveInt = Field(
        default=10, validation_alias="UpstreamFanOutFactor", description="concurrent upstream sends"
    )
    upstream_identity_mode: Annotated[UpstreamIdentityMode, _choice(UpstreamIdentityMode)] = Field(
        default=UpstreamIdentityMode.AUTO,
        validation_alias="UpstreamIdentityMode",
        description="perIdentity: a connection per sender; multiplexed: every sender on the hub's own; "
        "auto: perIdentity toward an Azure IoT Hub host, multiplexed toward a parent edge hub or broker",
    )
    cloud_connection_idle_timeout_secs: PositiveSeconds = Field(
        default=3600,
        validation_alias="CloudConnectionIdleTimeoutSecs",
        description="a per-identity upstream connection idle this long closes",
    )
    message_ack_timeout_secs: PositiveSeconds = Field(
        default=30,
        validation_alias="MessageAckTimeoutSecs",
        description="how long to wait for a destination's ack",
    )
    message_cleanup_interval_secs: PositiveSeconds = Field(
        default=5,
        validation_alias="MessageCleanupIntervalSecs",
        description="how often expired messages are removed (edgeHub: 1800)",
    )
    max_message_size_bytes: Annotated[int, AfterValidator(_message_size)] = Field(
        default=262_144, validation_alias="maxMessageSizeBytes", description="largest accepted message body"
    )
    max_connected_clients: PositiveInt = Field(
        default=1000,
        validation_alias="MaxConnectedClients",
        description="connections beyond this are refused",
    )
    log_level: Annotated[LogLevel, _choice(LogLevel, _LOG_LEVEL_ALIASES)] = Field(
        default=LogLevel.INFO,
        validation_alias="RuntimeLogLevel",
        description="debug, info, warning or error (edgeHub's verbose/information/warn/fatal too)",
    )
    workload_uri: Annotated[str, AfterValidator(_workload_uri)] | None = Field(
        default=None,
        validation_alias="IOTEDGE_WORKLOADURI",
        description=(
            "the IoT Edge workload API (unix:///var/run/iotedge/workload.sock, set by edgeAgent): "
            "signs the upstream SAS tokens and issues the server certificate"
        ),
    )
    workload_api_version: str = Field(
        default="2019-01-30",
        validation_alias="IOTEDGE_APIVERSION",
        description="api-version of the workload API calls (set by edgeAgent)",
    )
    module_id: Annotated[str, AfterValidator(_device_id)] = Field(
        default="$edgeHub",
        validation_alias="IOTEDGE_MODULEID",
        description="the hub's module identity with the workload API (set by edgeAgent)",
    )
    module_generation_id: str | None = Field(
        default=None,
        validation_alias="IOTEDGE_MODULEGENERATIONID",
        description="generation id of the hub's module identity; required with IOTEDGE_WORKLOADURI",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only explicit arguments: the environment comes in through ``load_settings``."""
        return (init_settings,)

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        """Checks across fields; runs only once every field is valid, raises ConfigError."""
        problems = [*_certificate_pair_problems(self), *_port_clash_problems(self), *_workload_problems(self)]
        if problems:
            raise ConfigError(problems)
        return self


def _certificate_pair_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    if settings.server_certificate_file is not None and settings.server_private_key_file is None:
        yield "ServerPrivateKeyFile", "required when ServerCertificateFile is set"
    if settings.server_private_key_file is not None and settings.server_certificate_file is None:
        yield "ServerCertificateFile", "required when ServerPrivateKeyFile is set"


def _workload_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    if settings.workload_uri is not None and not settings.module_generation_id:
        yield "IOTEDGE_MODULEGENERATIONID", "required when IOTEDGE_WORKLOADURI is set"


def _port_clash_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    listeners = [
        ("mqttSettings__port", settings.mqtt.port, settings.mqtt.enabled),
        ("mqttSettings__plainPort", settings.mqtt.plain_port, settings.mqtt.enabled),
        ("amqpSettings__port", settings.amqp.port, settings.amqp.enabled),
        ("httpSettings__port", settings.http.port, settings.http.enabled),
        ("Metrics__Listener__Port", settings.metrics_port, True),
    ]
    owner: dict[int, str] = {}
    for variable, port, enabled in listeners:
        if not enabled or port == 0:
            continue
        if port in owner:
            yield variable, f"port {port} is already used by {owner[port]}"
        else:
            owner[port] = variable


# --- loading from the environment -----------------------------------------------------------------


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' env source over a given mapping, with .NET's ``:`` accepted for ``__``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        groups = {_env_name(info, name).lower() for name, info in _groups()}
        self._environ = {
            name.replace(":", "__"): value
            for name, value in environ.items()
            if name.lower() not in groups  # reported by _whole_group_problems, not parsed as JSON
        }
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Overrides the os.environ read of EnvSettingsSource; matching stays pydantic-settings'.
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (None = ``os.environ``); raises ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    problems = list(_whole_group_problems(environ))
    try:
        settings = Settings.model_validate(_EnvironmentSource(environ)())
    except ValidationError as exc:
        problems.extend(
            _as_given(_problem(error), environ)
            for error in exc.errors() if error["type"] != "default_factory_not_called"
        )
        raise ConfigError(problems) from None
    except ConfigError as exc:
        raise ConfigError(problems + [_as_given(problem, environ) for problem in exc.problems]) from None
    if problems:
        raise ConfigError(problems)
    return settings


def _as_given(problem: tuple[str, str], environ: Mapping[str, str]) -> tuple[str, str]:
    """A problem of a setting named as the user set it: ``IOTEDGE_DEVICEID`` rather than
    ``EdgeDeviceId`` when only the alias is in the environment."""
    location, reason = problem
    aliases = ENV_ALIASES.get(location)
    if not aliases:
        return problem
    present = {name.lower() for name, value in environ.items() if value}
    if location.lower() in present:
        return problem
    given = next((alias for alias in aliases if alias.lower() in present), location)
    return given, reason


def _whole_group_problems(environ: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """A group name set on its own (``mqttSettings=…``) is not a setting; say which ones are."""
    groups = {_env_name(info, name).lower(): (name, info) for name, info in _groups()}
    for variable in environ:
        if (group := groups.get(variable.lower())) is not None:
            yield variable, f"set the individual settings instead: {', '.join(_group_variables(*group))}"


def _groups() -> Iterator[tuple[str, FieldInfo]]:
    for name, info in Settings.model_fields.items():
        if _group_model(info) is not None:
            yield name, info


def _group_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _group_variables(name: str, info: FieldInfo) -> list[str]:
    """``mqttSettings__enabled``, ``mqttSettings__port``... for a group field (empty for others)."""
    model = _group_model(info)
    prefix = _env_name(info, name)
    fields = model.model_fields.items() if model is not None else ()
    return [f"{prefix}__{_env_name(inner, inner_name)}" for inner_name, inner in fields]


def _env_name(info: FieldInfo, name: str) -> str:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(first := alias.choices[0], str):
        return first
    return alias if isinstance(alias, str) else name


def _field_for(model: type[BaseModel], key: object) -> tuple[str, FieldInfo] | None:
    text = str(key).lower()
    for name, info in model.model_fields.items():
        if text in (name.lower(), _env_name(info, name).lower()):
            return name, info
    return None


_SECRET_VARIABLES: Final = frozenset({CONNECTION_STRING_VARIABLE, *ENV_ALIASES[CONNECTION_STRING_VARIABLE]})

_TYPE_REASONS: Final = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "path_type": "must be a path",
    "string_type": "must be text",
}


def _problem(error: ErrorDetails) -> tuple[str, str]:
    """One pydantic error as (the variable as the docs spell it, a sentence a user can act on)."""
    location, known = _locate(error["loc"])
    if error["type"] == "extra_forbidden":
        return location, f"unknown setting (known: {', '.join(known)})"
    if error["type"] == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        reason = _TYPE_REASONS.get(error["type"], error["msg"])
    shown_input = error["input"]
    if location not in _SECRET_VARIABLES and isinstance(shown_input, str):
        reason = f"{reason} (got {shown_input!r})"
    return location, reason


def _locate(loc: tuple[int | str, ...]) -> tuple[str, list[str]]:
    """The variable name for a pydantic location, and the known names beside it."""
    found = _field_for(Settings, loc[0]) if loc else None
    if found is None:
        return ".".join(map(str, loc)), []
    name, info = found
    outer = _env_name(info, name)
    model = _group_model(info)
    if model is None or len(loc) < 2:
        return outer, []
    inner = _field_for(model, loc[1])
    inner_name = _env_name(inner[1], inner[0]) if inner else str(loc[1])
    return f"{outer}__{inner_name}", _group_variables(name, info)


# --- documentation --------------------------------------------------------------------------------


def describe_settings() -> list[tuple[str, str, str]]:
    """``(variable, default, meaning)`` for every setting, in declaration order (the README table)."""
    rows: list[tuple[str, str, str]] = []
    for name, info in Settings.model_fields.items():
        model = _group_model(info)
        if model is None:
            variable = _env_name(info, name)
            also = ENV_ALIASES.get(variable, ())
            meaning = (info.description or "") + (f" (also read as {', '.join(also)})" if also else "")
            rows.append((variable, _shown_default(info), meaning))
            continue
        prefix = _env_name(info, name)
        rows.extend(
            (f"{prefix}__{_env_name(inner, inner_name)}", _shown_default(inner), inner.description or "")
            for inner_name, inner in model.model_fields.items()
        )
    return rows


def _shown_default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(shown := extra.get("shown_default"), str):
        return shown
    return _format_default(info.get_default(call_default_factory=False))


_FORMATTERS: Final[list[tuple[type, Callable[[Any], str]]]] = [
    (bool, lambda value: "true" if value else "false"),
    (Enum, lambda value: str(value.value)),
    (float, lambda value: f"{value:g}"),
]


def _format_default(value: object) -> str:
    if value is None:
        return "—"
    for kind, format_value in _FORMATTERS:
        if isinstance(value, kind):
            return format_value(value)
    return str(value)

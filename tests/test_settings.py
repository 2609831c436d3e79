"""Tests of edgehub.settings: names, defaults and every refusal of the environment (docs/architecture.md §4).

Environments are plain dicts; nothing here depends on the real process environment.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from edgehub.connection_string import ConnectionString
from edgehub.errors import ConfigError
from edgehub.settings import (
    LogLevel,
    Settings,
    UpstreamProtocol,
    describe_settings,
    load_settings,
)

KEY = base64.b64encode(b"k" * 32).decode()
CONNECTION_STRING = f"HostName=myhub.azure-devices.net;DeviceId=gw1;ModuleId=$edgeHub;SharedAccessKey={KEY}"


def problems_of(environ: dict[str, str]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value.problems


def test_empty_environment_gives_the_documented_defaults() -> None:
    settings = load_settings({})

    assert (settings.mqtt.enabled, settings.mqtt.port, settings.mqtt.plain_port) == (True, 8883, 0)
    assert settings.mqtt.generic_topics is False
    assert (settings.amqp.enabled, settings.amqp.port) == (True, 5671)
    assert (settings.http.enabled, settings.http.port) == (True, 443)
    assert settings.metrics_port == 9600
    assert settings.optimize_for_performance is True
    assert settings.storage_folder == Path("data")
    assert settings.store_backend == "auto"
    assert settings.store_sync_writes is False
    assert settings.store_recovery == "fail"
    assert settings.upstream_protocol is UpstreamProtocol.AMQP
    assert settings.connection_string is None
    assert settings.iothub_hostname == "localhost"
    assert settings.edge_device_id == "edge"
    assert settings.edgehub_hostname == "localhost"
    assert settings.gateway_hostname is None
    assert settings.upstream_tls is True
    assert settings.upstream_ca_file is None
    assert settings.server_certificate_file is None
    assert settings.server_private_key_file is None
    assert settings.trust_bundle_file is None
    assert settings.client_cert_auth_enabled is False
    assert settings.max_upstream_batch_size == 100
    assert settings.upstream_fan_out_factor == 10
    assert settings.message_ack_timeout_secs == 30
    assert settings.message_cleanup_interval_secs == 5
    assert settings.max_message_size_bytes == 262_144
    assert settings.max_connected_clients == 1000
    assert settings.log_level is LogLevel.INFO


def test_names_are_case_insensitive_and_double_underscore_nests() -> None:
    settings = load_settings(
        {
            "MQTTSETTINGS__PORT": "1884",
            "mqttSettings__enabled": "false",
            "mqttsettings__plainport": "1883",
            "MqttSettings__GenericTopics": "true",
            "amqpSettings__Enabled": "False",
            "HTTPSETTINGS__PORT": "8443",
            "metrics__listener__port": "9601",
            "optimizeforperformance": "FALSE",
            "STORAGEFOLDER": "/var/lib/edgehub",
        }
    )

    assert settings.mqtt.port == 1884
    assert settings.mqtt.enabled is False
    assert settings.mqtt.plain_port == 1883
    assert settings.mqtt.generic_topics is True
    assert settings.amqp.enabled is False
    assert settings.http.port == 8443
    assert settings.metrics_port == 9601
    assert settings.optimize_for_performance is False
    assert settings.storage_folder == Path("/var/lib/edgehub")


def test_dotnet_colon_separator_works_like_double_underscore() -> None:
    settings = load_settings({"mqttSettings:plainPort": "1883", "Metrics:Listener:Port": "9700"})

    assert settings.mqtt.plain_port == 1883
    assert settings.metrics_port == 9700


def test_empty_value_means_the_default() -> None:
    settings = load_settings({"mqttSettings__port": "", "EdgeHubConnectionString": ""})

    assert settings.mqtt.port == 8883
    assert settings.connection_string is None


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("UpstreamProtocol", "mqttws", "upstream_protocol", UpstreamProtocol.MQTT_WS),
        ("UpstreamProtocol", "AMQPWS", "upstream_protocol", UpstreamProtocol.AMQP_WS),
        ("UpstreamProtocol", "Mqtt", "upstream_protocol", UpstreamProtocol.MQTT),
        ("storeBackend", "SQLite", "store_backend", "sqlite"),
        ("StoreBackend", "rocksdb", "store_backend", "rocksdb"),
        ("storeRecovery", "Quarantine", "store_recovery", "quarantine"),
        ("RuntimeLogLevel", "DEBUG", "log_level", LogLevel.DEBUG),
        ("RuntimeLogLevel", "verbose", "log_level", LogLevel.DEBUG),
        ("RuntimeLogLevel", "Information", "log_level", LogLevel.INFO),
        ("RuntimeLogLevel", "warn", "log_level", LogLevel.WARNING),
        ("RuntimeLogLevel", "Error", "log_level", LogLevel.ERROR),
        ("RuntimeLogLevel", "fatal", "log_level", LogLevel.ERROR),
    ],
)
def test_enumerations_accept_any_case_and_edgehub_names(
    variable: str, value: str, attribute: str, expected: object
) -> None:
    assert getattr(load_settings({variable: value}), attribute) == expected


def test_log_level_maps_to_the_logging_module() -> None:
    assert LogLevel.WARNING.python_level == logging.WARNING
    assert load_settings({"RuntimeLogLevel": "debug"}).log_level.python_level == logging.DEBUG


def test_connection_string_is_parsed_and_names_the_hub_and_device() -> None:
    settings = load_settings({"EdgeHubConnectionString": CONNECTION_STRING})

    assert settings.connection_string == ConnectionString(
        hostname="myhub.azure-devices.net", device_id="gw1", shared_access_key=KEY, module_id="$edgeHub"
    )
    assert settings.connection_string is not None
    assert settings.connection_string.key == b"k" * 32
    assert settings.iothub_hostname == "myhub.azure-devices.net"
    assert settings.edge_device_id == "gw1"


def test_connection_string_part_names_are_case_insensitive_and_hostname_may_carry_a_port() -> None:
    text = f"hostname=parent.local:8883;DEVICEID=child;sharedaccesskey={KEY};GatewayHostName=parent.local;"
    connection = load_settings({"edgehubconnectionstring": text}).connection_string

    assert connection is not None
    assert (connection.hostname, connection.port, connection.device_id) == ("parent.local", 8883, "child")
    assert connection.module_id is None
    assert connection.gateway_hostname == "parent.local"


def test_explicit_hostname_and_device_id_win_over_the_connection_string() -> None:
    settings = load_settings(
        {
            "EdgeHubConnectionString": CONNECTION_STRING,
            "IotHubHostName": "other.example",
            "EdgeDeviceId": "dev2",
        }
    )

    assert (settings.iothub_hostname, settings.edge_device_id) == ("other.example", "dev2")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"DeviceId=gw1;SharedAccessKey={KEY}", "missing HostName"),
        ("HostName=h;DeviceId=gw1", "missing SharedAccessKey"),
        (f"HostName=h;SharedAccessKey={KEY}", "missing DeviceId"),
        ("HostName=h;DeviceId=gw1;SharedAccessKey=not base64!", "SharedAccessKey is not valid base64"),
        ("HostName=h;DeviceId=gw1;SharedAccessKey=", "SharedAccessKey is empty"),
        (f"HostName=h:70000;DeviceId=gw1;SharedAccessKey={KEY}", "port must be 1-65535"),
        (f"HostName=bad host;DeviceId=gw1;SharedAccessKey={KEY}", "HostName must be a host name"),
        (f"HostName=h;DeviceId=a/b;SharedAccessKey={KEY}", "DeviceId must be 1 to 128"),
        (f"HostName=h;DeviceId=gw1;SharedAccessKey={KEY};Colour=blue", "unknown part 'Colour'"),
        (f"HostName=h;HostName=i;DeviceId=gw1;SharedAccessKey={KEY}", "HostName is given twice"),
        (f"HostName=h;DeviceId=gw1;SharedAccessKey={KEY};junk", "part 4 is not Name=Value"),
    ],
)
def test_bad_connection_string_is_refused_naming_the_problem(text: str, fragment: str) -> None:
    [(location, reason)] = problems_of({"EdgeHubConnectionString": text})

    assert location == "EdgeHubConnectionString"
    assert fragment in reason


def test_shared_access_key_never_appears_in_repr_or_problems() -> None:
    secret = base64.b64encode(b"super-secret-key-material").decode()
    settings = load_settings({"EdgeHubConnectionString": f"HostName=h;DeviceId=d;SharedAccessKey={secret}"})
    [(_, reason)] = problems_of(
        {"EdgeHubConnectionString": f"HostName=h:0;DeviceId=d;SharedAccessKey={secret}"}
    )

    assert secret not in repr(settings)
    assert secret not in reason


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("mqttSettings__port", "65536", "port number between 0 and 65535"),
        ("mqttSettings__plainPort", "-1", "port number between 0 and 65535"),
        ("amqpSettings__port", "five", "must be a whole number"),
        ("httpSettings__enabled", "maybe", "must be true or false"),
        ("Metrics__Listener__Port", "1e9", "must be a whole number"),
        ("OptimizeForPerformance", "2", "must be true or false"),
        ("storeBackend", "leveldb", "must be one of auto, rocksdb, sqlite"),
        ("storeRecovery", "ignore", "must be one of fail, quarantine"),
        ("UpstreamProtocol", "Http", "must be one of Mqtt, MqttWs, Amqp, AmqpWs"),
        ("RuntimeLogLevel", "loud", "must be one of debug, info, warning, error"),
        ("UpstreamIdentityMode", "each", "must be one of auto, perIdentity, multiplexed"),
        ("CloudConnectionIdleTimeoutSecs", "0", "must be a positive number of seconds"),
        ("MaxUpstreamBatchSize", "0", "must be a positive whole number"),
        ("UpstreamFanOutFactor", "-3", "must be a positive whole number"),
        ("MessageAckTimeoutSecs", "0", "must be a positive number of seconds"),
        ("MessageCleanupIntervalSecs", "inf", "must be a positive number of seconds"),
        ("maxMessageSizeBytes", "0", "must be between 1 and 268435455"),
        ("maxMessageSizeBytes", "300000000", "must be between 1 and 268435455"),
        ("MaxConnectedClients", "0", "must be a positive whole number"),
        ("IotHubHostName", "https://hub", "must be a host name"),
        ("EdgeHubHostName", "a b", "must be a host name"),
        ("GatewayHostName", "-parent", "must be a host name"),
        ("EdgeDeviceId", "edge/1", "must be 1 to 128"),
        ("EdgeDeviceId", "edge\n", "must be 1 to 128"),
        ("UpstreamCaFile", "/no/such/ca.pem", "no such file"),
        ("TrustBundleFile", "/no/such/bundle.pem", "no such file"),
    ],
)
def test_each_invalid_value_is_refused_naming_its_variable(variable: str, value: str, fragment: str) -> None:
    [(location, reason)] = problems_of({variable: value})

    assert location == variable
    assert fragment in reason
    assert repr(value) in reason


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "mqttSettings__port": "x",
            "amqpSettings__port": "99999",
            "storeBackend": "?",
            "MaxConnectedClients": "0",
        }
    )

    assert [location for location, _ in problems] == [
        "mqttSettings__port",
        "amqpSettings__port",
        "storeBackend",
        "MaxConnectedClients",
    ]


def test_a_problem_in_the_connection_string_does_not_hide_the_others() -> None:
    problems = problems_of({"EdgeHubConnectionString": "HostName=h", "mqttSettings__port": "x"})

    assert sorted(location for location, _ in problems) == ["EdgeHubConnectionString", "mqttSettings__port"]


def test_certificate_files_that_exist_are_accepted(tmp_path: Path) -> None:
    certificate, key, bundle = (tmp_path / name for name in ("server.pem", "server.key", "bundle.pem"))
    for path in (certificate, key, bundle):
        path.write_text("-----BEGIN-----\n")

    settings = load_settings(
        {
            "ServerCertificateFile": str(certificate),
            "ServerPrivateKeyFile": str(key),
            "TrustBundleFile": str(bundle),
            "UpstreamCaFile": str(bundle),
        }
    )

    assert (settings.server_certificate_file, settings.server_private_key_file) == (certificate, key)
    assert settings.trust_bundle_file == settings.upstream_ca_file == bundle


def test_a_directory_is_not_a_certificate_file(tmp_path: Path) -> None:
    [(location, reason)] = problems_of({"UpstreamCaFile": str(tmp_path)})

    assert location == "UpstreamCaFile"
    assert "not a regular file" in reason


def test_server_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    certificate = tmp_path / "server.pem"
    certificate.write_text("-----BEGIN-----\n")

    assert problems_of({"ServerCertificateFile": str(certificate)}) == [
        ("ServerPrivateKeyFile", "required when ServerCertificateFile is set")
    ]


def test_storage_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "store"
    a_file.write_text("")

    [(location, reason)] = problems_of({"StorageFolder": str(a_file)})

    assert location == "StorageFolder"
    assert "not a directory" in reason


def test_two_listeners_on_one_port_are_refused() -> None:
    assert problems_of({"amqpSettings__port": "8883"}) == [
        ("amqpSettings__port", "port 8883 is already used by mqttSettings__port")
    ]


def test_a_disabled_head_or_port_zero_never_clashes() -> None:
    settings = load_settings(
        {"mqttSettings__enabled": "false", "amqpSettings__port": "8883", "httpSettings__port": "0"}
    )

    assert settings.amqp.port == 8883
    assert settings.http.port == 0


def test_unknown_setting_inside_a_group_is_refused_listing_the_known_ones() -> None:
    [(location, reason)] = problems_of({"mqttSettings__prot": "1883"})

    assert location == "mqttSettings__prot"
    assert "unknown setting" in reason
    assert "mqttSettings__port" in reason


def test_a_group_name_set_alone_is_refused() -> None:
    [(location, reason)] = problems_of({"mqttSettings": '{"port": 1}'})

    assert location == "mqttSettings"
    assert "mqttSettings__port" in reason


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = load_settings({"PATH": "/usr/bin", "HOME": "/root", "Metrics__Enabled": "true"})

    assert settings == Settings()


def test_settings_are_frozen() -> None:
    settings = load_settings({})

    with pytest.raises(FrozenInstanceError):
        settings.metrics_port = 1  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        settings.mqtt.port = 1  # type: ignore[misc]


def test_constructing_settings_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("mqttSettings__port", "1999")

    assert Settings().mqtt.port == 8883


def test_none_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("mqttSettings__port", "1999")
    monkeypatch.setenv("RuntimeLogLevel", "warning")

    settings = load_settings()

    assert (settings.mqtt.port, settings.log_level) == (1999, LogLevel.WARNING)


DOCUMENTED_VARIABLES = [
    "mqttSettings__enabled",
    "amqpSettings__enabled",
    "httpSettings__enabled",
    "mqttSettings__port",
    "mqttSettings__plainPort",
    "mqttSettings__genericTopics",
    "mqttSettings__genericUpstreamTopic",
    "mqttSettings__allowAnonymous",
    "mqttSettings__maxQueuedMessagesPerSession",
    "amqpSettings__port",
    "httpSettings__port",
    "Metrics__Listener__Port",
    "OptimizeForPerformance",
    "StorageFolder",
    "storeBackend",
    "UpstreamProtocol",
    "EdgeHubConnectionString",
    "IotHubHostName",
    "EdgeDeviceId",
    "EdgeHubHostName",
    "GatewayHostName",
    "UpstreamTls",
    "UpstreamCaFile",
    "ServerCertificateFile",
    "ServerPrivateKeyFile",
    "TrustBundleFile",
    "ClientCertAuthEnabled",
    "MaxUpstreamBatchSize",
    "UpstreamFanOutFactor",
    "MessageAckTimeoutSecs",
    "MessageCleanupIntervalSecs",
    "storeSyncWrites",
    "storeRecovery",
    "maxMessageSizeBytes",
    "MaxConnectedClients",
    "RuntimeLogLevel",
    "UpstreamIdentityMode",
    "configSource",
    "DeviceScopeCacheRefreshRateSecs",
    "CloudConnectionIdleTimeoutSecs",
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_APIVERSION",
    "IOTEDGE_MODULEID",
    "IOTEDGE_MODULEGENERATIONID",
]


def test_describe_settings_documents_every_variable_once() -> None:
    rows = describe_settings()
    names = [name for name, _, _ in rows]

    assert sorted(names) == sorted(DOCUMENTED_VARIABLES)
    assert all(default and meaning for _, default, meaning in rows)


def test_describe_settings_shows_defaults_as_users_write_them() -> None:
    defaults = {name: default for name, default, _ in describe_settings()}

    assert defaults["mqttSettings__port"] == "8883"
    assert defaults["mqttSettings__enabled"] == "true"
    assert defaults["UpstreamProtocol"] == "Amqp"
    assert defaults["MessageAckTimeoutSecs"] == "30"
    assert defaults["EdgeHubConnectionString"] == "—"
    assert defaults["IotHubHostName"].startswith("HostName of EdgeHubConnectionString")


PLAIN_DEFAULTS = [
    (name, default) for name, default, _ in describe_settings() if default != "—" and " " not in default
]


@pytest.mark.parametrize(("name", "default"), PLAIN_DEFAULTS)
def test_every_documented_variable_is_accepted_under_its_documented_name(name: str, default: str) -> None:
    assert load_settings({name: default}) == Settings()

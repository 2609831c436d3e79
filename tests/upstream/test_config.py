"""Tests of the upstream link's config from environment settings, and of create_upstream."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from edgehub.message import Identity
from edgehub.settings import load_settings
from edgehub.testing.clock import FakeClock
from edgehub.upstream.config import SubscriptionScope, UpstreamConfig, UpstreamTransport, upstream_config
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.factory import connection_factory_for, create_upstream
from edgehub.upstream.mqtt import MqttUpstream
from edgehub.upstream.native import NativeMqttConnection

KEY = base64.b64encode(b"k" * 32).decode()
CONNECTION_STRING = f"HostName=myhub.azure-devices.net;DeviceId=edge1;ModuleId=$edgeHub;SharedAccessKey={KEY}"


def config_for(**environ: str) -> UpstreamConfig:
    environ.setdefault("EdgeHubConnectionString", CONNECTION_STRING)
    config = upstream_config(load_settings(environ))
    assert config is not None
    return config


def test_mqtt_connects_to_the_hub_over_tls_on_8883_as_the_connection_strings_identity() -> None:
    config = config_for(UpstreamProtocol="Mqtt")
    assert (config.host, config.port, config.transport, config.tls) == (
        "myhub.azure-devices.net", 8883, UpstreamTransport.TCP, True,
    )
    assert config.identity == Identity("edge1", "$edgeHub")
    assert config.credentials.username == "myhub.azure-devices.net/edge1/$edgeHub/?api-version=2018-06-30"
    assert config.url == "mqtts://myhub.azure-devices.net:8883"


def test_mqtt_ws_uses_wss_on_443_at_the_iothub_websocket_path() -> None:
    config = config_for(UpstreamProtocol="MqttWs")
    assert (config.port, config.transport, config.websocket_path) == (
        443, UpstreamTransport.WEBSOCKETS, "/$iothub/websocket",
    )
    assert config.url == "wss://myhub.azure-devices.net:443/$iothub/websocket"


def test_plaintext_upstream_uses_1883_or_80() -> None:
    assert config_for(UpstreamProtocol="Mqtt", UpstreamTls="false").port == 1883
    assert config_for(UpstreamProtocol="MqttWs", UpstreamTls="false").port == 80


def test_port_in_the_connection_strings_host_name_wins() -> None:
    config = config_for(
        EdgeHubConnectionString=f"HostName=127.0.0.1:18830;DeviceId=edge1;SharedAccessKey={KEY}",
        UpstreamProtocol="Mqtt",
    )
    assert (config.host, config.port) == ("127.0.0.1", 18830)
    assert config.credentials.username == "127.0.0.1/edge1/?api-version=2018-06-30"


def test_gateway_host_name_is_where_to_connect_but_the_identity_stays_the_hubs() -> None:
    config = config_for(UpstreamProtocol="Mqtt", GatewayHostName="parent.local")
    assert (config.host, config.port) == ("parent.local", 8883)
    assert config.credentials.username.startswith("myhub.azure-devices.net/edge1/$edgeHub/")
    assert isinstance(config.credentials, SasCredentials)
    assert config.credentials.resource == "myhub.azure-devices.net/devices/edge1/modules/$edgeHub"
    assert not config.is_iot_hub


def test_upstream_ca_file_and_limits_come_from_settings(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    config = config_for(
        UpstreamProtocol="Mqtt",
        UpstreamCaFile=str(ca_file),
        MaxUpstreamBatchSize="50",
        UpstreamFanOutFactor="4",
        MessageAckTimeoutSecs="12",
    )
    assert config.ca_file == ca_file
    assert (config.max_batch_size, config.fan_out, config.ack_timeout) == (50, 4, 12.0)
    assert config.max_in_flight_bytes == 4 * 262_144


def test_iot_hub_caps_messages_at_256_kib_other_parents_at_max_message_size() -> None:
    assert config_for(maxMessageSizeBytes="1000000").max_message_bytes == 262_144
    parent = config_for(GatewayHostName="parent.local", maxMessageSizeBytes="1000000")
    assert parent.max_message_bytes == 1_000_000


def test_invalid_link_values_are_refused() -> None:
    credentials = SasCredentials("hub", Identity("d"), KEY)
    with pytest.raises(ValueError, match="port must be 1-65535"):
        UpstreamConfig(credentials, "host", 0)
    with pytest.raises(ValueError, match="keepalive"):
        UpstreamConfig(credentials, "host", 1883, keepalive=0)


def test_subscription_scope_defaults_to_auto() -> None:
    assert config_for().subscription_scope is SubscriptionScope.AUTO


def test_without_a_connection_string_there_is_no_upstream_link() -> None:
    assert upstream_config(load_settings({})) is None
    assert create_upstream(load_settings({}), FakeClock()) is None


async def test_mqtt_settings_build_an_mqtt_link() -> None:
    settings = load_settings({"EdgeHubConnectionString": CONNECTION_STRING, "UpstreamProtocol": "Mqtt"})
    link = create_upstream(settings, FakeClock())
    assert isinstance(link, MqttUpstream)
    assert link.endpoint.name == "$upstream"
    assert link.endpoint.max_batch_size == 100


@pytest.mark.parametrize(("protocol", "transport", "port"), [
    ("Amqp", UpstreamTransport.TCP, 5671), ("AmqpWs", UpstreamTransport.WEBSOCKETS, 443),
])
async def test_amqp_protocols_get_the_amqp_link_on_their_default_port(
    protocol: str, transport: UpstreamTransport, port: int,
) -> None:
    from edgehub.upstream.amqp import AmqpUpstream

    settings = load_settings({"EdgeHubConnectionString": CONNECTION_STRING, "UpstreamProtocol": protocol,
                              "GatewayHostName": "parent.local"})
    link = create_upstream(settings, FakeClock())
    assert isinstance(link, AmqpUpstream)
    assert link.config.transport is transport
    assert link.config.port == port


def test_mqtt_and_mqtt_ws_both_use_the_native_client() -> None:
    assert connection_factory_for(UpstreamTransport.TCP) is NativeMqttConnection
    assert connection_factory_for(UpstreamTransport.WEBSOCKETS) is NativeMqttConnection

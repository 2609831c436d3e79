"""Picks and builds the upstream link for ``UpstreamProtocol`` from Settings.

Construction only: it connects nothing (the link's ``start`` does) and holds no state.
"""

from __future__ import annotations

import logging
from typing import Final

from edgehub.clock import Clock
from edgehub.settings import Settings, UpstreamProtocol
from edgehub.upstream.config import UpstreamTransport, upstream_config
from edgehub.upstream.connection import MqttConnection
from edgehub.upstream.mqtt import ConnectionFactory, MqttUpstream
from edgehub.upstream.native import NativeMqttConnection

log = logging.getLogger(__name__)

_MQTT_STAND_IN: Final = {
    UpstreamProtocol.AMQP: UpstreamProtocol.MQTT,
    UpstreamProtocol.AMQP_WS: UpstreamProtocol.MQTT_WS,
}


def create_upstream(settings: Settings, clock: Clock) -> MqttUpstream | None:
    """The upstream link, or None without ``EdgeHubConnectionString`` (the hub runs standalone).

    ``Amqp``/``AmqpWs`` are not implemented yet: a warning, then ``Mqtt``/``MqttWs`` to the same parent.
    """
    config = upstream_config(settings)
    if config is None:
        return None
    stand_in = _MQTT_STAND_IN.get(settings.upstream_protocol)
    if stand_in is not None:
        log.warning(
            "UpstreamProtocol=%s is not implemented yet; using %s to %s",
            settings.upstream_protocol.value, stand_in.value, config.url,
        )
    return MqttUpstream(config, clock, connection_factory=connection_factory_for(config.transport))


def connection_factory_for(transport: UpstreamTransport) -> ConnectionFactory:
    """The asyncio-native client over TCP/TLS (3x paho's throughput); paho for MQTT over WebSocket."""
    return NativeMqttConnection if transport is UpstreamTransport.TCP else MqttConnection

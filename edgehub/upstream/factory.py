"""Picks and builds the upstream link for ``UpstreamProtocol`` from Settings and, for MqttWs/AmqpWs, the
proxy environment (``https_proxy``, ``no_proxy``).

Construction only: it connects nothing (the link's ``start`` does) and holds no state.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Final

from edgehub.clock import Clock
from edgehub.errors import ConfigError
from edgehub.settings import Settings, UpstreamProtocol
from edgehub.upstream.config import UpstreamConfig, UpstreamTransport, upstream_config
from edgehub.upstream.mqtt import ConnectionFactory, MqttUpstream
from edgehub.upstream.native import NativeMqttConnection
from edgehub.upstream.proxy import bypasses_proxy, no_proxy_from_environment, proxy_from_environment

log = logging.getLogger(__name__)

_MQTT_STAND_IN: Final = {
    UpstreamProtocol.AMQP: UpstreamProtocol.MQTT,
    UpstreamProtocol.AMQP_WS: UpstreamProtocol.MQTT_WS,
}


def create_upstream(
    settings: Settings, clock: Clock, environ: Mapping[str, str] | None = None,
) -> MqttUpstream | None:
    """The upstream link, or None without ``EdgeHubConnectionString`` (the hub runs standalone).

    ``Amqp``/``AmqpWs`` are not implemented yet: a warning, then ``Mqtt``/``MqttWs`` to the same parent.
    A WebSocket link goes through the proxy of ``https_proxy`` (``environ``, default the process
    environment) unless ``no_proxy`` exempts the parent; a malformed proxy URL is a ConfigError.
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
    config = with_proxy(config, os.environ if environ is None else environ)
    return MqttUpstream(config, clock, connection_factory=connection_factory_for(config.transport))


def with_proxy(config: UpstreamConfig, environ: Mapping[str, str]) -> UpstreamConfig:
    """``config`` with the proxy a WebSocket link must use (edgeHub: MqttWs and AmqpWs only; Mqtt and
    Amqp connect directly), saying which and why in one log line."""
    if config.transport is not UpstreamTransport.WEBSOCKETS:
        return config
    try:
        proxy = proxy_from_environment(environ)
    except ValueError as exc:
        variable = str(exc).partition(":")[0]
        raise ConfigError([(variable, str(exc).partition(": ")[2])]) from None
    if proxy is None:
        return config
    if bypasses_proxy(no_proxy_from_environment(environ), config.host, config.port):
        log.info("upstream: %s is in no_proxy; connecting to %s directly, not through %s",
                 config.host, config.url, proxy.display)
        return config
    log.info("upstream: connecting to %s through the HTTPS proxy %s (%s)", config.url, proxy.display,
             proxy.variable)
    return dataclasses.replace(config, proxy=proxy)


def connection_factory_for(transport: UpstreamTransport) -> ConnectionFactory:
    """The asyncio-native client on the sans-I/O client session for every transport (over WebSocket too:
    it carried more than paho's client there, see bench/upstream_bench.py)."""
    return NativeMqttConnection

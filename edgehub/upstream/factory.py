"""Picks and builds the upstream link for ``UpstreamProtocol`` from Settings and, for MqttWs/AmqpWs, the
proxy environment (``https_proxy``, ``no_proxy``).

Construction only: it connects nothing (the link's ``start`` does) and holds no state.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from edgehub.clock import Clock
from edgehub.errors import ConfigError
from edgehub.settings import Settings, UpstreamProtocol
from edgehub.upstream.config import UpstreamConfig, UpstreamTransport, upstream_config
from edgehub.upstream.mqtt import ConnectionFactory, MqttUpstream
from edgehub.upstream.native import NativeMqttConnection
from edgehub.upstream.proxy import bypasses_proxy, no_proxy_from_environment, proxy_from_environment

if TYPE_CHECKING:  # proton is imported only when an AMQP upstream is configured
    from edgehub.upstream.amqp import AmqpUpstream

log = logging.getLogger(__name__)

_AMQP: Final = (UpstreamProtocol.AMQP, UpstreamProtocol.AMQP_WS)


def create_upstream(
    settings: Settings, clock: Clock, environ: Mapping[str, str] | None = None,
) -> MqttUpstream | AmqpUpstream | None:
    """The upstream link, or None without ``EdgeHubConnectionString`` (the hub runs standalone).

    ``Mqtt``/``MqttWs``: MqttUpstream; ``Amqp``/``AmqpWs``: AmqpUpstream (edgehub.upstream.amqp_factory;
    ``Amqp`` falls back to AMQP over WebSocket when its TLS port is unreachable). A WebSocket link goes
    through the proxy of ``https_proxy`` (``environ``, default the process environment) unless
    ``no_proxy`` exempts the parent; a malformed proxy URL is a ConfigError.
    """
    config = upstream_config(settings)
    if config is None:
        return None
    env = os.environ if environ is None else environ
    config = with_proxy(config, env)
    if settings.upstream_protocol in _AMQP:
        from edgehub.upstream.amqp_factory import create_amqp_upstream

        return create_amqp_upstream(settings, config, clock, lambda fallback: with_proxy(fallback, env))
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

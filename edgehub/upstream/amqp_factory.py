"""Builds the AMQP upstream link (``UpstreamProtocol`` Amqp, AmqpWs) from its config: the WebSocket fallback
of ``Amqp``, the proxy of ``AmqpWs``, and whose token authorizes each sender's link.

Construction only (imported only when an AMQP upstream is configured, so proton stays unloaded otherwise);
it connects nothing and holds no state beyond what the link keeps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from edgehub.clock import Clock
from edgehub.message import Identity
from edgehub.settings import Settings, UpstreamIdentityMode, UpstreamProtocol
from edgehub.upstream.amqp import AmqpUpstream
from edgehub.upstream.config import UpstreamConfig, UpstreamTransport
from edgehub.upstream.credentials import Credentials, IotHubLogin, SasCredentials
from edgehub.upstream.identity_links import KeyLookup, PresentedCredentials
from edgehub.upstream.presented import PresentedTokens

log = logging.getLogger(__name__)


def on_behalf(settings: Settings, config: UpstreamConfig) -> bool:
    """Whether the hub's own token authorizes every sender's link (UpstreamIdentityMode): toward a
    parent edge hub or broker in auto mode, as edgeHub's nested hubs act for their children; never
    toward an Azure IoT Hub host in auto mode (it authorizes each identity by its own token)."""
    mode = settings.upstream_identity_mode
    if mode is UpstreamIdentityMode.AUTO:
        return not config.is_iot_hub
    return mode is UpstreamIdentityMode.MULTIPLEXED


def create_amqp_upstream(
    settings: Settings, config: UpstreamConfig, clock: Clock,
    with_proxy: Callable[[UpstreamConfig], UpstreamConfig],
) -> AmqpUpstream:
    """The link for ``config`` (already carrying the proxy for AmqpWs). ``Amqp`` gets a fallback to
    AMQP over WebSocket on the same host's HTTPS port (443, 80 without TLS), through ``https_proxy``
    as ``AmqpWs`` would go (``with_proxy`` applies it)."""
    fallback = None
    if settings.upstream_protocol is UpstreamProtocol.AMQP:
        websocket = UpstreamTransport.WEBSOCKETS
        fallback = with_proxy(dataclasses.replace(
            config, transport=websocket, port=websocket.default_port(config.tls)))
    return AmqpUpstream(config, clock, on_behalf=on_behalf(settings, config), websocket_fallback=fallback)


class SenderCredentials:
    """Credentials of a sender in per-identity mode, as IdentityLinks finds them for MQTT: a token
    signed with its key in the local registry, else the token it presented itself while valid."""

    def __init__(self, base: UpstreamConfig, clock: Clock, keys: Callable[[], KeyLookup],
                 presented: PresentedTokens) -> None:
        credentials = base.credentials
        self._hub_hostname = credentials.hub_hostname if isinstance(credentials, IotHubLogin) else base.host
        self._clock = clock
        self._keys = keys
        self._presented = presented

    def __call__(self, identity: Identity) -> Credentials | None:
        key = self._keys()(identity)
        if key is not None:
            return SasCredentials(self._hub_hostname, identity, key)
        if self._presented.valid(identity, self._clock.time()) is not None:
            return PresentedCredentials(self._hub_hostname, identity, self._presented)
        return None

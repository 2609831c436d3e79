"""The upstream link in per-identity mode: the hub's own connection plus one per sending identity.

Composition only: it starts and stops the parts, and routes twin following to the right
connection; sending is PerIdentityEndpoint's and each connection's life MqttUpstream's.
"""

from __future__ import annotations

from edgehub.clock import Clock
from edgehub.endpoints.base import Endpoint
from edgehub.message import Identity
from edgehub.upstream.identity_links import IdentityLinks, PerIdentityEndpoint
from edgehub.upstream.mqtt import MqttUpstream
from edgehub.upstream.port import DownstreamPort


class PerIdentityUpstream:
    """Implements edgehub.plugins.UpstreamLink: ``own`` (the hub's ``$edgeHub`` connection) and
    ``links`` (the senders' connections), behind one ``$upstream`` endpoint."""

    def __init__(self, own: MqttUpstream, links: IdentityLinks, clock: Clock) -> None:
        self.own = own
        self.links = links
        self.config = own.config
        self.endpoint: Endpoint = PerIdentityEndpoint(
            links, own, clock, max_batch_size=own.config.max_batch_size)

    async def start(self, hub: DownstreamPort) -> None:
        await self.links.start(hub)
        await self.own.start(hub)

    async def stop(self) -> None:
        await self.links.stop()
        await self.own.stop()

    # --- local clients, for their connections' lives -------------------------------------------

    def client_connected(self, identity: Identity) -> None:
        """A local client connected: open its connection upstream (its cloud-to-device messages,
        twin and methods come on it), as edgeHub opens a cloud connection per connected client."""
        if identity != self.config.identity:
            self.links.follow(identity)

    def client_disconnected(self, identity: Identity) -> None:
        self.links.unfollow(identity)


class IdentityTwins:
    """The twin follower (edgehub.twins.gateway.UpstreamFollower) of per-identity mode: each
    identity's twin is read and written on its own connection."""

    def __init__(self, upstream: PerIdentityUpstream) -> None:
        self._upstream = upstream

    def may_follow(self, identity: Identity) -> bool:
        upstream = self._upstream
        return identity == upstream.config.identity or upstream.links.credentials(identity) is not None

    def follow(self, identity: Identity) -> None:
        if identity != self._upstream.config.identity:
            self._upstream.links.follow(identity)

    def reported_changed(self) -> None:
        own = self._upstream.own.twins
        if own is not None:
            own.reported_changed()
        for twins in self._upstream.links.twins():
            twins.reported_changed()

    async def refresh(self, identity: Identity) -> bool:
        upstream = self._upstream
        own = identity == upstream.config.identity
        twins = upstream.own.twins if own else upstream.links.follow(identity)
        return twins is not None and await twins.refresh(identity)

"""Which twin and method feeds one MQTT session subscribed to, and for whom it may use them.

Sans-I/O bookkeeping for MqttSession: topic filters in, feeds out; no packets, no I/O. A client
uses its own twin and methods; a child edge hub (``$edgeHub``) also those of the devices and
modules below it, in edgeHub's indirect dialect (edgehub.iothub.twin_topics).
"""

from __future__ import annotations

from edgehub.auth.authorize import acts_for_others
from edgehub.iothub.twin_topics import Feed, ServiceFeed, ServiceRequest, parse_feed
from edgehub.message import Identity


class ServiceSubscriptions:
    """The granted ``$iothub`` feeds of one session, by filter, with their targets resolved."""

    __slots__ = ("_feeds", "identity")

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._feeds: dict[str, tuple[Feed, Identity]] = {}

    def may_act_for(self, target: Identity | None) -> Identity | None:
        """The identity a twin or method topic stands for, when this session may use it: itself
        (no target), or, for a child edge hub, any identity below it (the parent trusts it for
        every sender, as for telemetry)."""
        if target is None or target == self.identity:
            return self.identity
        return target if acts_for_others(self.identity) else None

    def resolve(self, request: ServiceRequest) -> Identity | None:
        """Whom ``request`` is for, or None when this session may not make it."""
        return self.may_act_for(request.target)

    def grant(self, topic_filter: str) -> tuple[Feed, Identity] | None:
        """Record a subscription to a twin or method feed; None when the filter is none or not
        this session's to take."""
        parsed: ServiceFeed | None = parse_feed(topic_filter)
        if parsed is None:
            return None
        target = self.may_act_for(parsed.target)
        if target is None:
            return None
        entry = (parsed.feed, target)
        self._feeds[topic_filter] = entry
        return entry

    def remove(self, topic_filter: str) -> tuple[Feed, Identity] | None:
        return self._feeds.pop(topic_filter, None)

    def has(self, feed: Feed, target: Identity) -> bool:
        return (feed, target) in self._feeds.values()

    def entries(self) -> list[tuple[Feed, Identity]]:
        return list(self._feeds.values())

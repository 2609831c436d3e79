"""What the generic broker moves and keeps: a published message and a subscription's options.

Frozen, slotted values only (MQTT 5 §3.3 PUBLISH properties, §3.8.3.1 subscription options).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class BrokerMessage:
    """One application message on a plain MQTT topic.

    ``expires_at`` is wall-clock seconds (MQTT 5 Message Expiry Interval from its receipt;
    None: it does not expire); ``origin`` the client id that published it (no-local).
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    origin: str = ""
    expires_at: float | None = None
    payload_format: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def with_retain(self, retain: bool) -> BrokerMessage:
        return self if retain == self.retain else replace(self, retain=retain)


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """A granted subscription (MQTT 5 §3.8.3.1): maximum QoS, no-local, retain as published,
    retain handling (0 send at subscribe, 1 only if new, 2 never) and subscription identifier."""

    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int | None = None

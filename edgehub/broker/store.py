"""What the generic broker keeps durably, as values, and the port it keeps them through.

Values and a protocol only: the record bytes and the table are edgehub.heads.mqtt.broker_store's
and edgehub.store.broker_table's. Every broker operation hands over one BrokerChanges, written as
ONE atomic batch before the broker's caller acknowledges anything (docs/architecture.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from edgehub.broker.message import BrokerMessage, SubscriptionOptions


@dataclass(slots=True)
class QueuedEntry:
    """A QoS 1/2 message owed to one session: waiting, in flight (``packet_id``) or, for QoS 2,
    released (PUBREC received, PUBREL sent, PUBCOMP awaited)."""

    message: BrokerMessage
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    packet_id: int = 0
    released: bool = False


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A persistent session: subscriptions, expiry (``expires_at`` wall-clock seconds once parked;
    None while connected or when it never expires) and the QoS 2 packet ids received but not yet
    released [MQTT-4.3.3-...]: a resend after a reconnect must not publish twice."""

    client_id: str
    subscriptions: dict[str, SubscriptionOptions]
    expiry_interval: int
    expires_at: float | None
    inbound_qos2: tuple[int, ...] = ()


@dataclass(slots=True)
class BrokerChanges:
    """The durable effects of one broker operation, applied all or nothing."""

    retained_put: list[BrokerMessage] = field(default_factory=list)
    retained_delete: list[str] = field(default_factory=list)
    session_put: dict[str, SessionRecord] = field(default_factory=dict)
    session_delete: list[str] = field(default_factory=list)
    queue_put: list[tuple[str, int, QueuedEntry]] = field(default_factory=list)
    queue_delete: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.retained_put or self.retained_delete or self.session_put or self.session_delete
                    or self.queue_put or self.queue_delete)


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """Everything kept, read back at start."""

    retained: list[BrokerMessage]
    sessions: list[SessionRecord]
    queued: list[tuple[str, int, QueuedEntry]]


class BrokerStore(Protocol):
    def apply(self, changes: BrokerChanges) -> None:
        """Write ``changes`` in one atomic batch; raises edgehub.errors.StoreError."""
        ...

    def load(self) -> BrokerSnapshot:
        """Every retained message, persistent session and queued entry kept."""
        ...


class NoBrokerStore:
    """The null BrokerStore: the broker's state lives in memory and ends with the process."""

    def apply(self, changes: BrokerChanges) -> None:
        return None

    def load(self) -> BrokerSnapshot:
        return BrokerSnapshot([], [], [])

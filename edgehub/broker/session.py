"""One generic client's broker session: subscriptions, the bounded queue of QoS 1/2 messages
owed to it, QoS 2 receive state, and the link to its connection while it is online.

State and the queue policy only; matching and durability are the Broker's (edgehub.broker.core).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from edgehub.broker.message import BrokerMessage, SubscriptionOptions
from edgehub.broker.store import QueuedEntry, SessionRecord


class SessionLink(Protocol):
    """The connection of an online session (the MQTT head implements it)."""

    def send_now(self, message: BrokerMessage, retain: bool, subscription_ids: tuple[int, ...]) -> None:
        """Send a QoS 0 message at once (dropped if the connection cannot take it)."""
        ...

    def wake(self) -> None:
        """The session's queue has entries to send."""
        ...


@dataclass(frozen=True, slots=True)
class Dropped:
    """A queued entry given up for a newer one (the queue was full: oldest waiting first)."""

    client_id: str
    seq: int


class BrokerSession:
    """A session by client id. ``expiry_interval`` 0: it ends with its connection (clean).

    The queue holds every QoS 1/2 message owed, in delivery order (seq), sent or not; it is
    bounded by ``max_queued``: when full, the oldest entry not yet sent is dropped for the new
    one (a live stream keeps flowing, the backlog shrinks from its old end); when every entry is
    in flight the new one is dropped.
    """

    __slots__ = ("_waiting", "client_id", "expires_at", "expiry_interval", "inbound_qos2", "link",
                 "max_queued", "queue", "subscriptions")

    def __init__(self, client_id: str, expiry_interval: int, max_queued: int) -> None:
        self.client_id = client_id
        self.expiry_interval = expiry_interval
        self.max_queued = max_queued
        self.expires_at: float | None = None
        self.subscriptions: dict[str, SubscriptionOptions] = {}
        self.queue: dict[int, QueuedEntry] = {}
        self._waiting: deque[int] = deque()
        """Seqs of entries not sent yet, in order (may hold seqs removed since: skipped)."""
        self.inbound_qos2: set[int] = set()
        self.link: SessionLink | None = None

    @property
    def persistent(self) -> bool:
        return self.expiry_interval > 0

    @property
    def online(self) -> bool:
        return self.link is not None

    def record(self) -> SessionRecord:
        return SessionRecord(self.client_id, dict(self.subscriptions), self.expiry_interval,
                             None if self.online else self.expires_at, tuple(sorted(self.inbound_qos2)))

    def enqueue(self, seq: int, entry: QueuedEntry) -> tuple[bool, int | None]:
        """Add ``entry``; returns (kept, seq of the entry dropped for it or None)."""
        dropped = None
        if len(self.queue) >= self.max_queued:
            dropped = self._pop_waiting()
            if dropped is None:
                return False, None
            del self.queue[dropped]
        self.queue[seq] = entry
        self._waiting.append(seq)
        return True, dropped

    def next_waiting(self) -> tuple[int, QueuedEntry] | None:
        """The oldest entry not sent yet, taken off the waiting line (the caller sends it)."""
        seq = self._pop_waiting()
        return None if seq is None else (seq, self.queue[seq])

    def wait_again(self, seqs: list[int]) -> None:
        """Entries to send again as new PUBLISHes, ahead of the rest (in the order given)."""
        self._waiting.extendleft(reversed(seqs))

    def rebuild_waiting(self) -> None:
        """After a restore: every entry without a packet id waits, in seq order."""
        self._waiting = deque(sorted(seq for seq, entry in self.queue.items() if entry.packet_id == 0))

    def _pop_waiting(self) -> int | None:
        waiting, queue = self._waiting, self.queue
        while waiting:
            seq = waiting.popleft()
            entry = queue.get(seq)
            if entry is not None and entry.packet_id == 0:
                return seq
        return None

    def in_flight(self) -> list[tuple[int, QueuedEntry]]:
        """Entries sent but not acknowledged (a reconnect resends them, DUP set)."""
        return [(seq, entry) for seq, entry in self.queue.items() if entry.packet_id != 0]

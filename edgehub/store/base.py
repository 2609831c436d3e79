"""The Store protocol: what the hub, the pumps and the CLI need of a durable store.

Only types and the protocol live here; backends (rocksdb, sqlite, memory) live
beside it and only edgehub.hub chooses one. See docs/architecture.md §5 for the format.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from edgehub.message import DEFAULT_PRIORITY, Message, MessageId

__all__ = ["DEFAULT_PRIORITY", "Delivery", "DrainOrder", "IngestItem", "QueueKey", "QueueStats",
           "QueuedMessage", "Store", "StoreStats"]


class QueueKey(NamedTuple):
    """One queue: an endpoint at one priority (lower number = more urgent).

    A NamedTuple, not a frozen dataclass: it keys the store's per-queue dicts on every message,
    and a tuple hashes and compares in C where a dataclass runs its generated Python methods."""

    endpoint: str
    priority: int = DEFAULT_PRIORITY

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.priority}"


class DrainOrder(enum.Enum):
    """Which waiting messages of a queue go first (``storeAndForwardConfiguration.drainOrder``)."""

    FIFO = "fifo"
    """Oldest first, in ingest order (docs/architecture.md §1 invariant 4); edgeHub's only order."""
    NEWEST_FIRST = "newestFirst"
    """The newest waiting messages first, so live data overtakes a backlog (edgeHub #2486)."""


@dataclass(slots=True, init=False)
class Delivery:
    """Where a routed message must go: a queue, and when it expires there (epoch ms)."""

    queue: QueueKey
    expiry_ms: int

    # Hand-written __init__ (not a frozen dataclass): built once per message on the hot path, where the
    # generated frozen __init__ costs a setattr call per field (docs/performance.md).
    def __init__(self, queue: QueueKey, expiry_ms: int) -> None:
        self.queue = queue
        self.expiry_ms = expiry_ms


@dataclass(slots=True, init=False)
class IngestItem:
    """A message with its deliveries; appended in one atomic write batch.

    An item without deliveries is not stored (no route matched).
    """

    message: Message
    deliveries: tuple[Delivery, ...]

    # Hand-written __init__, not frozen: built per message (see the first class of this module).
    def __init__(self, message: Message, deliveries: tuple[Delivery, ...]) -> None:
        self.message = message
        self.deliveries = deliveries


@dataclass(slots=True, init=False)
class QueuedMessage:
    """A message as read from one queue."""

    id: MessageId
    queue: QueueKey
    expiry_ms: int
    message: Message

    # Hand-written __init__, not frozen: built per message (see the first class of this module).
    def __init__(self, id: MessageId, queue: QueueKey, expiry_ms: int, message: Message) -> None:
        self.id = id
        self.queue = queue
        self.expiry_ms = expiry_ms
        self.message = message


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: QueueKey
    length: int
    oldest_enqueued_ms: int | None
    bytes: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    queues: tuple[QueueStats, ...]
    size_bytes: int
    message_count: int


class Store(Protocol):
    """A durable store of messages and per-queue refs.

    Methods are synchronous; ``append`` may be called from one worker thread
    while the event loop thread reads and checkpoints, so implementations
    guard their in-memory state. The async group-commit front is
    ``edgehub.store.group_commit.GroupCommitter``.
    """

    def append(self, items: Sequence[IngestItem]) -> list[MessageId]:
        """Store every item in ONE atomic write batch (body, refs, expiry index).

        Returns the ids in order (items without deliveries get -1, nothing
        stored). Raises StoreFullError, writing nothing, when the batch would
        take the store over its size limit.
        """
        ...

    def read(self, queue: QueueKey, after: MessageId, limit: int, now_ms: int) -> list[QueuedMessage]:
        """Up to ``limit`` messages of ``queue`` with id > ``after``, in id order,
        skipping every one whose expiry is <= ``now_ms`` and every checkpointed one."""
        ...

    def read_newest(
        self, queue: QueueKey, above: MessageId, below: MessageId | None, limit: int, now_ms: int,
    ) -> list[QueuedMessage]:
        """Up to ``limit`` waiting messages of ``queue`` with ``above < id < below`` (None: no
        bound): the newest of them, in id order; skips expired and delivered ones."""
        ...

    def checkpoint(self, queue: QueueKey, upto: MessageId) -> None:
        """Mark every message of ``queue`` with id <= ``upto`` delivered; reclaim
        the bodies no other queue still needs, all in one write batch."""
        ...

    def mark_delivered(self, queue: QueueKey, ids: Sequence[MessageId]) -> None:
        """Mark exactly the messages ``ids`` of ``queue`` delivered, wherever they sit in it
        (newest first); reclaim the bodies no other queue still needs, in one write batch."""
        ...

    def expire(self, now_ms: int) -> dict[QueueKey, int]:
        """Remove every ref whose expiry is <= ``now_ms`` and reclaim bodies; costs
        O(expired). Returns how many undelivered refs were dropped per queue."""
        ...

    def queues(self) -> list[QueueKey]:
        """Every queue that holds or held messages, sorted."""
        ...

    def queue_lengths(self) -> dict[QueueKey, int]:
        """Refs waiting per queue, from memory: cheap enough for metrics on every cleanup run."""
        ...

    def stats(self) -> StoreStats:
        """Per-queue length, oldest message and bytes; walks every ref (for ``edgehub stats``)."""
        ...

    def size_bytes(self) -> int:
        """Bytes the store counts against ``storeLimits.maxSizeBytes``."""
        ...

    def get_twin(self, key: str) -> bytes | None:
        """The twin record under ``key`` (an identity id; edgehub.twins owns the bytes), or None."""
        ...

    def put_twin(self, key: str, value: bytes) -> None:
        """Store one twin record in ONE atomic write (fsynced when sync writes are on)."""
        ...

    def delete_twin(self, key: str) -> None:
        """Remove the twin record under ``key``; no-op when absent."""
        ...

    def twin_keys(self) -> list[str]:
        """Every key holding a twin record, sorted."""
        ...

    def get_session(self, key: str) -> bytes | None:
        """The persistent MQTT session record under ``key`` (a client id; the MQTT head owns
        the bytes), or None."""
        ...

    def put_session(self, key: str, value: bytes) -> None:
        """Store one session record in ONE atomic write (fsynced when sync writes are on)."""
        ...

    def delete_session(self, key: str) -> None:
        """Remove the session record under ``key``; no-op when absent."""
        ...

    def session_keys(self) -> list[str]:
        """Every key holding a session record, sorted."""
        ...

    def close(self) -> None:
        """Flush and close; idempotent."""
        ...

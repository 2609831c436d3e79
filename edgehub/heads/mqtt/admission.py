"""Admission of connections that have not sent an accepted CONNECT yet (TLS handshake included).

Owns the pre-CONNECT slots: how many a source address and the server may hold, whom to evict,
whose deadline passed. No sockets or asyncio here: the glue passes ``now`` and an abort callable.

The rule (issue 15, docs/architecture.md §1 invariant 6): a newcomer is always admitted. When its
source already holds ``per_source`` slots, that source's oldest slot goes; when the server holds
``total``, the oldest slot of the source holding the most goes. So idle sockets from one address
(or many) can never lock a fresh client out, and a flood from one address churns only its own
slots. Every slot ends at ``deadline`` seconds unless its CONNECT was accepted first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any


class Slot:
    """One pre-CONNECT connection: its source key, when it was accepted, how to drop it."""

    __slots__ = ("abort", "opened", "source")

    def __init__(self, source: str, opened: float, abort: Callable[[], None]) -> None:
        self.source = source
        self.opened = opened
        self.abort = abort


class Admission:
    """The pre-CONNECT slots of one server, grouped by source (IPv4 address or IPv6 /64)."""

    def __init__(self, total: int, per_source: int, deadline: float) -> None:
        if total < 1 or per_source < 1 or deadline <= 0:
            raise ValueError("admission limits must be positive")
        self.total = total
        self.per_source = per_source
        self.deadline = deadline
        self._by_source: dict[str, dict[Slot, None]] = {}  # insertion order = age
        self._count = 0
        self.evicted = 0
        """Slots dropped to make room (a counter for tests and the log)."""

    def __len__(self) -> int:
        return self._count

    def admit(self, peer: Any, now: float, abort: Callable[[], None]) -> tuple[Slot, Slot | None]:
        """A slot for a connection from ``peer`` (a socket address or None); and the slot evicted
        for it, if any, already released (the caller aborts its connection)."""
        source = source_key(peer)
        held = self._by_source.get(source)
        victim: Slot | None = None
        if held is not None and len(held) >= self.per_source:
            victim = next(iter(held))
        elif self._count >= self.total:
            victim = self._oldest_of_largest()
        if victim is not None:
            self.release(victim)
            self.evicted += 1
        slot = Slot(source, now, abort)
        self._by_source.setdefault(source, {})[slot] = None
        self._count += 1
        return slot, victim

    def release(self, slot: Slot) -> None:
        """The connection sent an accepted CONNECT or closed; releasing twice is harmless."""
        held = self._by_source.get(slot.source)
        if held is None or slot not in held:
            return
        del held[slot]
        self._count -= 1
        if not held:
            del self._by_source[slot.source]

    def expire(self, now: float) -> list[Slot]:
        """Release and return every slot older than ``deadline`` (the caller aborts them)."""
        expired = [
            slot for held in self._by_source.values() for slot in held if now - slot.opened >= self.deadline
        ]
        for slot in expired:
            self.release(slot)
        return expired

    def drain(self) -> list[Slot]:
        """Release and return every slot (the server is closing)."""
        slots = [slot for held in self._by_source.values() for slot in held]
        self._by_source.clear()
        self._count = 0
        return slots

    def _oldest_of_largest(self) -> Slot:
        largest = max(self._by_source.values(), key=lambda held: (len(held), -next(iter(held)).opened))
        return next(iter(largest))


def source_key(peer: Any) -> str:
    """The address a connection counts against: the IPv4 address, the /64 of an IPv6 one (one
    host usually holds a whole /64), or "" when the transport has no IP peer."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return ""
    try:
        address = ipaddress.ip_address(peer[0].partition("%")[0])
    except ValueError:
        return peer[0]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)

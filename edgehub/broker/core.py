"""The generic broker: sessions by client id, the subscription trie, shared groups, retained
messages and pending wills; publish fans a message out to the matching sessions.

Sans-I/O and protocol-free: time comes in as ``now`` (wall-clock seconds), connections are
SessionLinks, and every durable effect of an operation is one BrokerChanges handed to the
BrokerStore before the call returns (so the MQTT head acks only after it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

from edgehub.broker.message import BrokerMessage, SubscriptionOptions
from edgehub.broker.session import BrokerSession, SessionLink
from edgehub.broker.store import BrokerChanges, BrokerStore, NoBrokerStore, QueuedEntry
from edgehub.broker.topics import filter_matches, parse_shared
from edgehub.broker.trie import SubscriptionTrie
from edgehub.errors import StoreError
from edgehub.logs import RateLimitedLine

log = logging.getLogger(__name__)
_write_failed_line = RateLimitedLine(log, logging.WARNING)

NEVER_EXPIRES = 0xFFFFFFFF
"""MQTT 5 §3.1.2.11.2: Session Expiry Interval 0xFFFFFFFF, the session does not expire."""

_SubKey = tuple[str, str]
"""(client id, share group or "")."""


@dataclass(frozen=True, slots=True)
class _Subscribed:
    topic_filter: str
    options: SubscriptionOptions


class Broker:
    """Generic pub/sub between local clients (MQTT 3.1.1 §4.7 / MQTT 5 §4.7, §4.8).

    Overlapping subscriptions of one client get the message once, at the highest granted QoS,
    with every matching subscription identifier (MQTT 5 §3.3.4 allows this one-copy form).
    A shared group delivers each message to one member, online members first, in turn.
    """

    def __init__(self, *, max_queued: int = 1000, store: BrokerStore | None = None) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.max_queued = max_queued
        self._store: BrokerStore = store or NoBrokerStore()
        self._sessions: dict[str, BrokerSession] = {}
        self._trie: SubscriptionTrie[_SubKey, _Subscribed] = SubscriptionTrie()
        self._retained: dict[str, BrokerMessage] = {}
        self._wills: dict[str, tuple[float, BrokerMessage]] = {}
        self._turns: dict[tuple[str, str], int] = {}
        self._seq = 0
        self.dropped = 0
        """Queued messages given up because a session's queue was full."""

    # --- start --------------------------------------------------------------------------------

    def restore(self, now: float) -> int:
        """Read the store back (at start, before any client): retained messages, persistent
        sessions parked with their expiry, their queues. Returns how many sessions came back."""
        snapshot = self._store.load()
        for message in snapshot.retained:
            if not message.expired(now):
                self._retained[message.topic] = message
        for record in snapshot.sessions:
            session = BrokerSession(record.client_id, record.expiry_interval, self.max_queued)
            session.subscriptions = dict(record.subscriptions)
            session.inbound_qos2 = set(record.inbound_qos2)
            # Connected when the hub stopped without closing it (kill -9): its expiry runs from now.
            session.expires_at = record.expires_at if record.expires_at is not None else (
                None if record.expiry_interval == NEVER_EXPIRES else now + record.expiry_interval)
            self._sessions[record.client_id] = session
            for topic_filter, options in session.subscriptions.items():
                self._index(session.client_id, topic_filter, options)
        for client_id, seq, entry in sorted(snapshot.queued, key=lambda q: q[1]):
            self._seq = max(self._seq, seq)
            owner = self._sessions.get(client_id)
            if owner is not None:
                owner.queue[seq] = entry
        for session in self._sessions.values():
            session.rebuild_waiting()
        return len(snapshot.sessions)

    # --- sessions -----------------------------------------------------------------------------

    def session(self, client_id: str) -> BrokerSession | None:
        return self._sessions.get(client_id)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def connect(self, client_id: str, *, resume: bool, expiry_interval: int, link: SessionLink,
                now: float) -> tuple[BrokerSession, bool]:
        """Attach ``link`` to the session of ``client_id``: resumed when ``resume`` and one exists
        [MQTT-3.1.2-5], else a new one (Clean Start discards the old [MQTT-3.1.2-4]). A will
        waiting for its delay is cancelled (MQTT 5 §3.1.3.2.2). Returns (session, resumed)."""
        changes = BrokerChanges()
        self._wills.pop(client_id, None)
        session = self._sessions.get(client_id)
        resumed = resume and session is not None
        if session is None or not resume:
            if session is not None:
                self._discard(session, changes)
            session = BrokerSession(client_id, expiry_interval, self.max_queued)
            self._sessions[client_id] = session
        elif session.expiry_interval and not expiry_interval:
            changes.session_delete.append(client_id)  # no longer persistent: its records go
            changes.queue_delete.extend((client_id, seq) for seq in session.queue)
        session.expiry_interval = expiry_interval
        session.expires_at = None
        session.link = link
        if session.persistent:
            changes.session_put[client_id] = session.record()
        self._apply(changes)
        return session, resumed

    def disconnect(self, session: BrokerSession, link: SessionLink, now: float, *,
                   will: BrokerMessage | None = None, will_delay: int = 0,
                   expiry_interval: int | None = None) -> None:
        """The connection ``link`` of ``session`` ended. A clean session ends with it; a persistent
        one is parked until its expiry. ``will`` (already authorized) is published now or after
        ``will_delay`` seconds, at the latest when the session ends [MQTT-3.1.3-9]."""
        if self._sessions.get(session.client_id) is not session or session.link is not link:
            # Taken over by a newer connection [MQTT-3.1.4-3]: that one owns the session now.
            if will is not None and will_delay <= 0:
                self.publish(will, now)
            return
        changes = BrokerChanges()
        session.link = None
        if expiry_interval is not None:
            session.expiry_interval = expiry_interval
        if session.persistent:
            session.expires_at = None if session.expiry_interval == NEVER_EXPIRES else (
                now + session.expiry_interval)
            changes.session_put[session.client_id] = session.record()
        else:
            self._discard(session, changes)
        self._apply(changes)
        if will is not None:
            delay = min(will_delay, session.expiry_interval)
            if delay <= 0:
                self.publish(will, now)
            else:
                self._wills[session.client_id] = (now + delay, will)

    def expire(self, now: float) -> None:
        """Publish wills whose delay ran out; end parked sessions whose expiry ran out."""
        for client_id, (due, will) in list(self._wills.items()):
            if due <= now:
                del self._wills[client_id]
                self.publish(will, now)
        changes = BrokerChanges()
        for session in list(self._sessions.values()):
            if session.online:
                continue
            if session.expires_at is not None and session.expires_at <= now:
                pending = self._wills.pop(session.client_id, None)
                if pending is not None:
                    self.publish(pending[1], now)  # the session ends: its will is due [MQTT-3.1.3-9]
                self._discard(session, changes)
                continue
            for seq, entry in list(session.queue.items()):
                if entry.packet_id == 0 and entry.message.expired(now):
                    del session.queue[seq]
                    changes.queue_delete.append((session.client_id, seq))
        self._apply(changes)

    def _discard(self, session: BrokerSession, changes: BrokerChanges) -> None:
        for topic_filter in session.subscriptions:
            self._unindex(session.client_id, topic_filter)
        if session.persistent or session.queue:
            changes.session_delete.append(session.client_id)
            changes.queue_delete.extend((session.client_id, seq) for seq in session.queue)
        session.queue.clear()
        session.subscriptions.clear()
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(self, session: BrokerSession, topic_filter: str, options: SubscriptionOptions,
                  now: float) -> None:
        """Add or replace a subscription (MQTT 5 §3.8.4: the new options replace the old), then
        send the retained messages it matches as retain handling says."""
        existed = topic_filter in session.subscriptions
        if existed:
            self._unindex(session.client_id, topic_filter)
        session.subscriptions[topic_filter] = options
        self._index(session.client_id, topic_filter, options)
        changes = BrokerChanges()
        if session.persistent:
            changes.session_put[session.client_id] = session.record()
        shared = parse_shared(topic_filter) is not None
        # [MQTT-3.8.4-4..] retained messages on subscribe: 0 always, 1 only for a new
        # subscription, 2 never; never for a shared subscription (MQTT 5 §4.8.2).
        if not shared and (options.retain_handling == 0 or (options.retain_handling == 1 and not existed)):
            ids = (options.subscription_id,) if options.subscription_id is not None else ()
            for message in self.retained_matching(topic_filter, now):
                self._deliver(session, message, min(message.qos, options.qos), True, ids, changes)
        self._apply(changes)

    def unsubscribe(self, session: BrokerSession, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self._unindex(session.client_id, topic_filter)
        if session.persistent:
            changes = BrokerChanges()
            changes.session_put[session.client_id] = session.record()
            self._apply(changes)
        return True

    def _index(self, client_id: str, topic_filter: str, options: SubscriptionOptions) -> None:
        shared = parse_shared(topic_filter)
        if shared is None:
            self._trie.add(topic_filter, (client_id, ""), _Subscribed(topic_filter, options))
        else:
            self._trie.add(shared.topic_filter, (client_id, shared.group), _Subscribed(topic_filter, options))

    def _unindex(self, client_id: str, topic_filter: str) -> None:
        shared = parse_shared(topic_filter)
        if shared is None:
            self._trie.remove(topic_filter, (client_id, ""))
        else:
            self._trie.remove(shared.topic_filter, (client_id, shared.group))

    # --- retained -----------------------------------------------------------------------------

    def retained_matching(self, topic_filter: str, now: float) -> list[BrokerMessage]:
        return [m for t, m in sorted(self._retained.items())
                if filter_matches(topic_filter, t) and not m.expired(now)]

    @property
    def retained_count(self) -> int:
        return len(self._retained)

    # --- publish ------------------------------------------------------------------------------

    def publish(self, message: BrokerMessage, now: float, *, strict: bool = False) -> int:
        """Fan ``message`` out; a retained one also replaces (an empty payload: clears) the
        topic's retained message [MQTT-3.3.1-5..7]. Returns how many sessions it went to.

        ``strict``: a store write that fails raises edgehub.errors.StoreError (the publisher is
        then refused, not acked; online subscribers may have it already). Otherwise it is logged
        and the state lives on in memory (wills, retained messages of a will)."""
        changes = BrokerChanges()
        if message.retain:
            if message.payload:
                self._retained[message.topic] = message
                changes.retained_put.append(message)
            elif self._retained.pop(message.topic, None) is not None:
                changes.retained_delete.append(message.topic)
        targets = self._targets(message)
        for client_id, (qos, retain, ids) in targets.items():
            session = self._sessions.get(client_id)
            if session is not None:
                granted = min(message.qos, qos)
                self._deliver(session, message, granted, retain and message.retain, ids, changes)
        self._apply(changes, strict=strict)
        return len(targets)

    def _targets(self, message: BrokerMessage) -> dict[str, tuple[int, bool, tuple[int, ...]]]:
        """client id → (highest granted QoS, retain as published, subscription ids)."""
        targets: dict[str, tuple[int, bool, tuple[int, ...]]] = {}
        groups: dict[tuple[str, str], list[tuple[str, SubscriptionOptions]]] = {}
        origin = message.origin
        for (client_id, group), subscribed in self._trie.match(message.topic):
            options = subscribed.options
            if group:
                groups.setdefault((group, subscribed.topic_filter), []).append((client_id, options))
                continue
            if options.no_local and client_id == origin:
                continue  # [MQTT-3.8.3-3]
            self._merge(targets, client_id, options)
        for key, members in groups.items():
            chosen = self._pick(key, members)
            if chosen is not None:
                self._merge(targets, chosen[0], chosen[1])
        return targets

    @staticmethod
    def _merge(targets: dict[str, tuple[int, bool, tuple[int, ...]]], client_id: str,
               options: SubscriptionOptions) -> None:
        ids = (options.subscription_id,) if options.subscription_id is not None else ()
        current = targets.get(client_id)
        if current is None:
            targets[client_id] = (options.qos, options.retain_as_published, ids)
        else:
            targets[client_id] = (max(current[0], options.qos), current[1] or options.retain_as_published,
                                  current[2] + ids)

    def _pick(self, key: tuple[str, str], members: list[tuple[str, SubscriptionOptions]]
              ) -> tuple[str, SubscriptionOptions] | None:
        members.sort(key=lambda m: m[0])
        sessions = self._sessions
        online = [m for m in members if (s := sessions.get(m[0])) is not None and s.online]
        candidates = online or members
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        if len(self._turns) > 4096:
            self._turns.clear()
        return candidates[turn % len(candidates)] if candidates else None

    def _deliver(self, session: BrokerSession, message: BrokerMessage, qos: int, retain: bool,
                 ids: tuple[int, ...], changes: BrokerChanges) -> None:
        link = session.link
        if qos == 0:
            if link is not None:
                link.send_now(message, retain, ids)
            return  # QoS 0 is not queued for an offline session (MQTT 5 §4.1: it may be; we do not)
        self._seq += 1
        seq = self._seq
        entry = QueuedEntry(message, qos, retain, ids)
        kept, dropped = session.enqueue(seq, entry)
        if dropped is not None or not kept:
            self.dropped += 1
            if dropped is not None and session.persistent:
                changes.queue_delete.append((session.client_id, dropped))
        if kept and session.persistent:
            changes.queue_put.append((session.client_id, seq, entry))
        if link is not None and kept:
            link.wake()

    # --- acknowledgements of the online session -------------------------------------------------

    def sent(self, session: BrokerSession, sent: Iterable[tuple[int, QueuedEntry]]) -> None:
        """Entries just given packet ids: kept so a reconnect, even after a restart, resends
        them with the same id and DUP set [MQTT-4.4.0-1]."""
        if session.persistent:
            changes = BrokerChanges()
            changes.queue_put.extend((session.client_id, seq, entry) for seq, entry in sent)
            self._apply(changes)

    def acknowledged(self, session: BrokerSession, seq: int) -> None:
        """PUBACK (QoS 1) or PUBCOMP (QoS 2): the entry is done."""
        if session.queue.pop(seq, None) is not None and session.persistent:
            changes = BrokerChanges()
            changes.queue_delete.append((session.client_id, seq))
            self._apply(changes)

    def released(self, session: BrokerSession, seq: int) -> None:
        """PUBREC received and PUBREL sent: only PUBCOMP is awaited now (resent as PUBREL)."""
        entry = session.queue.get(seq)
        if entry is None:
            return
        entry.released = True
        if session.persistent:
            changes = BrokerChanges()
            changes.queue_put.append((session.client_id, seq, entry))
            self._apply(changes)

    def qos2_received(self, session: BrokerSession, packet_id: int, *, pending: bool) -> None:
        """Track an inbound QoS 2 packet id from PUBLISH (pending) to PUBREL (done)."""
        if pending:
            session.inbound_qos2.add(packet_id)
        else:
            session.inbound_qos2.discard(packet_id)
        if session.persistent:
            changes = BrokerChanges()
            changes.session_put[session.client_id] = session.record()
            self._apply(changes)

    def _apply(self, changes: BrokerChanges, *, strict: bool = False) -> None:
        if not changes:
            return
        try:
            self._store.apply(changes)
        except StoreError as exc:
            if strict:
                raise
            _write_failed_line("MQTT broker state not kept in the store (it stays in memory): %s", exc)


def with_expiry(message: BrokerMessage, interval: int | None, now: float) -> BrokerMessage:
    """``message`` with a Message Expiry Interval counted from ``now`` (None: no expiry)."""
    return message if interval is None else replace(message, expires_at=now + interval)

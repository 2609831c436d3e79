"""The generic broker's BrokerStore over the hub's store: record bytes for retained messages,
persistent sessions and queued entries, written through the store's broker table.

Encoding only (JSON metadata, then the raw payload); keys, batches and fsync are
edgehub.store.broker_table's. A record this hub cannot read is logged and skipped at start.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from collections.abc import Iterable
from typing import Any, Final, Protocol

from edgehub.broker.message import BrokerMessage, SubscriptionOptions
from edgehub.broker.store import BrokerChanges, BrokerSnapshot, QueuedEntry, SessionRecord

log = logging.getLogger(__name__)

RECORD_VERSION: Final = 1
_LENGTH: Final = struct.Struct(">I")


class BrokerRecords(Protocol):
    """The store's broker table (edgehub.store.broker_table.BrokerTable)."""

    def write(
        self, *, retained_put: Iterable[tuple[str, bytes]] = (), retained_delete: Iterable[str] = (),
        session_put: Iterable[tuple[str, bytes]] = (), session_delete: Iterable[str] = (),
        queue_put: Iterable[tuple[str, int, bytes]] = (), queue_delete: Iterable[tuple[str, int]] = (),
    ) -> None: ...

    def retained(self) -> list[tuple[str, bytes]]: ...

    def sessions(self) -> list[tuple[str, bytes]]: ...

    def queued(self) -> list[tuple[str, int, bytes]]: ...


class DurableBrokerStore:
    """BrokerStore over the store's broker table; a write that fails raises StoreError (store
    full included) for the broker to refuse the publish or log it."""

    def __init__(self, records: BrokerRecords) -> None:
        self._records = records

    def apply(self, changes: BrokerChanges) -> None:
        self._records.write(
            retained_put=[(m.topic, encode_message(m, {})) for m in changes.retained_put],
            retained_delete=changes.retained_delete,
            session_put=[(c, encode_session(r)) for c, r in changes.session_put.items()],
            session_delete=changes.session_delete,
            queue_put=[(c, seq, encode_entry(e)) for c, seq, e in changes.queue_put],
            queue_delete=changes.queue_delete,
        )

    def load(self) -> BrokerSnapshot:
        retained: list[BrokerMessage] = []
        sessions: list[SessionRecord] = []
        queued: list[tuple[str, int, QueuedEntry]] = []
        for topic, data in self._records.retained():
            try:
                retained.append(decode_message(data)[0])
            except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
                log.warning("retained message on %r unreadable, skipped: %s", topic, exc)
        for client_id, data in self._records.sessions():
            try:
                sessions.append(decode_session(client_id, data))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("MQTT broker session of %r unreadable, not restored: %s", client_id, exc)
        for client_id, seq, data in self._records.queued():
            try:
                queued.append((client_id, seq, decode_entry(data)))
            except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
                log.warning("queued message %d of %r unreadable, skipped: %s", seq, client_id, exc)
        return BrokerSnapshot(retained, sessions, queued)


def encode_message(message: BrokerMessage, extra: dict[str, Any]) -> bytes:
    meta: dict[str, Any] = {"v": RECORD_VERSION, "t": message.topic, "q": message.qos, "r": message.retain,
                            "o": message.origin, **extra}
    if message.expires_at is not None:
        meta["x"] = message.expires_at
    if message.payload_format is not None:
        meta["pf"] = message.payload_format
    if message.content_type is not None:
        meta["ct"] = message.content_type
    if message.response_topic is not None:
        meta["rt"] = message.response_topic
    if message.correlation_data is not None:
        meta["cd"] = base64.b64encode(message.correlation_data).decode()
    if message.user_properties:
        meta["up"] = [list(pair) for pair in message.user_properties]
    head = json.dumps(meta, separators=(",", ":")).encode()
    return _LENGTH.pack(len(head)) + head + message.payload


def decode_message(data: bytes) -> tuple[BrokerMessage, dict[str, Any]]:
    (length,) = _LENGTH.unpack_from(data)
    meta = json.loads(data[4:4 + length])
    if meta["v"] != RECORD_VERSION:
        raise ValueError(f"unknown record version {meta['v']!r}")
    correlation = meta.get("cd")
    message = BrokerMessage(
        meta["t"], data[4 + length:], int(meta["q"]), bool(meta["r"]), meta["o"], meta.get("x"),
        meta.get("pf"), meta.get("ct"), meta.get("rt"),
        None if correlation is None else base64.b64decode(correlation),
        tuple((str(k), str(v)) for k, v in meta.get("up", ())),
    )
    return message, meta


def encode_entry(entry: QueuedEntry) -> bytes:
    extra = {"eq": entry.qos, "er": entry.retain, "es": list(entry.subscription_ids), "ep": entry.packet_id,
             "el": entry.released}
    return encode_message(entry.message, extra)


def decode_entry(data: bytes) -> QueuedEntry:
    message, meta = decode_message(data)
    qos = int(meta["eq"])
    if qos not in (1, 2):
        raise ValueError(f"queued QoS {qos}")
    return QueuedEntry(message, qos, bool(meta["er"]), tuple(int(i) for i in meta["es"]), int(meta["ep"]),
                       bool(meta["el"]))


def encode_session(record: SessionRecord) -> bytes:
    return json.dumps({
        "v": RECORD_VERSION,
        "subscriptions": {f: [o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.subscription_id]
                          for f, o in record.subscriptions.items()},
        "expiryInterval": record.expiry_interval,
        "expiresAt": record.expires_at,
        "inboundQos2": list(record.inbound_qos2),
    }, separators=(",", ":"), sort_keys=True).encode()


def decode_session(client_id: str, data: bytes) -> SessionRecord:
    raw = json.loads(data)
    if raw["v"] != RECORD_VERSION:
        raise ValueError(f"unknown record version {raw['v']!r}")
    subscriptions = {
        str(f): SubscriptionOptions(int(o[0]), bool(o[1]), bool(o[2]), int(o[3]),
                                    None if o[4] is None else int(o[4]))
        for f, o in raw["subscriptions"].items()
    }
    interval = raw["expiryInterval"]
    if type(interval) is not int or interval <= 0:
        raise ValueError(f"expiry interval {interval!r}")
    expires_at = raw["expiresAt"]
    deadline = None if expires_at is None else float(expires_at)
    inbound = tuple(int(i) for i in raw["inboundQos2"])
    return SessionRecord(client_id, subscriptions, interval, deadline, inbound)



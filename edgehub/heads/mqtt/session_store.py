"""Persistent MQTT sessions in the hub's store: the record kept per client id and the
SessionStore that writes it (the port is edgehub.heads.mqtt.sessions.SessionStore).

Owns the record's JSON layout and the wall-time expiry deadline; it must not import a store
backend (the store satisfies SessionRecords structurally) nor asyncio: each write is one small
synchronous record, made at CONNECT, SUBSCRIBE, UNSUBSCRIBE and a connection's end, never per message.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Final, Protocol

from edgehub.errors import StoreError
from edgehub.heads.mqtt.sessions import NEVER_EXPIRES, SessionState, StoredSession
from edgehub.message import Identity

log = logging.getLogger(__name__)

RECORD_VERSION: Final = 1


class SessionRecords(Protocol):
    """What the session store needs of the hub's store (edgehub.store.base.Store has it):
    one atomic write per record."""

    def get_session(self, key: str) -> bytes | None: ...

    def put_session(self, key: str, value: bytes) -> None: ...

    def delete_session(self, key: str) -> None: ...

    def session_keys(self) -> list[str]: ...


def encode_record(state: SessionState, expires_at: float | None) -> bytes:
    """The stored form of ``state``. ``expires_at`` is the wall-clock deadline of a parked
    session (seconds since the epoch); None while a connection holds it or when it never expires."""
    return json.dumps({
        "v": RECORD_VERSION,
        "identity": state.identity.id,
        "subscriptions": state.subscriptions,
        "expiryInterval": state.expiry_interval,
        "expiresAt": expires_at,
    }, separators=(",", ":"), sort_keys=True).encode()


def decode_record(client_id: str, data: bytes) -> tuple[SessionState, float | None]:
    """The state and wall-clock deadline of a record; raises StoreError when it is not one this hub wrote."""
    try:
        raw = json.loads(data)
        if raw["v"] != RECORD_VERSION:
            raise ValueError(f"unknown record version {raw['v']!r}")
        identity, subscriptions = raw["identity"], raw["subscriptions"]
        interval, expires_at = raw["expiryInterval"], raw["expiresAt"]
        if not isinstance(identity, str) or not identity or not isinstance(subscriptions, dict):
            raise ValueError("identity or subscriptions malformed")
        if not all(isinstance(f, str) and type(q) is int and q in (0, 1) for f, q in subscriptions.items()):
            raise ValueError("a subscription is malformed")
        if type(interval) is not int or not 0 < interval <= NEVER_EXPIRES:
            raise ValueError(f"expiry interval {interval!r}")
        if expires_at is not None and not isinstance(expires_at, int | float):
            raise ValueError(f"deadline {expires_at!r}")
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"MQTT session record of {client_id!r} is unreadable: {exc}") from exc
    state = SessionState(client_id, Identity.parse(identity), dict(subscriptions), interval)
    return state, None if expires_at is None else float(expires_at)


class DurableSessionStore:
    """SessionStore over the hub's store, with expiry deadlines in wall time so they hold across
    a restart (the table's ``now`` is monotonic and starts over with the process).

    A session whose connection was still open when the hub stopped without closing it (kill -9)
    has no deadline on record: its connection ended then, so its full interval runs from the
    next start. A write that fails is logged and the session stays in memory: the client's
    connection never fails for it.
    """

    __slots__ = ("_records", "_wall_time")

    def __init__(self, records: SessionRecords, wall_time: Callable[[], float]) -> None:
        self._records = records
        self._wall_time = wall_time

    def save(self, state: SessionState, *, parked: bool) -> None:
        interval = state.expiry_interval
        expires_at = self._wall_time() + interval if parked and interval != NEVER_EXPIRES else None
        try:
            self._records.put_session(state.client_id, encode_record(state, expires_at))
        except StoreError as exc:
            log.warning("MQTT session of %s not kept in the store: %s", state.client_id, exc)

    def delete(self, client_id: str) -> None:
        try:
            self._records.delete_session(client_id)
        except StoreError as exc:
            log.warning("MQTT session of %s not removed from the store: %s", client_id, exc)

    def load_all(self) -> list[StoredSession]:
        now = self._wall_time()
        sessions: list[StoredSession] = []
        for client_id in self._records.session_keys():
            data = self._records.get_session(client_id)
            if data is None:
                continue
            try:
                state, expires_at = decode_record(client_id, data)
            except StoreError as exc:
                log.warning("%s; the session is not restored", exc)
                continue
            sessions.append(StoredSession(state, _remaining(state.expiry_interval, expires_at, now)))
        return sessions


def _remaining(interval: int, expires_at: float | None, now: float) -> float:
    full = math.inf if interval == NEVER_EXPIRES else float(interval)
    if expires_at is None:
        return full
    return min(expires_at - now, full)  # a clock set back never lengthens a session

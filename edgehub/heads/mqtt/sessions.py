"""MQTT session state that outlives a connection, and the table that keeps it by client id.

Sans-I/O bookkeeping shared by all connections of one server: no sockets, no timers (the
server calls ``expire(now)``), no packets. Messages for offline clients stay in the hub's
store, not here; persistent sessions are written through the injected SessionStore port
(edgehub.heads.mqtt.session_store keeps them in the store), never by the codec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Protocol

from edgehub.message import Identity

NEVER_EXPIRES: Final = 0xFFFFFFFF
"""MQTT 5 §3.1.2.11.2: a Session Expiry Interval of 0xFFFFFFFF means the session does not expire."""


@dataclass(slots=True, eq=False)
class SessionState:
    """What MQTT keeps of a session between connections (MQTT 5 §4.1): the subscriptions.

    ``expiry_interval`` is in seconds; 0 ends the session with its connection.
    Mutable on purpose: the connected MqttSession updates it in place.
    """

    client_id: str
    identity: Identity
    subscriptions: dict[str, int] = field(default_factory=dict)
    expiry_interval: int = 0


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A persistent session read back at start: its state and the seconds of expiry it has left
    (``math.inf``: it never expires)."""

    state: SessionState
    remaining: float


class SessionStore(Protocol):
    """Where the table keeps persistent sessions (expiry interval above 0) across restarts.

    Called on the event loop at CONNECT, SUBSCRIBE, UNSUBSCRIBE and when a connection ends,
    never per message; a failed write is the store's to report, the table carries on.
    """

    def save(self, state: SessionState, *, parked: bool) -> None:
        """Keep ``state``. ``parked``: its connection just ended, the expiry runs from now;
        otherwise a connection holds it and the expiry starts when that ends (or at the next start)."""
        ...

    def delete(self, client_id: str) -> None:
        """Forget the session of ``client_id``; no-op when none is kept."""
        ...

    def load_all(self) -> list[StoredSession]:
        """Every kept session, with the expiry it has left (0 or less: expired meanwhile)."""
        ...


class NoSessionStore:
    """The null SessionStore: sessions live in memory only and end with the process."""

    def save(self, state: SessionState, *, parked: bool) -> None:
        return None

    def delete(self, client_id: str) -> None:
        return None

    def load_all(self) -> list[StoredSession]:
        return []


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """The result of SessionTable.open: the state to use and who held the client id before."""

    state: SessionState
    present: bool
    displaced: object | None


class SessionTable:
    """Session states by client id: attached to one owner (a live session) or parked until expiry.

    ``open`` implements the CONNECT rules: Clean Start discards an existing session
    [MQTT-3.1.2-4], otherwise it is resumed [MQTT-3.1.2-5]; a second connection with
    the same client id displaces the first [MQTT-3.1.4-3]. ``max_connected`` bounds
    how many owners exist at once (MaxConnectedClients).

    Every change to a persistent session (expiry interval above 0) goes to ``store``: its
    subscriptions and expiry survive a restart, graceful or kill -9, and ``restore`` parks
    them again at start. Undelivered messages need nothing here: they stay in the hub's
    store until acknowledged (docs/architecture.md §1).
    """

    __slots__ = ("_owners", "_parked", "_persisted", "_states", "_store", "max_connected")

    def __init__(self, max_connected: int = 1000, store: SessionStore | None = None) -> None:
        self.max_connected = max_connected
        self._store: SessionStore = store or NoSessionStore()
        self._owners: dict[str, object] = {}
        self._states: dict[str, SessionState] = {}
        self._parked: dict[str, float] = {}
        self._persisted: set[str] = set()
        """Client ids with a record in the store, so ending a clean session writes nothing."""

    @property
    def connected(self) -> int:
        return len(self._owners)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def open(
        self, client_id: str, identity: Identity, *, clean_start: bool, expiry_interval: int,
        owner: object, now: float,
    ) -> OpenedSession | None:
        """Attach ``owner`` to the session of ``client_id``; None when the table is full."""
        displaced = self._owners.get(client_id)
        if displaced is None and len(self._owners) >= self.max_connected:
            return None
        state = self._states.get(client_id)
        self._parked.pop(client_id, None)
        present = state is not None and not clean_start and state.identity == identity
        if not present or state is None:
            state = SessionState(client_id, identity)
            self._states[client_id] = state
        state.expiry_interval = expiry_interval
        self._owners[client_id] = owner
        self._keep(state, parked=False)
        return OpenedSession(state, present, displaced)

    def restore(self, now: float) -> int:
        """Park the sessions the store kept (at start, before any CONNECT) with the expiry
        they have left; delete the ones that expired meanwhile. Returns how many were parked."""
        parked = 0
        for stored in self._store.load_all():
            state = stored.state
            client_id = state.client_id
            if stored.remaining <= 0 or state.expiry_interval == 0:
                self._store.delete(client_id)
                continue
            self._states[client_id] = state
            self._parked[client_id] = now + stored.remaining  # math.inf: never
            self._persisted.add(client_id)
            parked += 1
        return parked

    def changed(self, state: SessionState) -> None:
        """The connected ``state``'s subscriptions changed (SUBSCRIBE, UNSUBSCRIBE): keep them."""
        if self._states.get(state.client_id) is state:
            self._keep(state, parked=False)

    def _keep(self, state: SessionState, *, parked: bool) -> None:
        client_id = state.client_id
        if state.expiry_interval:
            self._store.save(state, parked=parked)
            self._persisted.add(client_id)
        else:
            self._forget(client_id)

    def _forget(self, client_id: str) -> None:
        if client_id in self._persisted:
            self._persisted.discard(client_id)
            self._store.delete(client_id)

    def release(self, state: SessionState, owner: object, now: float) -> None:
        """``owner``'s connection ended: park the state until it expires, or drop it.

        A no-op when another connection has taken the client id over meanwhile.
        """
        client_id = state.client_id
        if self._owners.get(client_id) is not owner:
            return
        del self._owners[client_id]
        if self._states.get(client_id) is not state:
            return
        if state.expiry_interval == 0:
            del self._states[client_id]
            self._forget(client_id)  # MQTT 5 DISCONNECT may have set the interval to 0
            return
        if state.expiry_interval == NEVER_EXPIRES:
            self._parked[client_id] = math.inf
        else:
            self._parked[client_id] = now + state.expiry_interval
        self._keep(state, parked=True)

    def expire(self, now: float) -> int:
        """Drop parked sessions whose expiry passed; return how many."""
        gone = [client_id for client_id, deadline in self._parked.items() if deadline <= now]
        for client_id in gone:
            del self._parked[client_id]
            del self._states[client_id]
            self._forget(client_id)
        return len(gone)

    def get(self, client_id: str) -> SessionState | None:
        return self._states.get(client_id)

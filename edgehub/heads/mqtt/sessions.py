"""MQTT session state that outlives a connection, and the table that keeps it by client id.

Sans-I/O bookkeeping shared by all connections of one server: no sockets, no timers (the
server calls ``expire(now)``), no packets. Messages for offline clients stay in the hub's
store, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

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
    """

    __slots__ = ("_owners", "_parked", "_states", "max_connected")

    def __init__(self, max_connected: int = 1000) -> None:
        self.max_connected = max_connected
        self._owners: dict[str, object] = {}
        self._states: dict[str, SessionState] = {}
        self._parked: dict[str, float] = {}

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
        return OpenedSession(state, present, displaced)

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
        elif state.expiry_interval == NEVER_EXPIRES:
            self._parked[client_id] = float("inf")
        else:
            self._parked[client_id] = now + state.expiry_interval

    def expire(self, now: float) -> int:
        """Drop parked sessions whose expiry passed; return how many."""
        gone = [client_id for client_id, deadline in self._parked.items() if deadline <= now]
        for client_id in gone:
            del self._parked[client_id]
            del self._states[client_id]
        return len(gone)

    def get(self, client_id: str) -> SessionState | None:
        return self._states.get(client_id)

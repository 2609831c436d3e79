"""The one exception tree of the hub.

Every error the hub raises on purpose derives from EdgeHubError; nothing here does I/O.
"""

from __future__ import annotations


class EdgeHubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigError(EdgeHubError):
    """Settings, a config file or a route is invalid.

    ``problems`` holds one ``(location, reason)`` pair per problem so that
    ``edgehub check-config`` can print each on its own line.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{loc}: {reason}" for loc, reason in problems))


class RouteSyntaxError(EdgeHubError):
    """A route could not be parsed; ``position`` is the 0-based column."""

    def __init__(self, reason: str, position: int, text: str = "") -> None:
        self.reason = reason
        self.position = position
        self.text = text
        super().__init__(f"{reason} at position {position}")


class StoreError(EdgeHubError):
    """The message store failed."""


class StoreOpenError(StoreError):
    """The store cannot be opened (corrupt, locked, newer format, no permission)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot open store at {path}: {reason}")


class StoreDamagedError(StoreError):
    """A read or write of the open store hit damaged data (a checksum mismatch); ``table`` names
    the table read ("" when RocksDB refuses writes after a background read hit damage)."""

    def __init__(self, path: str, table: str, reason: str) -> None:
        self.path = path
        self.table = table
        self.reason = reason
        where = f"the {table} table of " if table else ""
        super().__init__(f"{where}the store at {path} is damaged: {reason}")


class StoreFullError(StoreError):
    """Appending would exceed ``storeLimits.maxSizeBytes``; nothing was written."""


class AuthError(EdgeHubError):
    """Authentication or authorization failed."""


class EndpointUnavailable(EdgeHubError):  # noqa: N818 - names a state the pump reacts to, not a fault
    """An endpoint cannot take messages now; the pump retries later."""


class ProtocolError(EdgeHubError):
    """A peer broke a wire protocol rule."""

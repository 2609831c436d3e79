"""What heads and links need of the twin and method core: the ports and the errors they raise.

Protocols and values only; the implementations live beside this file (service.py, methods.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from edgehub.errors import EdgeHubError
from edgehub.message import Identity

JsonObject = dict[str, Any]
"""A decoded JSON object (twin collections, patches, method payloads)."""

MAX_METHOD_PAYLOAD_BYTES: Final = 128 * 1024
"""IoT Hub's direct-method payload limit (request and response): 128 KiB."""


class TwinError(EdgeHubError):
    """A twin operation refused with an IoT Hub status (400 bad patch, 404, 413 too large, …);
    nothing stored changed."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class MethodError(EdgeHubError):
    """A direct-method call that did not reach an answer: 404 target not connected or not
    subscribed (after connectTimeoutInSeconds), 504 no answer in responseTimeoutInSeconds,
    413 payload over 128 KiB, 400 malformed."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


@dataclass(frozen=True, slots=True)
class MethodRequest:
    """One call as the target receives it. ``payload`` is JSON text (``b"null"`` for none)."""

    name: str
    rid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class MethodResponse:
    """The target's answer: its status (any int it chose) and JSON payload text."""

    status: int
    payload: bytes


class MethodTarget(Protocol):
    """A connected client that subscribed to method requests (MQTT: ``$iothub/methods/POST/#``)."""

    def send_method_request(self, request: MethodRequest) -> None:
        """Put the request on the wire; never blocks. The answer comes back through
        ``MethodPort.respond``."""
        ...


class MethodPort(Protocol):
    """Direct methods, as heads see them."""

    def attach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        """``target`` now takes ``identity``'s method requests (a newer one replaces an older)."""
        ...

    def detach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        """No-op if ``target`` was already replaced."""
        ...

    def respond(self, identity: Identity, rid: str, response: MethodResponse) -> bool:
        """An answer from ``identity``; False if no call of it waits under ``rid``
        (late, unknown or foreign)."""
        ...

    async def invoke(
        self, target: Identity, name: str, payload: bytes, *,
        connect_timeout: float, response_timeout: float, caller: Identity | None = None,
    ) -> MethodResponse:
        """Call ``name`` on ``target``: wait up to ``connect_timeout`` s for it to be attached,
        then up to ``response_timeout`` s for its answer. Raises MethodError (404, 504, 413).
        A slow target never blocks other calls. ``caller`` (None: upstream) is for metrics."""
        ...


class ClientPresence(Protocol):
    """Who is connected, for the hub's own twin (``$edgeHub`` reported ``clients``)."""

    def client_connected(self, identity: Identity) -> None: ...

    def client_disconnected(self, identity: Identity) -> None: ...


class NoPresence:
    """A ClientPresence that records nothing (heads built without a hub twin)."""

    def client_connected(self, identity: Identity) -> None:
        """Not recorded."""

    def client_disconnected(self, identity: Identity) -> None:
        """Not recorded."""


DesiredListener = Callable[[JsonObject], None]
"""Receives a desired-properties patch, with ``$version`` in it."""


class TwinPort(Protocol):
    """Twins, as heads see them. Every identity may use only its own twin (the head checks)."""

    async def get_twin(self, identity: Identity) -> JsonObject:
        """``{"desired": {..., "$version": n}, "reported": {..., "$version": m}}``."""
        ...

    async def patch_reported(self, identity: Identity, patch: Mapping[str, Any]) -> int:
        """Merge ``patch`` (null removes a key) into the reported properties, durably, and
        return the new reported ``$version``. Raises TwinError; nothing changes then."""
        ...

    def subscribe_desired(self, identity: Identity, listener: DesiredListener) -> Callable[[], None]:
        """Call ``listener`` with every later desired patch of ``identity``; returns unsubscribe."""
        ...


_NOT_AVAILABLE: Final = 501


class UnavailableTwins:
    """The TwinPort of a head built without the twin core (tests, tools): every call is refused."""

    async def get_twin(self, identity: Identity) -> JsonObject:
        raise TwinError(_NOT_AVAILABLE, "twins are not served here")

    async def patch_reported(self, identity: Identity, patch: Mapping[str, Any]) -> int:
        raise TwinError(_NOT_AVAILABLE, "twins are not served here")

    def subscribe_desired(self, identity: Identity, listener: DesiredListener) -> Callable[[], None]:
        return _nothing


class UnavailableMethods:
    """The MethodPort of a head built without the method core: no target is ever reachable."""

    def attach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        """Nobody calls methods here."""

    def detach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        """Nothing was attached."""

    def respond(self, identity: Identity, rid: str, response: MethodResponse) -> bool:
        return False

    async def invoke(
        self, target: Identity, name: str, payload: bytes, *,
        connect_timeout: float, response_timeout: float, caller: Identity | None = None,
    ) -> MethodResponse:
        raise MethodError(_NOT_AVAILABLE, "direct methods are not served here")


def _nothing() -> None:
    """Unsubscribe from a feed that never fires."""

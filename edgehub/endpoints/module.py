"""Local-client endpoints (module inputs, devicebound queues) and the directory of client links.

They only hand a batch to the client's current link; queueing, retries and checkpoints are the pump's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

from edgehub.endpoints.base import ReachableListeners, SendResult, Unsubscribe
from edgehub.endpoints.link import ClientLink
from edgehub.errors import EndpointUnavailable
from edgehub.message import Identity
from edgehub.store.base import QueuedMessage

log = logging.getLogger(__name__)

DEFAULT_CLIENT_BATCH_SIZE: Final = 10
"""Messages per deliver call to a local client (its session's in-flight window bounds it too)."""


def module_input_endpoint_name(module_id: str, input_name: str) -> str:
    """The queue endpoint of a module input, as routes name it:
    ``BrokeredEndpoint("/modules/{m}/inputs/{i}")``."""
    return f"/modules/{module_id}/inputs/{input_name}"


def devicebound_endpoint_name(device_id: str) -> str:
    """The queue endpoint of a device's cloud-to-device messages (IoT Hub's
    ``devices/{d}/messages/devicebound`` topic)."""
    return f"/devices/{device_id}/messages/devicebound"


class ClientDirectory:
    """Which link currently reaches each connected client, by identity.

    The hub forwards ``HubPort.attach``/``detach`` here. A newer link for the
    same identity replaces the older one (a client reconnecting before its old
    session timed out, as edgeHub's ConnectionManager does); a late detach of
    the replaced link leaves the new one in place.
    """

    def __init__(self) -> None:
        self._links: dict[str, ClientLink] = {}
        self._listeners: dict[str, ReachableListeners] = {}

    def __len__(self) -> int:
        return len(self._links)

    def link(self, identity: Identity) -> ClientLink | None:
        """The current link of ``identity``, or None when it is not connected."""
        return self._links.get(identity.id)

    def attach(self, identity: Identity, link: ClientLink) -> None:
        """``link`` now reaches ``identity``; wake whoever waits for it."""
        previous = self._links.get(identity.id)
        self._links[identity.id] = link
        if previous is not None and previous is not link:
            log.debug("client %s: new link replaces the previous one", identity)
        listeners = self._listeners.get(identity.id)
        if listeners is not None:
            listeners.notify()

    def detach(self, identity: Identity, link: ClientLink) -> bool:
        """Forget ``link`` if it is still the current one; True if it was."""
        if self._links.get(identity.id) is not link:
            return False
        del self._links[identity.id]
        return True

    def subscribe_attach(self, identity: Identity, callback: Callable[[], None]) -> Unsubscribe:
        """Call ``callback`` every time a link for ``identity`` is attached."""
        listeners = self._listeners.get(identity.id)
        if listeners is None:
            listeners = self._listeners[identity.id] = ReachableListeners()
        unsubscribe = listeners.subscribe(callback)

        def unsubscribe_and_forget() -> None:
            unsubscribe()
            if not listeners and self._listeners.get(identity.id) is listeners:
                del self._listeners[identity.id]

        return unsubscribe_and_forget


class _ClientEndpoint:
    """Delivery to one local client through its current link."""

    def __init__(
        self,
        directory: ClientDirectory,
        client: Identity,
        input_name: str | None,
        name: str,
        max_batch_size: int,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size of {name} must be >= 1, got {max_batch_size}")
        self._directory = directory
        self._client = client
        self._input_name = input_name
        self._name = name
        self._max_batch_size = max_batch_size

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def client(self) -> Identity:
        return self._client

    async def send(self, messages: Sequence[QueuedMessage]) -> SendResult:
        link = self._directory.link(self._client)
        if link is None:
            raise EndpointUnavailable(f"{self._client} is not connected")
        acknowledged = await link.deliver(self._input_name, [queued.message for queued in messages])
        return SendResult(max(0, min(acknowledged, len(messages))))

    def subscribe_reachable(self, callback: Callable[[], None]) -> Unsubscribe:
        # An offline module's queue drains as soon as it connects, not after a
        # retry timer (docs/architecture.md §1 invariant 7).
        return self._directory.subscribe_attach(self._client, callback)


class ModuleInputEndpoint(_ClientEndpoint):
    """A module's input (``/modules/{m}/inputs/{i}``), delivered over the module's session."""

    def __init__(
        self,
        directory: ClientDirectory,
        module: Identity,
        input_name: str,
        *,
        max_batch_size: int = DEFAULT_CLIENT_BATCH_SIZE,
    ) -> None:
        if module.module_id is None:
            raise ValueError(f"{module} is a device, not a module: it has no inputs")
        if not input_name:
            raise ValueError(f"module {module}: input name must not be empty")
        name = module_input_endpoint_name(module.module_id, input_name)
        super().__init__(directory, module, input_name, name, max_batch_size)


class DeviceboundEndpoint(_ClientEndpoint):
    """A device's cloud-to-device queue (``/devices/{d}/messages/devicebound``)."""

    def __init__(
        self,
        directory: ClientDirectory,
        device: Identity,
        *,
        max_batch_size: int = DEFAULT_CLIENT_BATCH_SIZE,
    ) -> None:
        if device.module_id is not None:
            raise ValueError(f"{device} is a module: devicebound messages go to devices")
        super().__init__(directory, device, None, devicebound_endpoint_name(device.device_id), max_batch_size)

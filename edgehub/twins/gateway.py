"""The hub's TwinPort and MethodPort: the twin service and the method router behind one front.

Owns what every head shares on these calls: metrics with edgeHub's names, and asking the upstream
cache to follow an identity (and read its twin fresh while the parent answers, as edgeHub reads
the cloud twin when online); it holds no twin state and speaks no protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from edgehub import metrics
from edgehub.message import Identity
from edgehub.twins.port import (
    DesiredListener,
    JsonObject,
    MethodPort,
    MethodResponse,
    MethodTarget,
)
from edgehub.twins.service import TwinService

LOCAL: Final = "edge_hub"
"""The ``source``/``target`` label of an operation the hub served itself."""
UPSTREAM: Final = "upstream"


class UpstreamFollower(Protocol):
    """What the gateway needs of the upstream twin sync (edgehub.upstream.twin_sync.UpstreamTwins)."""

    def may_follow(self, identity: Identity) -> bool: ...

    def follow(self, identity: Identity) -> None: ...

    def reported_changed(self) -> None: ...

    async def refresh(self, identity: Identity) -> bool: ...


class _Standalone:
    """The follower of a hub without an upstream: twins are local only."""

    def may_follow(self, identity: Identity) -> bool:
        return False

    def follow(self, identity: Identity) -> None:
        """Nothing upstream to follow."""

    def reported_changed(self) -> None:
        """Nothing upstream to tell."""

    async def refresh(self, identity: Identity) -> bool:
        return False


class TwinGateway:
    """Implements TwinPort and MethodPort for the heads (edgehub.twins.port)."""

    def __init__(self, twins: TwinService, methods: MethodPort) -> None:
        self.twins = twins
        self.methods = methods
        self.upstream: UpstreamFollower = _Standalone()

    # --- TwinPort -----------------------------------------------------------------------------

    async def get_twin(self, identity: Identity) -> JsonObject:
        started = time.monotonic()
        upstream = self.upstream
        source = LOCAL
        if upstream.may_follow(identity):
            upstream.follow(identity)
            if await upstream.refresh(identity):
                source = UPSTREAM
        twin = self.twins.twin(identity)
        metrics.GET_TWIN.labels(source, identity.id).inc()
        metrics.GET_TWIN_DURATION.labels(source, identity.id).observe(time.monotonic() - started)
        return twin

    async def patch_reported(self, identity: Identity, patch: Mapping[str, Any]) -> int:
        started = time.monotonic()
        version = self.twins.update_reported(identity, patch)
        self.upstream.follow(identity)
        self.upstream.reported_changed()
        metrics.REPORTED_PROPERTIES.labels(LOCAL, identity.id).inc()
        metrics.REPORTED_PROPERTIES_DURATION.labels(LOCAL, identity.id).observe(time.monotonic() - started)
        return version

    def subscribe_desired(self, identity: Identity, listener: DesiredListener) -> Callable[[], None]:
        self.upstream.follow(identity)
        return self.twins.subscribe_desired(identity, listener)

    # --- MethodPort ---------------------------------------------------------------------------

    def attach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        self.upstream.follow(identity)
        self.methods.attach_method_target(identity, target)

    def detach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        self.methods.detach_method_target(identity, target)

    def respond(self, identity: Identity, rid: str, response: MethodResponse) -> bool:
        return self.methods.respond(identity, rid, response)

    async def invoke(
        self, target: Identity, name: str, payload: bytes, *,
        connect_timeout: float, response_timeout: float, caller: Identity | None = None,
    ) -> MethodResponse:
        started = time.monotonic()
        caller_id = caller.id if caller is not None else UPSTREAM
        try:
            return await self.methods.invoke(target, name, payload, connect_timeout=connect_timeout,
                                             response_timeout=response_timeout, caller=caller)
        finally:
            metrics.DIRECT_METHODS.labels(caller_id, target.id).inc()
            metrics.DIRECT_METHOD_DURATION.labels(caller_id, target.id).observe(time.monotonic() - started)

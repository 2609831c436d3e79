"""One AMQP connection's twin and method traffic, carried to the hub's twin and method ports.

asyncio glue beside server.py: it turns TwinRequested / MethodLinkChanged / MethodResponded events
into TwinPort and MethodPort calls and their answers into sends on the connection core; no AMQP
rule lives here (the core's ServiceRequests shapes the messages).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from edgehub.heads.amqp.events import Event, MethodLinkChanged, MethodResponded, TwinOperation, TwinRequested
from edgehub.message import Identity
from edgehub.twins.port import MethodPort, MethodRequest, MethodResponse, TwinError, TwinPort

if TYPE_CHECKING:
    from edgehub.heads.amqp.server import AmqpConnection

log = logging.getLogger(__name__)

_BAD_REQUEST = 400
_SERVER_ERROR = 500


class _MethodTarget:
    """The MethodTarget of one identity served by this connection's method links."""

    __slots__ = ("_connection", "_identity")

    def __init__(self, connection: AmqpConnection, identity: Identity) -> None:
        self._connection = connection
        self._identity = identity

    def send_method_request(self, request: MethodRequest) -> None:
        core = self._connection.core
        if core is not None and not core.closed:
            core.services.send_method_request(self._identity, request.name, request.rid, request.payload)
            core.engine.process()
            self._connection.flush()


class ConnectionServices:
    """Desired-patch subscriptions, method targets and twin calls of one AmqpConnection."""

    def __init__(
        self, connection: AmqpConnection, twins: TwinPort, methods: MethodPort,
        track: Callable[[Coroutine[None, None, None]], asyncio.Task[None]],
    ) -> None:
        self._connection = connection
        self._twins = twins
        self._methods = methods
        self._track = track
        self._desired: dict[Identity, Callable[[], None]] = {}
        self._targets: dict[Identity, _MethodTarget] = {}

    def on_event(self, event: Event) -> None:
        match event:
            case MethodLinkChanged(identity=identity, active=True):
                target = self._targets[identity] = _MethodTarget(self._connection, identity)
                self._methods.attach_method_target(identity, target)
            case MethodLinkChanged(identity=identity, active=False):
                old = self._targets.pop(identity, None)
                if old is not None:
                    self._methods.detach_method_target(identity, old)
            case MethodResponded(identity=identity, rid=rid, status=status, payload=payload):
                if not self._methods.respond(identity, rid, MethodResponse(status, payload)):
                    log.info("AMQP method response of %s for unknown or expired request %r dropped",
                             identity, rid[:64])
            case TwinRequested():
                self._on_twin(event)

    def close(self) -> None:
        """The connection ended: no more desired patches or method calls through it."""
        for identity in list(self._desired):
            self._unsubscribe_desired(identity)
        for identity, target in list(self._targets.items()):
            self._methods.detach_method_target(identity, target)
        self._targets.clear()

    # --- twins -------------------------------------------------------------------------------

    def _on_twin(self, event: TwinRequested) -> None:
        identity = event.identity
        if event.operation is TwinOperation.PUT:
            self._unsubscribe_desired(identity)
            self._desired[identity] = self._twins.subscribe_desired(
                identity, lambda patch: self._send_desired(identity, patch))
            self._answer(identity, event.correlation_id, 200, b"")
        elif event.operation is TwinOperation.DELETE:
            self._unsubscribe_desired(identity)
            if event.correlation_id:  # empty: the twin link closed, nobody to answer
                self._answer(identity, event.correlation_id, 200, b"")
        else:
            self._track(self._twin_call(event))

    def _unsubscribe_desired(self, identity: Identity) -> None:
        unsubscribe = self._desired.pop(identity, None)
        if unsubscribe is not None:
            unsubscribe()

    async def _twin_call(self, event: TwinRequested) -> None:
        version: int | None = None
        try:
            if event.operation is TwinOperation.GET:
                twin = await self._twins.get_twin(event.identity)
                status, body = 200, json.dumps(twin, separators=(",", ":")).encode()
            else:
                patch = json.loads(event.body or b"null")
                if not isinstance(patch, dict):
                    raise TwinError(_BAD_REQUEST, "reported properties must be a JSON object")
                version = await self._twins.patch_reported(event.identity, patch)
                status, body = 204, b""
        except TwinError as exc:
            status, body = exc.status, _error_body(exc.status, exc.reason)
        except ValueError as exc:
            status, body = _BAD_REQUEST, _error_body(_BAD_REQUEST, f"reported properties are not JSON: {exc}")
        except Exception:
            log.exception("AMQP twin %s of %s failed", event.operation.value, event.identity)
            status, body = _SERVER_ERROR, _error_body(_SERVER_ERROR, "internal error")
        if event.correlation_id:
            self._answer(event.identity, event.correlation_id, status, body, version)

    def _answer(self, identity: Identity, correlation_id: str, status: int, body: bytes,
                version: int | None = None) -> None:
        core = self._connection.core
        if core is not None and not core.closed:
            core.services.send_twin_response(identity, correlation_id, status, body, version)
            core.engine.process()
            self._connection.flush()

    def _send_desired(self, identity: Identity, patch: dict[str, Any]) -> None:
        core = self._connection.core
        if core is not None and not core.closed:
            core.services.send_desired(identity, patch)
            core.engine.process()
            self._connection.flush()


def _error_body(status: int, reason: str) -> bytes:
    # IoT Hub's error body shape, as the MQTT head answers: {"errorCode": …, "message": …}.
    return json.dumps({"errorCode": status, "message": reason}).encode()

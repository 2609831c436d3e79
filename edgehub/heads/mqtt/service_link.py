"""One MQTT connection's twin and method traffic, carried to the hub's twin and method ports.

asyncio glue beside server.py: it turns ServiceRequested / FeedChanged events into TwinPort and
MethodPort calls and their answers into QoS 0 publishes on the session; no MQTT rule lives here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from edgehub.heads.mqtt.events import FeedChanged, ServiceRequested
from edgehub.heads.mqtt.session import MqttSession
from edgehub.iothub.twin_topics import (
    Feed,
    Operation,
    desired_patch_topic,
    method_request_topic,
    twin_response_topic,
)
from edgehub.message import Identity
from edgehub.twins.port import (
    ClientPresence,
    JsonObject,
    MethodPort,
    MethodRequest,
    MethodResponse,
    MethodTarget,
    TwinError,
    TwinPort,
)

log = logging.getLogger(__name__)

_BAD_REQUEST: Final = 400
_SERVER_ERROR: Final = 500


class _MethodTarget:
    """The MethodTarget of one identity served by this connection."""

    __slots__ = ("_link", "_target")

    def __init__(self, link: ServiceLink, target: Identity) -> None:
        self._link = link
        self._target = target

    def send_method_request(self, request: MethodRequest) -> None:
        self._link.send(Feed.METHOD_REQUESTS, self._target,
                        method_request_topic(request.name, request.rid, self._link.dialect(self._target)),
                        request.payload)


class ServiceLink:
    """Twin and method traffic of one MqttConnection; ``close`` when the connection ends."""

    def __init__(
        self, session: MqttSession, twins: TwinPort, methods: MethodPort, *,
        flush: Callable[[], None], track: Callable[[Coroutine[None, None, None]], asyncio.Task[None]],
        presence: ClientPresence,
    ) -> None:
        self._session = session
        self._presence = presence
        self._twins = twins
        self._methods = methods
        self._flush = flush
        self._track = track
        self._desired: dict[Identity, Callable[[], None]] = {}
        self._method_targets: dict[Identity, MethodTarget] = {}
        self._closed = False
        if session.identity is not None:
            presence.client_connected(session.identity)

    def dialect(self, target: Identity) -> Identity | None:
        """None (the own dialect) for the session's identity, the target for a child's device."""
        return None if target == self._session.identity else target

    def send(self, feed: Feed, target: Identity, topic: str, payload: bytes) -> None:
        if self._closed:
            return
        if self._session.publish_feed(feed, target, topic, payload):
            self._flush()
        else:
            log.debug("MQTT %s for %s not sent: no subscription to the feed", feed.value, target)

    # --- events ------------------------------------------------------------------------------

    def on_request(self, event: ServiceRequested) -> None:
        request, target = event.request, event.target
        if request.operation is Operation.METHOD_RESPONSE:
            if not self._methods.respond(target, request.rid, MethodResponse(request.status, event.payload)):
                log.info("method response of %s for unknown or expired request %r dropped",
                         target, request.rid[:64])
            return
        self._track(self._answer_twin(request.operation, request.rid, target, event.payload))

    def on_feed(self, event: FeedChanged) -> None:
        target = event.target
        if event.feed is Feed.DESIRED_PATCHES:
            previous = self._desired.pop(target, None)
            if previous is not None:
                previous()
            if event.active:
                self._desired[target] = self._twins.subscribe_desired(
                    target, lambda patch: self._send_desired(target, patch))
        elif event.feed is Feed.METHOD_REQUESTS:
            old = self._method_targets.pop(target, None)
            if old is not None:
                self._methods.detach_method_target(target, old)
            if event.active:
                method_target = _MethodTarget(self, target)
                self._method_targets[target] = method_target
                self._methods.attach_method_target(target, method_target)

    def close(self) -> None:
        """The connection ended: no more desired patches or method calls through it."""
        if self._closed:
            return
        self._closed = True
        if self._session.identity is not None:
            self._presence.client_disconnected(self._session.identity)
        for unsubscribe in self._desired.values():
            unsubscribe()
        self._desired.clear()
        for target, method_target in self._method_targets.items():
            self._methods.detach_method_target(target, method_target)
        self._method_targets.clear()

    # --- twins -------------------------------------------------------------------------------

    async def _answer_twin(self, operation: Operation, rid: str, target: Identity, payload: bytes) -> None:
        dialect = self.dialect(target)
        try:
            if operation is Operation.GET_TWIN:
                twin = await self._twins.get_twin(target)
                status, version, body = 200, None, json.dumps(twin, separators=(",", ":")).encode()
            else:
                version = await self._twins.patch_reported(target, _json_object(payload))
                status, body = 204, b""
        except TwinError as exc:
            status, version, body = exc.status, None, _error_body(exc.status, exc.reason)
        except Exception:
            log.exception("twin %s of %s failed", operation.value, target)
            status, version, body = _SERVER_ERROR, None, _error_body(_SERVER_ERROR, "internal error")
        self.send(Feed.TWIN_RESPONSES, target, twin_response_topic(status, rid, dialect, version), body)

    def _send_desired(self, target: Identity, patch: JsonObject) -> None:
        version = patch.get("$version")
        if not isinstance(version, int):
            log.warning("desired patch of %s without $version not sent", target)
            return
        body = json.dumps(patch, separators=(",", ":")).encode()
        self.send(Feed.DESIRED_PATCHES, target, desired_patch_topic(version, self.dialect(target)), body)


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise TwinError(_BAD_REQUEST, f"reported properties are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TwinError(_BAD_REQUEST, "reported properties must be a JSON object")
    return value


def _error_body(status: int, reason: str) -> bytes:
    # IoT Hub's error body shape: {"errorCode": …, "message": …}.
    return json.dumps({"errorCode": status, "message": reason}).encode()

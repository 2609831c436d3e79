"""Twins and direct methods over the AMQP upstream: UpstreamTwins (twin_sync.py) speaks IoT Hub's MQTT twin
topics, this channel carries them on IoT Hub's AMQP twin and method links of one connection.

Owns the mapping only (MQTT twin topic <-> AMQP twin/method message, per identity's links); the sync rules
(what to read, push, retry) stay UpstreamTwins', the connection and its tokens AmqpUpstream's.
IoT Hub over AMQP (as the Azure IoT SDKs' AMQP twin and method clients speak it): twin requests on a
sender to ``/devices/{d}[/modules/{m}]/twin`` with the ``operation`` (GET, PATCH, PUT) and ``resource``
message annotations and a correlation-id; answers on a receiver from the same address with ``status``
and ``version`` annotations, desired patches without a correlation-id; method calls on a receiver from
``…/methods/devicebound`` (``IoThub-methodname``, correlation-id), answers on a sender to it
(``IoThub-status``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from proton import Message as AmqpMessage
from proton import symbol

from edgehub.amqp.messages import annotation, body_bytes
from edgehub.errors import AuthError, EndpointUnavailable
from edgehub.iothub.twin_topics import (
    Feed,
    Operation,
    desired_patch_topic,
    method_request_topic,
    parse_feed,
    parse_request,
    twin_response_topic,
)
from edgehub.message import Identity
from edgehub.upstream.amqp_connection import AmqpConnection
from edgehub.upstream.amqp_session import Outcome, Received
from edgehub.upstream.connection import SUBACK_FAILURE, IncomingPublish
from edgehub.upstream.twin_sync import UpstreamTwins

log = logging.getLogger(__name__)

METHOD_NAME: Final = "IoThub-methodname"
METHOD_STATUS: Final = "IoThub-status"
REPORTED: Final = "/properties/reported"
DESIRED_NOTIFICATIONS: Final = "/notifications/twin/properties/desired"
CHANNEL_CORRELATION: Final = "com.microsoft:channel-correlation-id"
API_VERSION_PROPERTY: Final = "com.microsoft:api-version"
API_VERSION: Final = "2020-09-30"
_GRANTED: Final = 1
_METHOD_CREDIT: Final = 10
_TWIN_CREDIT: Final = 10

Authorize = Callable[[Identity], Awaitable[bool]]
"""Put a token that lets the connection use ``identity``'s links; False when there is none."""


def twin_address(identity: Identity) -> str:
    if identity.module_id:
        return f"/devices/{identity.device_id}/modules/{identity.module_id}/twin"
    return f"/devices/{identity.device_id}/twin"


def methods_address(identity: Identity) -> str:
    if identity.module_id:
        return f"/devices/{identity.device_id}/modules/{identity.module_id}/methods/devicebound"
    return f"/devices/{identity.device_id}/methods/devicebound"


class AmqpTwinChannel:
    """The UpstreamConnection UpstreamTwins uses, on one AMQP connection.

    ``subscribe`` attaches the identity's twin and method link pairs (and asks for desired patches
    with PUT), answering 0x80 for every filter when the parent refuses them; ``publish`` turns a twin
    GET or reported PATCH into a twin request and a method answer into a method response. What the
    parent sends becomes the MQTT publish UpstreamTwins expects, for the identity in its dialect
    (``None`` for the link's own identity).
    """

    def __init__(self, connection: AmqpConnection, twins: UpstreamTwins, authorize: Authorize) -> None:
        self._connection = connection
        self._twins = twins
        self._authorize = authorize
        self._attached: set[Identity] = set()
        self._puts = itertools.count(1)

    # -- UpstreamConnection ----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._connection.is_open

    async def open(self) -> None:
        """Opened by AmqpUpstream."""

    async def subscribe(self, filters: Sequence[str]) -> list[int]:
        granted: list[int] = []
        for topic_filter in filters:
            feed = parse_feed(topic_filter)
            if feed is None:
                granted.append(SUBACK_FAILURE)
                continue
            identity = feed.target or self._twins.own
            ok = await self._ensure_links(identity)
            if ok and feed.feed is Feed.DESIRED_PATCHES:
                self._twin_request(identity, "PUT", f"put-desired-{next(self._puts)}", b"",
                                   DESIRED_NOTIFICATIONS)
            granted.append(_GRANTED if ok else SUBACK_FAILURE)
        return granted

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        request = parse_request(topic)
        if request is None or not self.is_open:
            done.set_result(False)
            return done
        identity = request.target or self._twins.own
        if request.operation is Operation.GET_TWIN:
            sent = self._twin_request(identity, "GET", request.rid, b"", None)
        elif request.operation is Operation.PATCH_REPORTED:
            sent = self._twin_request(identity, "PATCH", request.rid, payload, REPORTED)
        else:
            answer = AmqpMessage(body=payload, correlation_id=request.rid,
                                 properties={METHOD_STATUS: request.status})
            answer.inferred = True
            sent = self._connection.send(_name("methods-out", identity), answer)
        sent.add_done_callback(lambda outcome: done.set_result(outcome.result() is Outcome.ACCEPTED))
        return done

    def ack(self, mid: int) -> None:
        """Settled on arrival (AMQP), nothing to acknowledge later."""

    def abort(self, reason: str) -> None:
        self._connection.abort(reason)

    async def close(self) -> None:
        """The connection is AmqpUpstream's to close."""

    async def wait_closed(self) -> str:
        return await self._connection.wait_closed()

    # -- links -----------------------------------------------------------------------------------

    async def _ensure_links(self, identity: Identity) -> bool:
        if identity in self._attached:
            return True
        try:
            if not await self._authorize(identity):
                return False
            twin, methods = twin_address(identity), methods_address(identity)
            # IoT Hub pairs the two links of a channel by this property (as the Azure IoT SDKs attach them).
            pair = {CHANNEL_CORRELATION: f"twin:{uuid.uuid4()}", API_VERSION_PROPERTY: API_VERSION}
            await self._connection.attach_sender(_name("twin-out", identity), twin, pair)
            await self._connection.attach_receiver(
                _name("twin-in", identity), twin, _TWIN_CREDIT,
                lambda received: self._twin_answer(identity, received), pair)
            pair = {CHANNEL_CORRELATION: f"methods:{uuid.uuid4()}", API_VERSION_PROPERTY: API_VERSION}
            await self._connection.attach_sender(_name("methods-out", identity), methods, pair)
            await self._connection.attach_receiver(
                _name("methods-in", identity), methods, _METHOD_CREDIT,
                lambda received: self._method_call(identity, received), pair)
        except (AuthError, EndpointUnavailable) as exc:
            log.info("upstream: no AMQP twin and method links for %s: %s", identity, exc)
            return False
        self._attached.add(identity)
        return True

    def _twin_request(self, identity: Identity, operation: str, rid: str, body: bytes,
                      resource: str | None) -> asyncio.Future[Outcome]:
        request = AmqpMessage(body=body, correlation_id=rid)
        request.inferred = True
        annotations: dict[Any, Any] = {symbol("operation"): operation}
        if resource is not None:
            annotations[symbol("resource")] = resource
        request.annotations = annotations
        return self._connection.send(_name("twin-out", identity), request)

    # -- from the parent -------------------------------------------------------------------------

    def _dialect(self, identity: Identity) -> Identity | None:
        return None if identity == self._twins.own else identity

    def _twin_answer(self, identity: Identity, received: Received) -> None:
        message = received.message
        self._connection.settle(received.delivery, Outcome.ACCEPTED)
        rid = message.correlation_id
        version = _int(annotation(message, "version"))
        if rid is None:
            if version is not None:  # a desired patch (IoT Hub sends no correlation-id with it)
                self._deliver(desired_patch_topic(version, self._dialect(identity)), message)
            return
        rid_text = bytes(rid).decode() if isinstance(rid, bytes | memoryview) else str(rid)
        if rid_text.startswith("put-desired-"):
            return  # the answer to our PUT: desired patches follow
        status = _int(annotation(message, "status")) or 0
        self._deliver(twin_response_topic(status, rid_text, self._dialect(identity), version), message)

    def _method_call(self, identity: Identity, received: Received) -> None:
        message = received.message
        self._connection.settle(received.delivery, Outcome.ACCEPTED)
        properties: dict[Any, Any] = message.properties or {}
        name, rid = properties.get(METHOD_NAME), message.correlation_id
        if name is None or rid is None:
            log.info("upstream: a method call for %s without %s or correlation-id dropped",
                     identity, METHOD_NAME)
            return
        rid_text = bytes(rid).decode() if isinstance(rid, bytes | memoryview) else str(rid)
        self._deliver(method_request_topic(str(name), rid_text, self._dialect(identity)), message)

    def _deliver(self, topic: str, message: AmqpMessage) -> None:
        self._twins.on_publish(IncomingPublish(topic, body_bytes(message), 0, 0), self)


def _name(kind: str, identity: Identity) -> str:
    return f"{kind}:{identity.id}"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None

"""REST telemetry, as IoT Hub's device HTTP API: ``POST /devices/{d}[/modules/{m}]/messages/events``.

Owns the request → Message mapping (``iothub-app-*`` headers, system property headers), the
in-flight bound and the status codes; it routes and stores nothing itself (HubPort.ingest does).

Statuses: 204 only after the durable write (the HTTP twin of PUBACK after the store);
400 malformed, 401 bad or expired token, 403 the token's identity may not send as the URL's,
413 body over ``maxMessageSizeBytes``, 429 ``max_in_flight`` requests already waiting for
their write, 507 store full (``storeLimits.maxSizeBytes``). Every error is a JSON body.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Final

from aiohttp import web

from edgehub.auth.authorize import may_publish
from edgehub.errors import AuthError, StoreFullError
from edgehub.heads.http.auth import HttpAuthenticator
from edgehub.heads.http.responses import json_error
from edgehub.heads.port import HubPort
from edgehub.iothub.topics import identity_topic
from edgehub.logs import RateLimitedLine, shown
from edgehub.message import Identity, Message, SystemProperty
from edgehub.metrics import record_received, record_unacked

log = logging.getLogger(__name__)
_store_full_line = RateLimitedLine(log, logging.WARNING)

MAX_IN_FLIGHT_INGESTS: Final = 256
"""REST requests that may wait for their durable write at once; one more gets 429 and
``Retry-After: 1``. Each holds at most one body of ``maxMessageSizeBytes``, so the bound
caps the memory it holds at 256 times the largest message (64 MiB at the 256 KiB default)."""

APP_PROPERTY_PREFIX: Final = "iothub-app-"
# IoT Hub's HTTP API: standard headers for content type and encoding (the iothub- forms win
# when both are sent), iothub- headers for the other system properties.
_SYSTEM_HEADERS: Final = (
    ("Content-Type", SystemProperty.CONTENT_TYPE),
    ("iothub-contenttype", SystemProperty.CONTENT_TYPE),
    ("Content-Encoding", SystemProperty.CONTENT_ENCODING),
    ("iothub-contentencoding", SystemProperty.CONTENT_ENCODING),
    ("iothub-messageid", SystemProperty.MESSAGE_ID),
    ("iothub-correlationid", SystemProperty.CORRELATION_ID),
)


class MalformedRequestError(ValueError):
    """The request cannot become a message (a 400)."""


class TelemetryApi:
    """The REST telemetry route of the HTTP head."""

    def __init__(
        self, hub: HubPort, authenticator: HttpAuthenticator, *, max_message_size: int,
        max_in_flight: int = MAX_IN_FLIGHT_INGESTS,
    ) -> None:
        self._hub = hub
        self._auth = authenticator
        self._max_message_size = max_message_size
        self._max_in_flight = max_in_flight
        self.in_flight = 0

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        device, module = request.match_info["device"], request.match_info.get("module")
        if not device or module == "":
            return json_error(400, "device and module ids must not be empty")
        target = Identity(device, module)
        try:
            caller = self._auth.authenticate(request.headers.get("Authorization"))
        except AuthError as exc:
            return json_error(401, f"unauthorized: {exc}")
        if not may_publish(caller, f"{identity_topic(target)}/messages/events/"):
            return json_error(403, f"{caller} may not send telemetry as {target}")
        length = request.content_length
        if length is not None and length > self._max_message_size:
            return _too_large(self._max_message_size)
        if self.in_flight >= self._max_in_flight:
            return json_error(429, f"{self._max_in_flight} REST messages are already waiting for the store",
                              headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            return await self._ingest(request, target)
        finally:
            self.in_flight -= 1

    async def _ingest(self, request: web.Request, target: Identity) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self._max_message_size)
        if len(body) > self._max_message_size:
            return _too_large(self._max_message_size)
        try:
            message = to_message(request, target, body)
        except MalformedRequestError as exc:
            return json_error(400, str(exc))
        try:
            await self._hub.ingest([message])
        except StoreFullError as exc:
            record_unacked("store_full", [message])
            _store_full_line("HTTP telemetry of %s refused: store full (%s)", shown(target), exc)
            return json_error(507, "the store is full (storeLimits.maxSizeBytes); nothing was stored")
        record_received([message])
        return web.Response(status=204)


def to_message(request: web.BaseRequest, sender: Identity, body: bytes) -> Message:
    """The message a REST request carries; MalformedRequestError for an unusable header."""
    properties: dict[str, str] = {}
    for name, value in request.headers.items():
        # Header names are case-insensitive (RFC 9110 §5.1; clients and HTTP/2 change their
        # case), so property names arrive lowercased: ``iothub-app-Color`` is ``color``.
        lowered = name.lower()
        if lowered.startswith(APP_PROPERTY_PREFIX):
            key = lowered[len(APP_PROPERTY_PREFIX):]
            if not key:
                raise MalformedRequestError(f"header {name!r} names no application property")
            properties[key] = value
    system: dict[str, str] = {}
    for header, system_name in _SYSTEM_HEADERS:
        sent = request.headers.get(header)
        if sent is not None:
            if not sent:
                raise MalformedRequestError(f"header {header} is empty")
            system[system_name] = sent
    system[SystemProperty.CONNECTION_DEVICE_ID] = sender.device_id
    if sender.module_id:
        system[SystemProperty.CONNECTION_MODULE_ID] = sender.module_id
    return Message(body, MappingProxyType(properties), MappingProxyType(system))


def _too_large(limit: int) -> web.Response:
    return json_error(413, f"message body over maxMessageSizeBytes ({limit} bytes)")

"""edgeHub's HTTP API for direct methods: ``POST /twins/{d}/methods`` and
``POST /twins/{d}/modules/{m}/methods`` (the Azure SDKs' ``invoke_method`` of a module client).

Owns request parsing, caller authorization and the response mapping; the call itself is the
MethodPort's (edgehub.twins.port). Without a MethodPort every valid call answers 501.

Body ``{methodName, payload, responseTimeoutInSeconds, connectTimeoutInSeconds}`` (edgeHub's
defaults 30 and 0; IoT Hub's limit 300 s for both). The caller is the identity of the SAS
token in ``Authorization``; ``x-ms-edge-moduleId``, which the SDKs send, must name the same
module. Only modules of this edge device may call (edgeHub: "Only modules on the same device
can invoke DirectMethods"; it answers 401 there, we 403 since the caller did authenticate).
Answers: 200 ``{"status": s, "payload": …}`` when the target answered (whatever its status),
else ``{"status", "message"}`` with 400, 401, 403, 404 (target absent), 413 (payload over
128 KiB), 501 or 504 (no answer in time).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from edgehub.errors import AuthError
from edgehub.heads.http.auth import HttpAuthenticator
from edgehub.heads.http.responses import json_error, json_response
from edgehub.message import Identity
from edgehub.twins.port import MAX_METHOD_PAYLOAD_BYTES, MethodError, MethodPort

DEFAULT_RESPONSE_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 0.0
MAX_TIMEOUT: Final = 300.0
MODULE_ID_HEADER: Final = "x-ms-edge-moduleId"
MAX_REQUEST_BYTES: Final = MAX_METHOD_PAYLOAD_BYTES + 16 * 1024
"""The payload limit plus room for the method name, timeouts and JSON punctuation."""


class BadMethodRequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class MethodCall:
    name: str
    payload: bytes
    response_timeout: float
    connect_timeout: float


def parse_method_call(body: bytes) -> MethodCall:
    """The call a request body asks for; BadMethodRequestError (400 or 413) otherwise."""
    if len(body) > MAX_REQUEST_BYTES:
        raise BadMethodRequestError(413, f"request over {MAX_REQUEST_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadMethodRequestError(400, "body is not JSON") from None
    if not isinstance(document, dict):
        raise BadMethodRequestError(400, "body is not a JSON object")
    name = document.get("methodName")
    if not isinstance(name, str) or not name.strip():
        raise BadMethodRequestError(400, "methodName must be a non-empty string")
    payload = json.dumps(document.get("payload"), separators=(",", ":")).encode()
    if len(payload) > MAX_METHOD_PAYLOAD_BYTES:
        raise BadMethodRequestError(413, f"payload over {MAX_METHOD_PAYLOAD_BYTES} bytes (IoT Hub's 128 KiB)")
    return MethodCall(
        name, payload,
        _timeout(document, "responseTimeoutInSeconds", DEFAULT_RESPONSE_TIMEOUT),
        _timeout(document, "connectTimeoutInSeconds", DEFAULT_CONNECT_TIMEOUT),
    )


def _timeout(document: dict[str, Any], key: str, default: float) -> float:
    value = document.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= MAX_TIMEOUT:
        raise BadMethodRequestError(400, f"{key} must be a number of seconds from 0 to {MAX_TIMEOUT:g}")
    return float(value)


def response_payload(payload: bytes) -> Any:
    """The target's payload as JSON for the answer; text that is not JSON stays a string."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload.decode("utf-8", "replace")


class MethodApi:
    """The direct-method routes of the HTTP head."""

    def __init__(
        self, methods: MethodPort | None, authenticator: HttpAuthenticator, *, edge_device_id: str,
    ) -> None:
        self._methods = methods
        self._auth = authenticator
        self._edge_device_id = edge_device_id

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        device, module = request.match_info["device"], request.match_info.get("module")
        target = Identity(device, module)
        try:
            caller = self._auth.authenticate(request.headers.get("Authorization"))
        except AuthError as exc:
            return json_error(401, f"unauthorized: {exc}")
        refusal = self._refusal(caller, request.headers.get(MODULE_ID_HEADER))
        if refusal is not None:
            return json_error(403, refusal)
        length = request.content_length
        if length is not None and length > MAX_REQUEST_BYTES:
            return json_error(413, f"request over {MAX_REQUEST_BYTES} bytes")
        try:
            call = parse_method_call(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"request over {MAX_REQUEST_BYTES} bytes")
        except BadMethodRequestError as exc:
            return json_error(exc.status, str(exc))
        if self._methods is None:
            return json_error(501, "direct methods are not available in this version of the hub")
        return await self._call(self._methods, caller, target, call)

    def _refusal(self, caller: Identity, header: str | None) -> str | None:
        if header is not None and header != caller.id:
            return f"{MODULE_ID_HEADER} is {header!r} but the token is {caller}'s"
        if caller.module_id is None or caller.device_id != self._edge_device_id:
            return "only modules of this edge device may invoke direct methods"
        return None

    async def _call(
        self, methods: MethodPort, caller: Identity, target: Identity, call: MethodCall
    ) -> web.StreamResponse:
        try:
            # The MethodPort counts edgehub_direct_methods_total and its duration (from, to).
            answer = await methods.invoke(
                target, call.name, call.payload, connect_timeout=call.connect_timeout,
                response_timeout=call.response_timeout, caller=caller,
            )
        except MethodError as exc:
            return json_error(exc.status, exc.reason)
        return json_response(200, {"status": answer.status, "payload": response_payload(answer.payload)})

"""The aiohttp applications of the HTTP head: the HTTPS one and the plain one on the metrics port.

Routes only (path → handler); the handlers live in websocket.py, methods.py, telemetry.py
and the probe answers in edgehub.status. No state and no listening here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from edgehub.heads.http.methods import MAX_REQUEST_BYTES, MethodApi
from edgehub.heads.http.telemetry import TelemetryApi
from edgehub.heads.http.websocket import WebSocketApi
from edgehub.status import StatusSource, answer

WEBSOCKET_PATH = "/$iothub/websocket"
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "access_log": None}
"""aiohttp server options of every site. auto_decompress off: a body's Content-Encoding is the
message's contentEncoding, for its consumer to decode, never the hub's."""


def probe_handler(source: StatusSource) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def probe(request: web.Request) -> web.StreamResponse:
        status, content_type, body = answer(request.path, source)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    return probe


def https_app(
    *, websocket: WebSocketApi, telemetry: TelemetryApi, methods: MethodApi, status: StatusSource,
    max_message_size: int,
) -> web.Application:
    """REST, WebSocket and the probes (/health, /ready, /stats) on the TLS port."""
    app = web.Application(client_max_size=max(max_message_size, MAX_REQUEST_BYTES) + 1)
    probe = probe_handler(status)
    app.router.add_get(WEBSOCKET_PATH, websocket.handle)
    app.router.add_post("/devices/{device}/messages/events", telemetry.post_events)
    app.router.add_post("/devices/{device}/modules/{module}/messages/events", telemetry.post_events)
    app.router.add_post("/twins/{device}/methods", methods.invoke)
    app.router.add_post("/twins/{device}/modules/{module}/methods", methods.invoke)
    for path in ("/health", "/ready", "/stats"):
        app.router.add_get(path, probe)
    return app


def metrics_app(status: StatusSource) -> web.Application:
    """/metrics, /health, /ready and /stats in plain HTTP: probes need no client certificate."""
    app = web.Application()
    probe = probe_handler(status)
    for path in ("/metrics", "/health", "/ready", "/stats"):
        app.router.add_get(path, probe)
    return app

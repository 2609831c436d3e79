"""``GET /$iothub/websocket``: picks the subprotocol and hands the socket to its protocol head.

Owns the upgrade and the set of open WebSocket sessions (so the head can end them on stop);
``mqtt`` runs on the MQTT head's own MqttServer through WebSocketTransport, ``AMQPWSB10``
goes to the AMQP head's handler when there is one. It never speaks MQTT or AMQP itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import WSCloseCode, web

from edgehub.heads.http.responses import json_error
from edgehub.heads.http.ws_transport import WebSocketTransport
from edgehub.heads.mqtt.connection import MqttConnection
from edgehub.heads.mqtt.server import MqttServer

MQTT: Final = "mqtt"
AMQP: Final = "AMQPWSB10"
"""The subprotocols IoT Hub and edgeHub accept on /$iothub/websocket."""
AMQP_UNAVAILABLE: Final = b"AMQP over WebSocket (AMQPWSB10) is not available: the AMQP head is not enabled"
MQTT_UNAVAILABLE: Final = b"MQTT over WebSocket is not available now (the hub is stopping)"
STOP_GRACE: Final = 5.0
"""Seconds ``close`` waits for WebSocket sessions to end before aiohttp cancels them."""

AmqpWebSocketHandler = Callable[[web.WebSocketResponse, web.Request], Awaitable[None]]
"""What the AMQP head offers for ``AMQPWSB10``: run the AMQP connection on a prepared socket."""


class WebSocketApi:
    """The WebSocket route; MQTT limits (frame size = the MQTT head's pending-bytes bound)."""

    def __init__(
        self, mqtt: Callable[[], MqttServer | None], amqp: AmqpWebSocketHandler | None = None,
    ) -> None:
        self._mqtt = mqtt
        self._amqp = amqp
        self._open: set[WebSocketTransport] = set()
        self._done = asyncio.Event()
        self._done.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if MQTT not in offered and AMQP not in offered:
            return json_error(400, f"Sec-WebSocket-Protocol must offer {MQTT} or {AMQP}")
        server = self._mqtt()
        max_frame = server.limits.max_pending_bytes if server is not None else 4 * 1024 * 1024
        ws = web.WebSocketResponse(protocols=(MQTT, AMQP), compress=False, max_msg_size=max_frame)
        await ws.prepare(request)
        if ws.ws_protocol == AMQP:
            if self._amqp is None:
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=AMQP_UNAVAILABLE)
            else:
                await self._amqp(ws, request)
            return ws
        if server is None or server.closing:
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=MQTT_UNAVAILABLE)
            return ws
        transport = WebSocketTransport(ws, request)
        self._open.add(transport)
        self._done.clear()
        try:
            await transport.run(server.new_connection())
        finally:
            self._open.discard(transport)
            if not self._open:
                self._done.set()
        return ws

    async def close(self) -> None:
        """End every WebSocket session as the MQTT head ends its own (MQTT 5: DISCONNECT 0x8B)."""
        for transport in list(self._open):
            protocol = transport.get_protocol()
            if isinstance(protocol, MqttConnection) and protocol.session is not None:
                protocol.end(protocol.session.shut_down())
            transport.close()
        try:
            await asyncio.wait_for(self._done.wait(), STOP_GRACE)
        except TimeoutError:
            for transport in list(self._open):
                transport.abort()

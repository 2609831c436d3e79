"""AMQP over WebSocket (subprotocol ``AMQPWSB10``): one AMQP connection on a WebSocket the HTTP head prepared.

Glue only: the byte stream rides binary frames through the HTTP head's WebSocketTransport, the
same transport MQTT over WebSocket uses (AMQP WebSocket Binding 1.0 §2: binary messages carry
the AMQP byte stream, a message may hold any part of it); the connection is the TLS port's.
"""

from __future__ import annotations

from aiohttp import WSCloseCode, web

from edgehub.heads.amqp.server import AmqpServer
from edgehub.heads.http.ws_transport import WebSocketTransport


async def run_websocket(server: AmqpServer | None, ws: web.WebSocketResponse, request: web.Request) -> None:
    if server is None or server.closing:
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"the AMQP head is not running")
        return
    transport = WebSocketTransport(ws, request)
    await transport.run(server.new_connection())

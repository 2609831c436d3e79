"""The AMQP head as the hub starts it: the AMQPS port, the WebSocket handler, auth wiring.

Lifecycle only; the protocol lives in connection.py (sans-I/O) and the glue in server.py. proton
is imported only through this package, so a hub with ``amqpSettings__enabled=false`` never loads it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgehub.clock import Clock
from edgehub.heads.amqp.auth import AmqpAuthenticator
from edgehub.heads.amqp.connection import AmqpLimits
from edgehub.heads.amqp.server import AmqpServer
from edgehub.heads.port import HubPort
from edgehub.twins.port import (
    ClientPresence,
    MethodPort,
    NoPresence,
    TwinPort,
    UnavailableMethods,
    UnavailableTwins,
)

if TYPE_CHECKING:  # aiohttp is loaded only with the HTTP head, which calls handle_websocket
    from aiohttp import web


@dataclass(frozen=True, slots=True)
class AmqpHeadConfig:
    host: str
    port: int
    max_message_size: int
    low_memory: bool = False


class AmqpHead:
    """Implements edgehub.plugins.Head for AMQP 1.0 with IoT Hub's link addresses."""

    name = "amqp"

    def __init__(
        self, config: AmqpHeadConfig, auth: AmqpAuthenticator, ssl_context: ssl.SSLContext, clock: Clock,
        *, twins: TwinPort | None = None, methods: MethodPort | None = None,
        presence: ClientPresence | None = None,
    ) -> None:
        self.config = config
        self._auth = auth
        self._ssl = ssl_context
        self._clock = clock
        self._twins = twins or UnavailableTwins()
        self._methods = methods or UnavailableMethods()
        self._presence = presence or NoPresence()
        self._server: AmqpServer | None = None

    async def start(self, hub: HubPort) -> list[str]:
        config = self.config
        # Low-memory mode: a smaller credit window per link (docs/architecture.md §6).
        limits = AmqpLimits(max_message_size=config.max_message_size,
                            link_credit=20 if config.low_memory else 100,
                            edge_hub_link_credit=200 if config.low_memory else 1000)
        server = AmqpServer(hub, self._auth, limits=limits, clock=self._clock, twins=self._twins,
                            methods=self._methods, presence=self._presence)
        port = await server.listen(config.host, config.port, self._ssl)
        self._server = server
        return [f"amqp: amqps://{config.host}:{port} (TLS; AMQPWSB10 on the HTTPS port's /$iothub/websocket)"]

    @property
    def server(self) -> AmqpServer | None:
        return self._server

    @property
    def bound(self) -> bool:
        return self._server is not None and not self._server.closing

    async def handle_websocket(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """The HTTP head's AMQPWSB10 hook: run one AMQP connection over the prepared WebSocket."""
        from edgehub.heads.amqp.websocket import run_websocket

        await run_websocket(self._server, ws, request)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

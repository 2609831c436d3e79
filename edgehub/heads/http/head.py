"""The HTTP head as the hub starts it: the HTTPS site on ``httpSettings__port`` and the plain
site on ``Metrics__Listener__Port``, both served by one aiohttp runner each.

Lifecycle only (setup, start, stop in reverse, a failed start undone); routes are in app.py.
MQTT over WebSocket runs on the MQTT head's server; with the MQTT head disabled this head
starts a listener-less one of its own, so WebSocket clients still connect.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from aiohttp import web

from edgehub.clock import Clock
from edgehub.heads.http.app import SERVER_OPTIONS, WEBSOCKET_PATH, https_app, metrics_app
from edgehub.heads.http.auth import HttpAuthenticator
from edgehub.heads.http.methods import MethodApi
from edgehub.heads.http.telemetry import MAX_IN_FLIGHT_INGESTS, TelemetryApi
from edgehub.heads.http.websocket import AmqpWebSocketHandler, WebSocketApi
from edgehub.heads.mqtt.head import MqttHead
from edgehub.heads.port import HubPort
from edgehub.status import StatusSource
from edgehub.twins.port import MethodPort

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 5.0
"""Seconds aiohttp waits for open requests at stop (its default is 60)."""


@dataclass(frozen=True, slots=True)
class HttpHeadConfig:
    host: str
    port: int
    metrics_port: int
    """0: no plain site (the metrics port is off)."""
    max_message_size: int
    edge_device_id: str
    max_in_flight_ingests: int = MAX_IN_FLIGHT_INGESTS


class HttpHead:
    """Implements edgehub.plugins.Head for HTTPS (REST, methods, WebSocket) and the metrics port."""

    name = "http"

    def __init__(
        self, config: HttpHeadConfig, *, authenticator: HttpAuthenticator, ssl_context: ssl.SSLContext,
        status: StatusSource, mqtt: MqttHead, owns_mqtt: bool, clock: Clock,
        methods: MethodPort | None = None, amqp_websocket: AmqpWebSocketHandler | None = None,
    ) -> None:
        self.config = config
        self._auth = authenticator
        self._ssl = ssl_context
        self._status = status
        self._mqtt = mqtt
        self._owns_mqtt = owns_mqtt
        self._clock = clock
        self._methods = methods
        self._websocket = WebSocketApi(lambda: mqtt.server, amqp_websocket)
        self._runners: list[web.AppRunner] = []
        self.telemetry: TelemetryApi | None = None
        self.port = 0
        self.metrics_port = 0

    @property
    def bound(self) -> bool:
        return self.port != 0

    async def start(self, hub: HubPort) -> list[str]:
        config = self.config
        try:
            if self._owns_mqtt:
                await self._mqtt.start(hub)
            self.telemetry = TelemetryApi(hub, self._auth, max_message_size=config.max_message_size,
                                          max_in_flight=config.max_in_flight_ingests)
            methods = MethodApi(self._methods, self._auth, edge_device_id=config.edge_device_id)
            app = https_app(websocket=self._websocket, telemetry=self.telemetry, methods=methods,
                            status=self._status, max_message_size=config.max_message_size)
            self.port = await self._serve(app, config.host, config.port, self._ssl)
            lines = [f"http: https://{config.host}:{self.port} (REST, direct methods, "
                     f"WebSocket {WEBSOCKET_PATH}: mqtt)"]
            if config.metrics_port:
                self.metrics_port = await self._serve(metrics_app(self._status), config.host,
                                                      config.metrics_port, None)
                lines.append(f"metrics: http://{config.host}:{self.metrics_port}/metrics "
                             "(also /health, /ready, /stats)")
        except BaseException:
            await self.stop()
            raise
        log.info("HTTP head listening on %s:%d (TLS)", config.host, self.port)
        return lines

    async def _serve(self, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, **SERVER_OPTIONS)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_address=True,
                           shutdown_timeout=SHUTDOWN_TIMEOUT)
        await site.start()
        bound: int = runner.addresses[-1][1]
        return bound

    async def stop(self) -> None:
        """WebSocket sessions first (as the MQTT head ends its own), then the sites; idempotent."""
        await self._websocket.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        self.port = self.metrics_port = 0
        if self._owns_mqtt:
            await self._mqtt.stop()

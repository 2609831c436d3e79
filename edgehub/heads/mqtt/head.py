"""The MQTT head as the hub starts it: TLS port, optional plaintext port, auth wiring.

Lifecycle only; the protocol lives in edgehub.mqtt and session.py, the glue in server.py.
With ``tcp=False`` it binds nothing and only serves MQTT over WebSocket for the HTTP head
(``mqttSettings__enabled=false`` with the HTTP head on).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final

from edgehub.clock import Clock
from edgehub.heads.credentials import RegistryAuthenticator
from edgehub.heads.mqtt.policy import SessionConfig
from edgehub.heads.mqtt.server import MqttServer, start_mqtt_server
from edgehub.heads.mqtt.sessions import SessionStore
from edgehub.heads.port import HubPort
from edgehub.twins.port import ClientPresence, MethodPort, TwinPort

LOOPBACK: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class MqttHeadConfig:
    host: str
    tls_port: int
    plain_port: int
    max_message_size: int
    max_connected_clients: int
    low_memory: bool = False
    tcp: bool = True
    """False: no TCP listener, only connections the HTTP head hands over (WebSocket)."""


class MqttHead:
    """Implements edgehub.plugins.Head for MQTT 3.1.1/5 with the IoT Hub topic scheme."""

    name = "mqtt"

    def __init__(
        self, config: MqttHeadConfig, auth: RegistryAuthenticator, ssl_context: ssl.SSLContext, clock: Clock,
        *, twins: TwinPort | None = None, methods: MethodPort | None = None,
        presence: ClientPresence | None = None, sessions: SessionStore | None = None,
    ) -> None:
        self.config = config
        self._sessions = sessions
        """Where persistent sessions outlive the process (None: memory only)."""
        self._twins = twins
        self._methods = methods
        self._presence = presence
        self._auth = auth
        self._ssl = ssl_context
        self._clock = clock
        self._server: MqttServer | None = None

    async def start(self, hub: HubPort) -> list[str]:
        config = self.config
        # Low-memory mode: smaller in-flight windows per connection (docs/architecture.md §6).
        session = (
            SessionConfig(receive_maximum=128, outbound_window=32) if config.low_memory else SessionConfig()
        )
        server = await start_mqtt_server(
            hub, self._auth, authorizer=self._auth, host=config.host, port=config.tls_port,
            ssl_context=self._ssl, max_message_size=config.max_message_size,
            max_connected_clients=config.max_connected_clients, clock=self._clock, session_config=session,
            twins=self._twins, methods=self._methods, presence=self._presence, listen=config.tcp,
            sessions=self._sessions,
        )
        self._server = server
        if not config.tcp:
            return []
        lines = [f"mqtt: mqtts://{config.host}:{server.port} (TLS)"]
        if config.plain_port:
            # Plaintext only on loopback (docs/architecture.md §4: "plaintext port for loopback/dev").
            await server.listen(LOOPBACK, config.plain_port, None)
            lines.append(f"mqtt: mqtt://{LOOPBACK}:{config.plain_port} (plaintext, loopback only)")
        return lines

    @property
    def server(self) -> MqttServer | None:
        """The running server (its connections, limits, sessions); None before start, after stop."""
        return self._server

    @property
    def bound(self) -> bool:
        return self._server is not None and not self._server.closing

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

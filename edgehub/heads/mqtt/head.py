"""The MQTT head as the hub starts it: TLS port, optional plaintext port, auth wiring.

Lifecycle only; the protocol lives in edgehub.mqtt and session.py, the glue in server.py.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final

from edgehub.clock import Clock
from edgehub.heads.credentials import RegistryAuthenticator
from edgehub.heads.mqtt.policy import SessionConfig
from edgehub.heads.mqtt.server import MqttServer, start_mqtt_server
from edgehub.heads.port import HubPort

LOOPBACK: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class MqttHeadConfig:
    host: str
    tls_port: int
    plain_port: int
    max_message_size: int
    max_connected_clients: int
    low_memory: bool = False


class MqttHead:
    """Implements edgehub.plugins.Head for MQTT 3.1.1/5 with the IoT Hub topic scheme."""

    name = "mqtt"

    def __init__(
        self, config: MqttHeadConfig, auth: RegistryAuthenticator, ssl_context: ssl.SSLContext, clock: Clock
    ) -> None:
        self.config = config
        self._auth = auth
        self._ssl = ssl_context
        self._clock = clock
        self._server: MqttServer | None = None

    async def start(self, hub: HubPort) -> list[str]:
        config = self.config
        # Low-memory mode: smaller in-flight windows per connection (DESIGN §6).
        session = (
            SessionConfig(receive_maximum=128, outbound_window=32) if config.low_memory else SessionConfig()
        )
        server = await start_mqtt_server(
            hub, self._auth, authorizer=self._auth, host=config.host, port=config.tls_port,
            ssl_context=self._ssl, max_message_size=config.max_message_size,
            max_connected_clients=config.max_connected_clients, clock=self._clock, session_config=session,
        )
        self._server = server
        lines = [f"mqtt: mqtts://{config.host}:{server.port} (TLS)"]
        if config.plain_port:
            # Plaintext only on loopback (DESIGN §4: "plaintext port for loopback/dev").
            await server.listen(LOOPBACK, config.plain_port, None)
            lines.append(f"mqtt: mqtt://{LOOPBACK}:{config.plain_port} (plaintext, loopback only)")
        return lines

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

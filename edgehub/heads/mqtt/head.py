"""The MQTT head as the hub starts it: TLS port, optional plaintext port, auth wiring.

Lifecycle only; the protocol lives in edgehub.mqtt and session.py, the glue in server.py.
With ``tcp=False`` it binds nothing and only serves MQTT over WebSocket for the HTTP head
(``mqttSettings__enabled=false`` with the HTTP head on).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from edgehub.clock import Clock
from edgehub.heads.credentials import RegistryAuthenticator
from edgehub.heads.mqtt.generic_auth import AnonymousAuthenticator, NoAnonymousIotHub
from edgehub.heads.mqtt.policy import Authenticator, Authorizer, SessionConfig
from edgehub.heads.mqtt.server import MqttServer, start_mqtt_server
from edgehub.heads.mqtt.sessions import SessionStore
from edgehub.heads.port import HubPort
from edgehub.twins.port import ClientPresence, MethodPort, TwinPort

LOOPBACK: Final = "127.0.0.1"
if TYPE_CHECKING:  # generic topics (edgehub.broker) are loaded only with mqttSettings__genericTopics
    from edgehub.heads.mqtt.generic import GenericTopics

log = logging.getLogger(__name__)


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
        generic: GenericTopics | None = None, allow_anonymous: bool = False,
    ) -> None:
        self.config = config
        self._generic = generic
        """Plain MQTT topics (mqttSettings__genericTopics); None: IoT Hub topics only."""
        self._allow_anonymous = allow_anonymous
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
        authenticator: Authenticator = self._auth
        authorizer: Authorizer = self._auth
        if self._generic is not None:
            restored = self._generic.broker.restore(self._generic.wall_time())
            log.info("MQTT generic broker: %d persistent sessions, %d retained messages restored",
                     restored, self._generic.broker.retained_count)
            authenticator = AnonymousAuthenticator(self._auth, allow_anonymous=self._allow_anonymous)
            authorizer = NoAnonymousIotHub(self._auth)
        server = await start_mqtt_server(
            hub, authenticator, authorizer=authorizer, host=config.host, port=config.tls_port,
            ssl_context=self._ssl, max_message_size=config.max_message_size,
            max_connected_clients=config.max_connected_clients, clock=self._clock, session_config=session,
            twins=self._twins, methods=self._methods, presence=self._presence, listen=config.tcp,
            sessions=self._sessions, generic=self._generic,
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

"""A paho-mqtt 2.x client playing one identity against a Deployment, stepped from the test thread.

Test support only: no network thread and no automatic reconnect (paho's loop_start would retry
a refused CONNECT), so every wait is an explicit, bounded loop over the peers' sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgehub.message import Identity
from tests.conformance.deployment import Deployment

BOUND: Final = 10.0
"""Seconds any single expected outcome may take before the test fails."""
_STEP: Final = 0.02
SESSION_EXPIRY_SECS: Final = 600


@dataclass
class PahoPeer:
    deployment: Deployment
    identity: Identity
    protocol: MQTTProtocolVersion
    password: str | None = None
    persistent: bool = False
    """Keep the session: 3.1.1 Clean Session 0; MQTT 5 Clean Start 0 with a Session Expiry Interval."""
    websocket_port: int | None = None
    """Dial MQTT over WebSocket (TLS, /$iothub/websocket) on this HTTPS port instead of MQTT over TLS."""
    client: mqtt.Client = field(init=False)
    connack: ReasonCode | None = field(default=None, init=False)
    session_present: bool | None = field(default=None, init=False)
    disconnect_reason: ReasonCode | None = field(default=None, init=False)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict, init=False)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict, init=False)
    received: list[mqtt.MQTTMessage] = field(default_factory=list, init=False)
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        v5 = self.protocol == MQTTProtocolVersion.MQTTv5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.identity.id, protocol=self.protocol,
            clean_session=None if v5 else not self.persistent,
            transport="websockets" if self.websocket_port else "tcp",
        )
        if self.websocket_port:
            client.ws_set_options(path="/$iothub/websocket")
        client.username_pw_set(
            self.deployment.username(self.identity), self.password or self.deployment.password(self.identity)
        )
        client.tls_set(ca_certs=str(self.deployment.ca_file))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    @property
    def v5(self) -> bool:
        return self.protocol == MQTTProtocolVersion.MQTTv5

    @property
    def disconnected(self) -> bool:
        return self.disconnect_reason is not None

    # --- paho callbacks (VERSION2 signatures) ---------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self.connack = reason
        self.session_present = flags.session_present

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Properties | None) -> None:
        self.disconnect_reason = reason

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self.pubacks[mid] = reason

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        self.subacks[mid] = reasons

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.received.append(message)

    # --- actions ----------------------------------------------------------------------------------

    def connect(self) -> ReasonCode:
        """Dial the hub over TLS and wait for the CONNACK (or for the connection to close)."""
        kwargs: dict[str, Any] = {}
        if self.v5:
            kwargs["clean_start"] = not self.persistent
            if self.persistent:
                kwargs["properties"] = connect_properties(session_expiry_interval=SESSION_EXPIRY_SECS)
        port = self.websocket_port or self.deployment.tls_port
        self.client.connect(self.deployment.host, port, keepalive=30, **kwargs)
        wait_until([self], lambda: self.connack is not None or self.disconnected, "CONNACK")
        assert self.connack is not None, f"{self.identity}: connection closed before CONNACK"
        return self.connack

    def connected(self) -> PahoPeer:
        """Connect and require success."""
        reason = self.connect()
        assert not reason.is_failure, f"{self.identity} refused: {reason}"
        return self

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> int:
        """Publish at QoS 1 without waiting; returns the packet id to wait on."""
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        return info.mid

    def publish_acked(self, topic: str, payload: bytes, properties: Properties | None = None) -> ReasonCode:
        """Publish at QoS 1 and wait for its PUBACK reason code."""
        mid = self.publish(topic, payload, properties)
        wait_until([self], lambda: mid in self.pubacks, f"PUBACK of {topic}")
        return self.pubacks[mid]

    def subscribe(self, topic_filter: str) -> list[ReasonCode]:
        result, mid = self.client.subscribe(topic_filter, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS, result
        assert mid is not None
        wait_until([self], lambda: mid in self.subacks, f"SUBACK of {topic_filter}")
        return self.subacks[mid]

    def subscribed(self, topic_filter: str) -> PahoPeer:
        reasons = self.subscribe(topic_filter)
        assert [r.value for r in reasons] == [1], f"{self.identity} subscription refused: {reasons}"
        return self

    def close(self) -> None:
        """DISCONNECT (if still connected) and wait until the socket is closed."""
        if self._closed:
            return
        self._closed = True
        if self.client.socket() is not None and not self.disconnected:
            self.client.disconnect()
            wait_until([self], lambda: self.disconnected or self.client.socket() is None, "disconnect")

    def step(self) -> None:
        if self.client.socket() is not None:
            self.client.loop(timeout=_STEP)

    def __enter__(self) -> PahoPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_properties(session_expiry_interval: int) -> Properties:
    """MQTT 5 CONNECT properties."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
    properties.SessionExpiryInterval = session_expiry_interval
    return properties


def publish_properties(content_type: str, correlation_data: bytes,
                       user_properties: list[tuple[str, str]]) -> Properties:
    """MQTT 5 PUBLISH properties."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
    properties.ContentType = content_type
    properties.CorrelationData = correlation_data
    properties.UserProperty = user_properties
    return properties


def received_property(message: mqtt.MQTTMessage, name: str) -> object:
    """An MQTT 5 property of a received message (None when absent or under MQTT 3.1.1)."""
    return getattr(message.properties, name, None)


def wait_until(peers: Iterable[PahoPeer], condition: Callable[[], bool], what: str,
               timeout: float = BOUND) -> None:
    """Step every peer's network loop until ``condition`` holds; fail after ``timeout`` seconds."""
    peers = list(peers)
    deadline = time.monotonic() + timeout
    while not condition():
        live = [peer for peer in peers if peer.client.socket() is not None]
        if not live or time.monotonic() > deadline:
            closed = {str(p.identity): str(p.disconnect_reason) for p in peers if p.disconnected}
            why = "every connection is closed" if not live else f"not within {timeout}s"
            raise AssertionError(f"{what}: {why} (closed: {closed or 'none'})")
        for peer in live:
            peer.step()


def wait_for_messages(
    receiver: PahoPeer, count: int, *, others: Iterable[PahoPeer] = (),
) -> list[mqtt.MQTTMessage]:
    """Exactly the first ``count`` messages ``receiver`` gets (stepping ``others`` meanwhile)."""
    wait_until([receiver, *others], lambda: len(receiver.received) >= count,
               f"{count} message(s) at {receiver.identity}")
    return receiver.received[:count]

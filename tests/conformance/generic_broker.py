"""Test support for the generic broker conformance tests: a hub with mqttSettings__genericTopics
on (anonymous clients allowed, an ACL, a route from /topics), and paho clients that record what
they receive, with bounded waits instead of sleeps."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.hubproc import HubProcess, free_port

WAIT: Final = 10.0
VERSIONS: Final = {"311": mqtt.MQTTv311, "5": mqtt.MQTTv5}

ACL: Final = [
    {"deny": "all", "identity": "*", "topic": "secret/#"},
    {"allow": "publish", "identity": "*", "topic": "clients/%c/#"},
    {"deny": "publish", "identity": "*", "topic": "clients/#"},
    {"allow": "all", "identity": "*", "topic": "#"},
]


def properties_of(packet_type: int) -> Properties:
    """paho MQTT 5 properties for one packet type."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it unannotated


@dataclass
class Broker:
    """A running hub in generic mode, on a loopback plaintext port."""

    hub: HubProcess
    port: int

    def restart(self, *, kill: bool = False) -> None:
        code = self.hub.stop(signal.SIGKILL if kill else signal.SIGTERM)
        assert code == (-9 if kill else 0), self.hub.output
        self.hub.process = None
        self.hub.start()


@contextmanager
def run_broker(folder: Path, *, routes: Mapping[str, str] | None = None,
               identities: Sequence[Mapping[str, str]] = (), acl: Sequence[object] = ACL,
               env: Mapping[str, str] | None = None) -> Iterator[Broker]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(json.dumps({
        "schemaVersion": "1.1", "routes": dict(routes or {}), "identities": list(identities),
        "acl": list(acl),
    }))
    port = free_port()
    hub = HubProcess(folder, config, env={
        "mqttSettings__genericTopics": "true", "mqttSettings__allowAnonymous": "true",
        "mqttSettings__plainPort": str(port), "mqttSettings__port": str(free_port()),
        "EdgeDeviceId": "edge", "IotHubHostName": "hub.local",
    } | dict(env or {}))
    hub.start()
    try:
        yield Broker(hub, port)
    finally:
        code = hub.stop()
    assert code == 0, hub.output
    assert " ERROR " not in hub.output, hub.output
    assert "Traceback" not in hub.output, hub.output


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any = None


@dataclass
class Client:
    """A paho client (v3.1.1 or v5) that records messages and SUBACK codes."""

    paho: mqtt.Client
    version: int
    messages: list[Received] = field(default_factory=list)
    granted: list[list[int]] = field(default_factory=list)
    connack: list[tuple[bool, int, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, what: Callable[[], bool], timeout: float = WAIT) -> None:
        with self._changed:
            assert self._changed.wait_for(what, timeout), "timed out"

    def wait_messages(self, count: int, timeout: float = WAIT) -> list[Received]:
        self.wait_for(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)

    def subscribe(self, *filters: tuple[str, int], properties: Properties | None = None,
                  options: Any = None) -> list[int]:
        before = len(self.granted)
        if self.version == mqtt.MQTTv5:
            subs = [(f, options or SubscribeOptions(qos=q)) for f, q in filters]
            self.paho.subscribe(subs, properties=properties)
        else:
            self.paho.subscribe(list(filters))
        self.wait_for(lambda: len(self.granted) > before)
        return self.granted[before]

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> None:
        info = self.paho.publish(topic, payload, qos, retain, properties=properties)
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def stop(self, *, graceful: bool = True) -> None:
        if graceful:
            self.paho.disconnect()
        else:
            sock = self.paho.socket()
            if sock is not None:
                sock.close()  # no DISCONNECT: the will is due
        self.paho.loop_stop()

    def _on_message(self, _c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(Received(m.topic, bytes(m.payload), m.qos, bool(m.retain),
                                          getattr(m, "properties", None)))
            self._changed.notify_all()

    def _on_subscribe(self, _c: object, _u: object, _mid: int, codes: list[Any], _p: object) -> None:
        with self._changed:
            self.granted.append([int(getattr(c, "value", c)) for c in codes])
            self._changed.notify_all()

    def _on_connect(self, _c: object, _u: object, flags: Any, reason: Any, props: Any) -> None:
        with self._changed:
            self.connack.append((bool(flags.session_present), int(getattr(reason, "value", reason)), props))
            self._changed.notify_all()


def connect(port: int, client_id: str, version: int, *, clean: bool = True, expiry: int | None = None,
            will: tuple[str, bytes, int, bool] | None = None, will_delay: int | None = None,
            username: str | None = None, password: str | None = None,
            properties: Properties | None = None, wait: bool = True) -> Client:
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": version}
    if version != mqtt.MQTTv5:
        kwargs["clean_session"] = clean
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
    paho.enable_logger()
    client = Client(paho, version)
    paho.on_message = client._on_message
    paho.on_subscribe = client._on_subscribe
    paho.on_connect = client._on_connect
    if username is not None:
        paho.username_pw_set(username, password)
    if will is not None:
        will_props = None
        if will_delay is not None:
            will_props = properties_of(PacketTypes.WILLMESSAGE)
            will_props.WillDelayInterval = will_delay
        paho.will_set(*will, properties=will_props)
    connect_props = properties
    if version == mqtt.MQTTv5 and expiry is not None:
        connect_props = connect_props or properties_of(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = expiry
    if version == mqtt.MQTTv5:
        paho.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=connect_props)
    else:
        paho.connect("127.0.0.1", port, keepalive=30)
    paho.loop_start()
    if wait:
        client.wait_for(lambda: bool(client.connack))
    return client


def quiet(client: Client, seconds: float = 0.5) -> None:
    """Nothing more arrives within ``seconds`` (a bounded negative check)."""
    count = len(client.messages)
    deadline = time.monotonic() + seconds
    with client._changed:
        while time.monotonic() < deadline:
            client._changed.wait(deadline - time.monotonic())
            assert len(client.messages) == count, client.messages[count:]

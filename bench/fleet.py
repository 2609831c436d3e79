"""The devices and modules of a benchmark run, and the ``edgehub run`` process that knows them.

One shared key, SAS tokens made as IoT Hub makes them, a config file with routes and identities,
the hub started on a plain loopback MQTT port. Benchmark support only: no measuring here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import free_port, hub_command, server_process
from bench.mqtt_loadgen import Credentials
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity

HOST = "localhost"
EDGE = "edge"

MQTT_ONLY: Mapping[str, str] = {
    "amqpSettings__enabled": "false",
    "httpSettings__enabled": "false",
    "Metrics__Listener__Port": "0",
}


def every_head() -> dict[str, str]:
    """Every head and the metrics listener on, each on a free port."""
    return {
        "amqpSettings__enabled": "true",
        "amqpSettings__port": str(free_port()),
        "httpSettings__enabled": "true",
        "httpSettings__port": str(free_port()),
        "Metrics__Listener__Port": str(free_port()),
    }


def low_memory(on: bool) -> dict[str, str]:
    return {"OptimizeForPerformance": "false" if on else "true"}


@dataclass(frozen=True)
class Fleet:
    devices: int = 4
    modules: tuple[str, ...] = ("sink",)
    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    def device(self, i: int) -> Identity:
        return Identity(f"bench{i}")

    def module(self, name: str) -> Identity:
        return Identity(EDGE, name)

    def credentials(self, identity: Identity, *, output: str | None = None, props: str = "") -> Credentials:
        """The load generator's connect and telemetry topic for ``identity`` (a module's on ``output``)."""
        token = make_sas_token(sas_resource(HOST, identity), self.key, int(time.time()) + 3600)
        if identity.module_id is None:
            topic = f"devices/{identity.device_id}/messages/events/{props}"
        else:
            bag = f"$.on={output}" if output else ""
            bag = "&".join(p for p in (bag, props) if p)
            topic = f"devices/{identity.device_id}/modules/{identity.module_id}/messages/events/{bag}"
        return Credentials(identity.id, f"{HOST}/{identity.id}/?api-version=2021-04-12", token, topic=topic)

    def device_credentials(self, n: int, props: str = "") -> list[Credentials]:
        return [self.credentials(self.device(i), props=props) for i in range(n)]

    def input_filter(self, module: str) -> str:
        return f"devices/{EDGE}/modules/{module}/inputs/#"

    def identities(self) -> list[dict[str, str]]:
        entries = [
            {"deviceId": self.device(i).device_id, "primaryKey": self.key} for i in range(self.devices)
        ]
        entries += [{"deviceId": EDGE, "moduleId": m, "primaryKey": self.key} for m in self.modules]
        return entries

    def write_config(self, folder: Path, routes: Mapping[str, object], ttl_secs: int = 7200) -> Path:
        config = folder / "config.json"
        config.write_text(
            json.dumps(
                {
                    "schemaVersion": "1.1",
                    "routes": dict(routes),
                    "storeAndForwardConfiguration": {"timeToLiveSecs": ttl_secs},
                    "identities": self.identities(),
                }
            )
        )
        return config


@dataclass
class RunningHub:
    process: subprocess.Popen[bytes]
    port: int
    data: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def hub_env(folder: Path, port: int, settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "__" not in k}
    env.update(
        {
            "StorageFolder": str(folder / "data"),
            "mqttSettings__plainPort": str(port),
            "mqttSettings__port": str(free_port()),
            "RuntimeLogLevel": "warning",
            "IotHubHostName": HOST,
            "EdgeHubHostName": HOST,
            "EdgeDeviceId": EDGE,
            "https_proxy": "",
            "HTTPS_PROXY": "",
        }
    )
    env.update(MQTT_ONLY)
    env.update(settings)
    return env


@contextlib.contextmanager
def edgehub(
    fleet: Fleet,
    folder: Path,
    routes: Mapping[str, object],
    settings: Mapping[str, str] | None = None,
    ttl_secs: int = 7200,
    label: str = "edgehub",
    preexec: Callable[[], None] | None = None,
) -> Iterator[RunningHub]:
    """``edgehub run`` with ``routes`` and ``settings`` (environment names as edgeHub's) on a plain port."""
    folder.mkdir(parents=True, exist_ok=True)
    config = fleet.write_config(folder, routes, ttl_secs)
    port = free_port()
    env = hub_env(folder, port, settings or {})
    with server_process(
        hub_command("run", "--config", str(config)), port, env, label=label, preexec=preexec
    ) as process:
        yield RunningHub(process, port, folder / "data")

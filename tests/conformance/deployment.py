"""One real hub per conformance test module: routes, identities with random keys, and what clients need.

Test support only: starts ``edgehub run`` through tests.hubproc and hands out CA file, port,
usernames, SAS tokens and connection strings; it never speaks MQTT itself.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity
from tests.hubproc import HubProcess, write_config

HOST: Final = "localhost"
"""IotHubHostName, EdgeHubHostName and the name clients dial: it is in the dev server certificate."""
EDGE_DEVICE: Final = "edge"
API_VERSION: Final = "2021-04-12"
TOKEN_LIFETIME_SECS: Final = 3600
AZURE_SDK_PORT: Final = 8883
"""azure-iot-device dials 8883 and nothing else (its MQTT port is hard-coded)."""

_TLS_LINE: Final = re.compile(r"^mqtt: mqtts://[^\s]+:(\d+) \(TLS\)")
_HUB_PROBLEMS: Final = (" ERROR ", " CRITICAL ", "Traceback (most recent call last)")


def module(name: str) -> Identity:
    """A module of the edge device, e.g. ``edge/filter``."""
    return Identity(EDGE_DEVICE, name)


def events_topic(identity: Identity) -> str:
    """Where ``identity`` publishes telemetry; a property bag may follow."""
    if identity.module_id:
        return f"devices/{identity.device_id}/modules/{identity.module_id}/messages/events/"
    return f"devices/{identity.device_id}/messages/events/"


def inputs_topic(identity: Identity) -> str:
    """The prefix of a module's input topics: ``{prefix}{input}/{property bag}``; subscribe ``{prefix}#``."""
    return f"devices/{identity.device_id}/modules/{identity.module_id}/inputs/"


def random_key() -> str:
    """A 32-byte symmetric key in base64, as IoT Hub generates them."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def property_bag(topic: str, prefix: str) -> dict[str, str]:
    """The percent-decoded property bag after ``prefix`` in a delivered topic (an independent
    parser: the test must not trust the hub's own)."""
    assert topic.startswith(prefix), (topic, prefix)
    bag: dict[str, str] = {}
    for pair in topic[len(prefix):].split("&"):
        if pair:
            key, _, value = pair.partition("=")
            bag[unquote(key)] = unquote(value)
    return bag


@dataclass(frozen=True)
class DeploymentSpec:
    """What a test module deploys: its routes, every identity it connects as, and the TLS port
    (0 = any free port; the azure SDK needs AZURE_SDK_PORT)."""

    routes: Mapping[str, str]
    identities: Sequence[Identity]
    tls_port: int = 0
    module_desired: Mapping[str, Mapping[str, object]] | None = None
    """Desired properties per module id: the config becomes a whole deployment manifest."""
    https_port: int | None = None
    """Run the HTTP head on this port (the azure SDK's method invocation dials 443); None: off."""
    env: Mapping[str, str] = field(default_factory=dict)
    """More hub settings (e.g. the metrics port); they win over the ones set here."""
    store_limit_bytes: int | None = None
    """``storeLimits.maxSizeBytes`` of the config; None: no limit."""


@dataclass(frozen=True)
class Deployment:
    """A running hub and the credentials of its identities."""

    hub: HubProcess
    ca_file: Path
    tls_port: int
    keys: Mapping[Identity, str] = field(repr=False)
    host: str = HOST

    def rewrite_module_desired(self, module_id: str, desired: dict[str, object]) -> None:
        """Edit the running hub's manifest: new desired properties for ``module_id`` (the hub
        notices the change within its poll interval)."""
        config = self.hub.config
        assert config is not None
        document = json.loads(Path(config).read_text())
        document["modulesContent"][module_id] = {"properties.desired": desired}
        Path(config).write_text(json.dumps(document))

    def username(self, identity: Identity) -> str:
        return f"{self.host}/{identity.id}/?api-version={API_VERSION}"

    def password(self, identity: Identity, *, key: str | None = None, expiry: int | None = None,
                 resource_of: Identity | None = None) -> str:
        """A SAS token for ``identity`` (or, to test refusals, signed with another ``key``, for
        another identity's resource, or with a past ``expiry``)."""
        resource = sas_resource(self.host, resource_of or identity)
        signing_key = key if key is not None else self.keys[identity]
        return make_sas_token(resource, signing_key, expiry or int(time.time()) + TOKEN_LIFETIME_SECS)

    def connection_string(self, identity: Identity) -> str:
        """As the Azure portal shows it for a module/device behind this gateway."""
        parts = [f"HostName={self.host}", f"DeviceId={identity.device_id}"]
        if identity.module_id:
            parts.append(f"ModuleId={identity.module_id}")
        parts += [f"SharedAccessKey={self.keys[identity]}", f"GatewayHostName={self.host}"]
        return ";".join(parts)


def require_free_port(port: int) -> None:
    """Fail (never skip) with a clear message when ``port`` is taken: a clean CI machine has it free."""
    with socket.socket() as probe:
        # SO_REUSEADDR as the hub sets it: TIME_WAIT leftovers of an earlier run are no conflict,
        # a listening socket is.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise AssertionError(
                f"TCP port {port} is already in use on this machine; the azure-iot-device SDK can only "
                f"connect to {port}, so these tests need it free (stop the process listening there)"
            ) from None


@contextmanager
def run_deployment(folder: Path, spec: DeploymentSpec) -> Iterator[Deployment]:
    """Start a hub with ``spec`` in ``folder``; on exit stop it and check that it stopped cleanly
    (exit 0) and logged no error while the clients used it."""
    for port in (spec.tls_port, spec.https_port):
        if port:
            require_free_port(port)
    keys = {identity: random_key() for identity in spec.identities}
    identities = [
        {"deviceId": i.device_id, "primaryKey": key} | ({"moduleId": i.module_id} if i.module_id else {})
        for i, key in keys.items()
    ]
    config = write_config(folder / "config.json", spec.routes, identities, module_desired=spec.module_desired,
                          store_limit_bytes=spec.store_limit_bytes)
    hub = HubProcess(folder, config, env={
        "mqttSettings__port": str(spec.tls_port),
        "mqttSettings__plainPort": "0",
        "EdgeDeviceId": EDGE_DEVICE,
        "IotHubHostName": HOST,
        "EdgeHubHostName": HOST,
    } | ({"httpSettings__enabled": "true", "httpSettings__port": str(spec.https_port)}
         if spec.https_port is not None else {}) | dict(spec.env))
    hub.start()
    try:
        tls_port = next(int(m.group(1)) for m in map(_TLS_LINE.match, hub.lines) if m is not None)
        yield Deployment(hub, folder / "data" / "certs" / "dev-ca.pem", tls_port, keys)
    finally:
        code = hub.stop()
    assert code == 0, f"hub exited with {code}:\n{hub.output}"
    problems = [line for line in hub.lines if any(p in line for p in _HUB_PROBLEMS)]
    assert not problems, "the hub logged errors:\n" + "".join(problems)

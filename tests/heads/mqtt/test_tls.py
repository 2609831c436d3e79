"""The MQTT head over TLS: dev certificates, SAS over TLS, X.509 client-certificate auth (paho clients)."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.clock import SystemClock
from edgehub.heads.credentials import RegistryAuthenticator
from edgehub.heads.mqtt.server import MqttServer, start_mqtt_server
from edgehub.message import Identity
from edgehub.testing.certs import CertificateAuthority, make_ca, make_client_certificate
from edgehub.tls import DevCertificates, ensure_dev_certificates, server_ssl_context
from tests.heads.mqtt.test_server import FakeHub

KEY = base64.b64encode(b"k" * 32).decode()
BOUND = 10.0


class TlsClient:
    """A paho 3.1.1 client over TLS that records its CONNACK and PUBACKs."""

    def __init__(
        self,
        port: int,
        ca_file: Path,
        client_id: str,
        *,
        password: str | None = None,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.connack: int | None = None
        self.acked: set[int] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(f"localhost/{client_id}/?api-version=2021-04-12", password)
        self.client.tls_set(
            ca_certs=str(ca_file),
            certfile=str(cert[0]) if cert else None,
            keyfile=str(cert[1]) if cert else None,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        self.port = port

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = rc.value

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        if self.connack is None:
            self.connack = -1  # closed before CONNACK: TLS 1.3 reports a refused certificate late

    async def connect(self) -> TlsClient:
        try:
            await asyncio.to_thread(self.client.connect, "localhost", self.port)
        except (ssl.SSLError, OSError):
            self.connack = -1  # refused during the TLS handshake
            return self
        self.client.loop_start()
        await until(lambda: self.connack is not None, "CONNACK")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def dev(tmp_path: Path) -> DevCertificates:
    return ensure_dev_certificates(tmp_path / "certs", ["localhost"])


@pytest.fixture
def device_ca(tmp_path: Path) -> CertificateAuthority:
    return make_ca(tmp_path / "ca", "device CA")


@pytest.fixture
async def tls_server(
    dev: DevCertificates,
    device_ca: CertificateAuthority,
) -> AsyncIterator[tuple[MqttServer, FakeHub]]:
    registry = IdentityRegistry(
        [
            IdentitySpec("sensor1", primary_key=KEY),
            IdentitySpec("camera", x509_ca_file=str(device_ca.cert_file)),
        ],
        ["localhost"],
    )
    auth = RegistryAuthenticator(lambda: registry, SystemClock(), client_cert_auth=True)
    context = server_ssl_context(
        dev.cert_file, dev.key_file, None, extra_client_ca_files=[device_ca.cert_file]
    )
    hub = FakeHub()
    server = await start_mqtt_server(
        hub, auth, authorizer=auth, host="127.0.0.1", port=0, ssl_context=context
    )
    yield server, hub
    server.close()
    await server.wait_closed()


async def test_a_device_publishes_over_tls_with_a_sas_token_trusting_the_dev_ca(
    tls_server: tuple[MqttServer, FakeHub],
    dev: DevCertificates,
) -> None:
    server, hub = tls_server
    token = make_sas_token(sas_resource("localhost", Identity("sensor1")), KEY, int(time.time()) + 600)
    client = await TlsClient(server.port, dev.ca_file, "sensor1", password=token).connect()
    try:
        assert client.connack == 0
        mid = client.client.publish("devices/sensor1/messages/events/", b"over tls", qos=1).mid
        await until(lambda: mid in client.acked, "PUBACK")
        assert [(m.body, m.source) for m in hub.ingested] == [(b"over tls", Identity("sensor1"))]
    finally:
        client.close()


async def test_a_device_authenticates_with_a_client_certificate_from_its_ca(
    tls_server: tuple[MqttServer, FakeHub],
    dev: DevCertificates,
    device_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    server, hub = tls_server
    cert = make_client_certificate(tmp_path / "camera", "camera", device_ca)
    client = await TlsClient(
        server.port, dev.ca_file, "camera", cert=(cert.chain_file, cert.key_file)
    ).connect()
    try:
        assert client.connack == 0
        mid = client.client.publish("devices/camera/messages/events/", b"x509", qos=1).mid
        await until(lambda: mid in client.acked, "PUBACK")
        assert hub.ingested[0].source == Identity("camera")
    finally:
        client.close()


async def test_a_certificate_for_another_device_or_from_an_unknown_ca_is_refused(
    tls_server: tuple[MqttServer, FakeHub],
    dev: DevCertificates,
    device_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    server, hub = tls_server
    wrong_cn = make_client_certificate(tmp_path / "other", "sensor9", device_ca)
    stranger = make_client_certificate(tmp_path / "stranger", "camera", make_ca(tmp_path / "evil", "evil CA"))
    for cert in (wrong_cn, stranger):
        client = await TlsClient(
            server.port, dev.ca_file, "camera", cert=(cert.chain_file, cert.key_file)
        ).connect()
        try:
            assert client.connack != 0
        finally:
            client.close()
    assert hub.ingested == []

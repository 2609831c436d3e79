"""The IoT Edge drop-in: edgeAgent's environment, upstream tokens signed and the server certificate
issued by the workload API (edgehub.workload, WorkloadCredentials), against a fake workload server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.errors import AuthError, ConfigError, EndpointUnavailable
from edgehub.message import Identity
from edgehub.settings import load_settings
from edgehub.tls import server_ssl_context
from edgehub.upstream.config import upstream_config
from edgehub.upstream.credentials import SasCredentials, WorkloadCredentials
from edgehub.upstream.transport import open_stream
from edgehub.workload import WorkloadClient, WorkloadError, fetch_server_certificate, workload_signer
from tests.fake_workload import FakeWorkload
from tests.hubproc import HubProcess, free_port

HUB = "myhub.azure-devices.net"
KEY = base64.b64encode(b"the-edgehub-module-key-32-bytes!").decode()


@pytest.fixture
def workload(tmp_path: Path) -> Iterator[FakeWorkload]:
    with FakeWorkload(tmp_path / "workload", KEY) as server:
        yield server


def client_of(workload: FakeWorkload) -> WorkloadClient:
    return WorkloadClient(workload.uri, "$edgeHub", "gen-1", "2019-01-30")


def iotedge_env(workload: FakeWorkload, **extra: str) -> dict[str, str]:
    """What edgeAgent injects into the edgeHub container (and edgeHub's own names beside it)."""
    return {
        "IOTEDGE_IOTHUBHOSTNAME": HUB,
        "IOTEDGE_DEVICEID": "gateway1",
        "IOTEDGE_MODULEID": "$edgeHub",
        "IOTEDGE_MODULEGENERATIONID": "gen-1",
        "IOTEDGE_WORKLOADURI": workload.uri,
        "IOTEDGE_APIVERSION": "2019-01-30",
        "EdgeDeviceHostName": "gateway1.local",
        **extra,
    }


def test_sign_posts_the_documented_request_and_decodes_the_digest(workload: FakeWorkload) -> None:
    digest = client_of(workload).sign(b"to be signed")

    assert digest == hmac.new(base64.b64decode(KEY), b"to be signed", hashlib.sha256).digest()
    request = workload.requests[-1]
    assert (request.method, request.path) == ("POST", "/modules/%24edgeHub/genid/gen-1/sign")
    assert request.query["api-version"] == ["2019-01-30"]
    assert request.body == {"keyId": "primary", "algo": "HMACSHA256",
                            "data": base64.b64encode(b"to be signed").decode()}


def test_workload_signed_upstream_token_is_accepted_by_a_parent_holding_the_module_key(
    workload: FakeWorkload,
) -> None:
    identity = Identity("gateway1", "$edgeHub")
    credentials = WorkloadCredentials(HUB, identity, workload_signer(client_of(workload)))
    now = time.time()

    token = credentials.token(now)

    parent = IdentityRegistry([IdentitySpec("gateway1", "$edgeHub", primary_key=KEY)], [HUB])
    assert parent.authenticate_sas(identity, token.text, now).identity == identity
    # The same token a key-holding hub would make: only who holds the key differs.
    assert token.text == SasCredentials(HUB, identity, KEY).token(now).text
    assert credentials.username == f"{HUB}/gateway1/$edgeHub/?api-version=2018-06-30"


def test_an_error_answer_carries_the_servers_message(workload: FakeWorkload) -> None:
    other = WorkloadClient(workload.uri, "$edgeHub", "stale-generation")

    with pytest.raises(WorkloadError, match=r"HTTP 404.*generation id"):
        other.sign(b"x")


def test_an_unreachable_workload_api_makes_token_signing_an_auth_error(tmp_path: Path) -> None:
    client = WorkloadClient(f"unix://{tmp_path}/absent.sock", "$edgeHub", "gen-1")
    credentials = WorkloadCredentials(HUB, Identity("gateway1", "$edgeHub"), workload_signer(client))

    with pytest.raises(AuthError, match="unreachable"):
        credentials.token(time.time())


def test_server_certificate_is_written_with_a_private_key_and_loads_as_the_tls_context(
    workload: FakeWorkload, tmp_path: Path,
) -> None:
    cert_file, key_file = fetch_server_certificate(client_of(workload), "gateway1.local", tmp_path / "certs")

    request = workload.requests[-1]
    assert request.path == "/modules/%24edgeHub/genid/gen-1/certificate/server"
    assert request.body is not None
    assert request.body["commonName"] == "gateway1.local"
    assert "expiration" in request.body
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gateway1.local"
    assert isinstance(server_ssl_context(cert_file, key_file, None), ssl.SSLContext)


def test_no_server_certificate_is_a_config_error_naming_the_workload_variable(tmp_path: Path) -> None:
    client = WorkloadClient(f"unix://{tmp_path}/absent.sock", "$edgeHub", "gen-1")

    with pytest.raises(ConfigError) as raised:
        fetch_server_certificate(client, "gateway1.local", tmp_path / "certs")

    assert raised.value.problems[0][0] == "IOTEDGE_WORKLOADURI"


def test_trust_bundle_is_the_edge_ca(workload: FakeWorkload) -> None:
    bundle = client_of(workload).trust_bundle()

    assert workload.ca is not None
    assert x509.load_pem_x509_certificate(bundle.encode()) == workload.ca.certificate


def test_edge_agent_environment_sets_the_hubs_identity_and_workload_credentials(
    workload: FakeWorkload,
) -> None:
    settings = load_settings(iotedge_env(workload, IOTEDGE_GATEWAYHOSTNAME="parent.local"))

    config = upstream_config(settings)

    assert (settings.iothub_hostname, settings.edge_device_id, settings.edgehub_hostname) == (
        HUB, "gateway1", "gateway1.local")
    assert config is not None
    assert isinstance(config.credentials, WorkloadCredentials)
    assert config.identity == Identity("gateway1", "$edgeHub")
    assert (config.host, config.port) == ("parent.local", 5671)  # Amqp: the default


def test_without_a_gateway_the_hub_connects_to_the_iot_hub_itself(workload: FakeWorkload) -> None:
    config = upstream_config(load_settings(iotedge_env(workload)))

    assert config is not None
    assert (config.host, config.port, config.is_iot_hub) == (HUB, 5671, True)


def test_a_connection_string_wins_over_the_workload_api(workload: FakeWorkload) -> None:
    connection = f"HostName={HUB};DeviceId=gateway1;ModuleId=$edgeHub;SharedAccessKey={KEY}"
    config = upstream_config(load_settings(iotedge_env(workload, IotHubConnectionString=connection)))

    assert config is not None
    assert isinstance(config.credentials, SasCredentials)


def test_the_settings_own_names_win_over_the_iot_edge_aliases() -> None:
    settings = load_settings({"IOTEDGE_DEVICEID": "from-agent", "EdgeDeviceId": "from-user"})

    assert settings.edge_device_id == "from-user"


def test_a_bad_alias_value_is_reported_under_the_name_that_was_set() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"IOTEDGE_GATEWAYHOSTNAME": "not a host"})

    assert [location for location, _ in raised.value.problems] == ["IOTEDGE_GATEWAYHOSTNAME"]


def test_workload_uri_without_a_generation_id_is_refused(workload: FakeWorkload) -> None:
    env = iotedge_env(workload)
    del env["IOTEDGE_MODULEGENERATIONID"]

    with pytest.raises(ConfigError, match="IOTEDGE_MODULEGENERATIONID"):
        load_settings(env)


def test_hub_under_the_iot_edge_runtime_serves_the_workload_certificate_and_signs_upstream(
    workload: FakeWorkload, tmp_path: Path,
) -> None:
    tls_port = free_port()
    env = iotedge_env(workload, IOTEDGE_GATEWAYHOSTNAME="127.0.0.1", UpstreamProtocol="Mqtt",
                      mqttSettings__port=str(tls_port))

    with HubProcess(tmp_path, env=env) as hub:
        assert "upstream: mqtts://127.0.0.1:8883" in hub.output
        assert workload.ca is not None
        context = ssl.create_default_context(cafile=str(workload.ca.cert_file))
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw, \
                context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        served = x509.load_der_x509_certificate(der)
        assert served.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gateway1.local"
        # The upstream link asked the workload API to sign its first token (before connecting).
        deadline = time.monotonic() + 10
        while not any(r.path.endswith("/sign") for r in workload.requests):
            assert time.monotonic() < deadline, "no sign request within 10 s"
            time.sleep(0.02)
        assert not (tmp_path / "data" / "certs" / "dev-ca.pem").exists()
        assert hub.stop() == 0


async def test_the_upstream_trusts_a_parent_certificate_issued_under_the_workload_trust_bundle(
    workload: FakeWorkload, tmp_path: Path,
) -> None:
    # A parent edge hub's server certificate, issued by the same edge CA the trust bundle holds.
    cert_file, key_file = fetch_server_certificate(client_of(workload), "127.0.0.1", tmp_path / "parent")
    parent_tls = server_ssl_context(cert_file, key_file, None)
    handshakes: list[bool] = []
    server = await asyncio.start_server(lambda r, w: handshakes.append(True), "127.0.0.1", 0, ssl=parent_tls)
    port = server.sockets[0].getsockname()[1]
    config = upstream_config(load_settings(iotedge_env(workload, IOTEDGE_GATEWAYHOSTNAME="127.0.0.1")))
    assert config is not None
    assert config.ca_pem is not None
    try:
        opened = await open_stream(dataclasses.replace(config, port=port), asyncio.Protocol())
        opened.transport.close()
        with pytest.raises(EndpointUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await open_stream(dataclasses.replace(config, port=port, ca_pem=None), asyncio.Protocol())
    finally:
        server.close()
        await server.wait_closed()


def test_without_a_trust_bundle_the_upstream_still_starts_on_the_system_cas(
    workload: FakeWorkload, caplog: pytest.LogCaptureFixture,
) -> None:
    workload.trust_bundle_served = False
    env = iotedge_env(workload, IOTEDGE_GATEWAYHOSTNAME="parent.local")
    config = upstream_config(load_settings(env))

    assert config is not None
    assert config.ca_pem is None
    assert "no trust bundle from the workload API" in caplog.text

"""The AMQP head over TLS with python-qpid-proton's client: SASL PLAIN and ANONYMOUS + CBS, telemetry
settled only after the durable write, and the errors bad peers get (unauthorized, not found, size,
limits, store full) while the hub keeps serving."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

import proton
import pytest
from proton.utils import LinkDetached, SendException

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.clock import SystemClock
from edgehub.heads.amqp.connection import AmqpLimits
from edgehub.message import Identity, SystemProperty
from edgehub.testing.certs import make_ca, make_client_certificate
from tests.heads.amqp.support import amqp_server, blocking, connect, events_address, put_token, telemetry
from tests.heads.http.support import DEVICE, HOST, KEY, OTHER, OTHER_KEY, TARGET, FakeHub, registry, token


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


async def test_a_put_token_authenticates_and_telemetry_is_accepted_only_after_the_store_write(
    tmp_path: Path,
    hub: FakeHub,
) -> None:
    built = registry()
    hub.gate = asyncio.Event()
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):
        connection = await blocking(lambda: connect(server.port, ca))
        assert await blocking(lambda: put_token(connection, DEVICE, token(DEVICE))) == (200, "OK")
        sender = await blocking(lambda: connection.create_sender(events_address(DEVICE)))
        message = telemetry(b"hello", unit="C")
        message.id = "m-1"
        message.content_type = "application/json"
        sending = asyncio.create_task(blocking(lambda: sender.send(message)))
        for _ in range(500):  # bounded wait for the ingest to be in flight, held by the gate
            if hub.waiting:
                break
            await asyncio.sleep(0.01)
        assert hub.waiting == 1
        assert not sending.done()  # no disposition before durability
        hub.gate.set()
        delivery = await sending
        assert delivery.remote_state == proton.Delivery.ACCEPTED
        await blocking(connection.close)
    [stored] = hub.ingested
    assert stored.body == b"hello"
    assert stored.properties == {"unit": "C"}
    assert stored.system_properties == {
        SystemProperty.MESSAGE_ID: "m-1",
        SystemProperty.CONTENT_TYPE: "application/json",
        SystemProperty.CONNECTION_DEVICE_ID: DEVICE.device_id,
    }


async def test_sasl_plain_with_a_sas_token_authenticates_the_module_its_username_names(
    tmp_path: Path,
    hub: FakeHub,
) -> None:
    built = registry()
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):

        def send() -> int:
            connection = connect(
                server.port,
                ca,
                mechs="PLAIN",
                user=f"{TARGET.device_id}/modules/{TARGET.module_id}@sas.{HOST}",
                password=token(TARGET),
            )
            try:
                sender = connection.create_sender(events_address(TARGET))
                return int(sender.send(telemetry(b"as module")).remote_state)
            finally:
                connection.close()

        assert await blocking(send) == proton.Delivery.ACCEPTED
    assert [m.source for m in hub.ingested] == [TARGET]


async def test_wrong_credentials_are_refused_and_the_hub_keeps_serving_others(
    tmp_path: Path,
    hub: FakeHub,
) -> None:
    built = registry()
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):
        with pytest.raises(proton.ConnectionException, match=r"unauthorized-access|Authentication failed"):
            await blocking(
                lambda: connect(
                    server.port,
                    ca,
                    mechs="PLAIN",
                    user=f"{DEVICE.device_id}@sas.{HOST}",
                    password=token(DEVICE, key=OTHER_KEY),
                )
            )
        connection = await blocking(lambda: connect(server.port, ca))
        status, description = await blocking(
            lambda: put_token(connection, DEVICE, token(DEVICE, key=OTHER_KEY))
        )
        assert status == 401
        assert "sig=" not in description  # no secret in the answer
        with pytest.raises(LinkDetached, match="amqp:unauthorized-access"):
            await blocking(lambda: connection.create_sender(events_address(DEVICE)))
        assert await blocking(lambda: put_token(connection, DEVICE, token(DEVICE))) == (200, "OK")
        sender = await blocking(lambda: connection.create_sender(events_address(DEVICE)))
        assert (
            await blocking(lambda: sender.send(telemetry(b"ok")))
        ).remote_state == proton.Delivery.ACCEPTED
        await blocking(connection.close)
    assert [m.body for m in hub.ingested] == [b"ok"]


async def test_one_connection_proves_many_identities_and_each_may_send_only_as_itself(
    tmp_path: Path,
    hub: FakeHub,
) -> None:
    built = registry()
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):

        def run() -> None:
            connection = connect(server.port, ca)
            try:
                assert put_token(connection, DEVICE, token(DEVICE)) == (200, "OK")
                assert put_token(connection, OTHER, token(OTHER)) == (200, "OK")
                for identity in (DEVICE, OTHER):
                    connection.create_sender(events_address(identity)).send(telemetry(identity.id.encode()))
                with pytest.raises(LinkDetached, match="amqp:unauthorized-access"):
                    connection.create_sender(events_address(TARGET))  # the link address proves nothing
            finally:
                connection.close()

        await blocking(run)
    assert [(m.source, m.body) for m in hub.ingested] == [(DEVICE, b"d1"), (OTHER, b"d2")]


async def test_an_address_iot_hub_does_not_define_is_refused_with_not_found(
    tmp_path: Path, hub: FakeHub
) -> None:
    built = registry()
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):

        def run() -> None:
            connection = connect(server.port, ca)
            try:
                put_token(connection, DEVICE, token(DEVICE))
                with pytest.raises(LinkDetached, match="amqp:not-found"):
                    connection.create_sender("/devices/d1/no/such/thing")
                with pytest.raises(LinkDetached, match="amqp:not-found"):
                    connection.create_receiver(events_address(DEVICE))  # a device has no inputs
            finally:
                connection.close()

        await blocking(run)


async def test_a_message_over_the_size_bound_detaches_its_link_with_message_size_exceeded(
    tmp_path: Path,
    hub: FakeHub,
) -> None:
    built = registry()
    limits = AmqpLimits(max_message_size=100_000)
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock(), limits=limits) as (server, ca):

        def run() -> None:
            connection = connect(server.port, ca)
            try:
                put_token(connection, DEVICE, token(DEVICE))
                sender = connection.create_sender(events_address(DEVICE))
                with pytest.raises((LinkDetached, SendException), match="message-size-exceeded"):
                    sender.send(telemetry(b"x" * 150_000))
                again = connection.create_sender(events_address(DEVICE), name="again")
                assert again.send(telemetry(b"small")).remote_state == proton.Delivery.ACCEPTED
            finally:
                connection.close()

        await blocking(run)
    assert [m.body for m in hub.ingested] == [b"small"]


async def test_a_full_store_rejects_the_transfer_and_nothing_is_stored(tmp_path: Path, hub: FakeHub) -> None:
    built = registry()
    hub.full = True
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):

        def run() -> int:
            connection = connect(server.port, ca)
            try:
                put_token(connection, DEVICE, token(DEVICE))
                sender = connection.create_sender(events_address(DEVICE))
                try:
                    return int(sender.send(telemetry(b"too much")).remote_state)
                except SendException as exc:
                    return int(exc.state)
            finally:
                connection.close()

        assert await blocking(run) == proton.Delivery.REJECTED
    assert hub.ingested == []


async def test_links_beyond_the_per_connection_bound_get_resource_limit_exceeded(
    tmp_path: Path,
    hub: FakeHub,
) -> None:
    built = registry()
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock(), limits=AmqpLimits(max_links=3)) as (
        server,
        ca,
    ):

        def run() -> None:
            connection = connect(server.port, ca)
            try:
                put_token(connection, DEVICE, token(DEVICE))  # two $cbs links
                connection.create_sender(events_address(DEVICE), name="third")
                with pytest.raises(LinkDetached, match="amqp:resource-limit-exceeded"):
                    connection.create_sender(events_address(DEVICE), name="fourth")
            finally:
                connection.close()

        await blocking(run)


async def test_garbage_instead_of_an_amqp_header_closes_only_that_connection(
    tmp_path: Path, hub: FakeHub
) -> None:
    built = registry()
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):

        def garbage() -> bytes:
            context = ssl.create_default_context(cafile=str(ca))
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=HOST) as tls,
            ):
                tls.sendall(b"GET / HTTP/1.1\r\n\r\n")
                answer = b""
                while chunk := tls.recv(100):
                    answer += chunk
                return answer

        assert await blocking(garbage) == b"AMQP\x03\x01\x00\x00"  # the header we speak, then close (§2.2)
        connection = await blocking(lambda: connect(server.port, ca))
        assert await blocking(lambda: put_token(connection, DEVICE, token(DEVICE))) == (200, "OK")
        await blocking(connection.close)


async def test_a_client_certificate_from_the_identitys_ca_proves_the_device_its_link_names(
    tmp_path: Path,
    hub: FakeHub,
) -> None:
    device_ca = make_ca(tmp_path / "ca", "device CA")
    camera = make_client_certificate(tmp_path / "ca", "camera", device_ca)
    built = IdentityRegistry(
        [IdentitySpec("camera", x509_ca_file=str(device_ca.cert_file)), IdentitySpec("d1", primary_key=KEY)],
        [HOST],
    )
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock(), client_ca=device_ca.cert_file) as (
        server,
        ca,
    ):

        def run() -> int:
            connection = connect(server.port, ca, certificate=(camera.cert_file, camera.key_file))
            try:
                with pytest.raises(LinkDetached, match="amqp:unauthorized-access"):
                    connection.create_sender(events_address(DEVICE))  # the certificate names camera only
                sender = connection.create_sender(events_address(Identity("camera")), name="camera")
                return int(sender.send(telemetry(b"frame")).remote_state)
            finally:
                connection.close()

        assert await blocking(run) == proton.Delivery.ACCEPTED
    assert [m.source for m in hub.ingested] == [Identity("camera")]


async def test_refused_tokens_are_logged_without_their_signature(
    tmp_path: Path,
    hub: FakeHub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    built = registry()
    bad = token(DEVICE, key=OTHER_KEY)
    signature = bad.split("sig=")[1].split("&")[0]
    caplog.set_level(logging.DEBUG)
    async with amqp_server(tmp_path, hub, lambda: built, SystemClock()) as (server, ca):

        def run() -> None:
            with pytest.raises(proton.ConnectionException):
                connect(server.port, ca, mechs="PLAIN", user=f"{DEVICE.device_id}@sas.{HOST}", password=bad)
            connection = connect(server.port, ca)
            try:
                assert put_token(connection, DEVICE, bad)[0] == 401
            finally:
                connection.close()

        await blocking(run)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused" in logged
    assert signature not in logged
    assert "sig=" not in logged

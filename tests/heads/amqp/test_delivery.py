"""The AMQP head on a real hub (memory store, fake clock): module inputs and cloud-to-device messages
driven by link credit and settled by the client's dispositions, token expiry on open links, twins
and direct methods on IoT Hub's twin and method links."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import proton
import pytest
from proton.utils import BlockingConnection, LinkDetached

from edgehub.amqp import messages
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.config_file import HubConfig, parse_config
from edgehub.hub import Hub
from edgehub.message import Identity, Message, SystemProperty
from edgehub.metrics import MESSAGES_DROPPED
from edgehub.testing.clock import FakeClock
from tests.heads.amqp.support import (
    HOST,
    amqp_server,
    app_properties,
    blocking,
    connect,
    events_address,
    put_token,
    settle,
    telemetry,
)

KEY: Final = base64.b64encode(b"a" * 32).decode()
SENSOR = Identity("sensor1")
FILTER = Identity("edge", "filter")
ROUTES = {
    "toFilter": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) "
    'INTO BrokeredEndpoint("/modules/filter/inputs/in1")',
}


def config(routes: dict[str, str] | None = None) -> HubConfig:
    return parse_config(
        {
            "schemaVersion": "1.1",
            "routes": ROUTES if routes is None else routes,
            "identities": [
                {"deviceId": "sensor1", "primaryKey": KEY},
                {"deviceId": "edge", "moduleId": "filter", "primaryKey": KEY},
            ],
        },
        "test",
    )


def token(clock: FakeClock, identity: Identity, lifetime: int = 600) -> str:
    return make_sas_token(sas_resource(HOST, identity), KEY, int(clock.time()) + lifetime)


def inputs_address(identity: Identity) -> str:
    return f"/devices/{identity.device_id}/modules/{identity.module_id}/messages/events"


async def until(predicate: Callable[[], bool], clock: FakeClock | None = None) -> None:
    for _ in range(500):
        if predicate():
            return
        if clock is not None:
            await clock.advance(1)
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.fixture
async def hub(make_hub: Callable[[HubConfig], Hub]) -> Hub:
    built = make_hub(config())
    await built.start()
    return built


async def test_a_routed_message_reaches_the_modules_input_link_and_is_checkpointed_once_accepted(
    tmp_path: Path,
    hub: Hub,
    clock: FakeClock,
) -> None:
    async with amqp_server(
        tmp_path, hub, lambda: hub.registry, clock, twins=hub.twins, methods=hub.twins
    ) as (
        server,
        ca,
    ):
        module = await blocking(lambda: connect(server.port, ca))
        assert await blocking(lambda: put_token(module, FILTER, token(clock, FILTER))) == (200, "OK")
        receiver = await blocking(lambda: module.create_receiver(inputs_address(FILTER), credit=10))
        sensor = Message(
            b'{"t": 21}',
            {"unit": "C"},
            {SystemProperty.CONNECTION_DEVICE_ID: "sensor1", SystemProperty.MESSAGE_ID: "m-7"},
        )
        await hub.ingest([sensor])
        received = await blocking(lambda: receiver.receive(timeout=10))
        assert messages.body_bytes(received) == b'{"t": 21}'
        assert app_properties(received) == {"unit": "C"}
        assert received.id == "m-7"
        assert messages.annotation(received, messages.INPUT_NAME) == "in1"
        assert messages.annotation(received, messages.CONNECTION_DEVICE_ID) == "sensor1"
        assert hub.store.stats().message_count == 1  # not delivered until the client settles it
        await blocking(lambda: settle(module, receiver, "accept"))
        await until(lambda: hub.store.stats().message_count == 0)
        await blocking(module.close)


async def test_a_released_message_comes_again_and_a_rejected_one_is_dropped_and_counted(
    tmp_path: Path,
    hub: Hub,
    clock: FakeClock,
) -> None:
    dropped = MESSAGES_DROPPED.labels("rejected_by_client", "", "")
    before = dropped._value.get()
    async with amqp_server(tmp_path, hub, lambda: hub.registry, clock) as (server, ca):
        module = await blocking(lambda: connect(server.port, ca))
        await blocking(lambda: put_token(module, FILTER, token(clock, FILTER)))
        receiver = await blocking(lambda: module.create_receiver(inputs_address(FILTER), credit=1))
        sensor = {SystemProperty.CONNECTION_DEVICE_ID: "sensor1"}
        await hub.ingest([Message(b"first", {}, sensor)])
        assert messages.body_bytes(await blocking(lambda: receiver.receive(timeout=10))) == b"first"
        await blocking(lambda: settle(module, receiver, "release"))
        await clock.advance(5)  # the pump's retry
        assert messages.body_bytes(await blocking(lambda: receiver.receive(timeout=10))) == b"first"
        await blocking(lambda: settle(module, receiver, "reject"))
        await until(lambda: hub.store.stats().message_count == 0, clock)  # dropped, never again
        await hub.ingest([Message(b"second", {}, sensor)])
        assert messages.body_bytes(await blocking(lambda: receiver.receive(timeout=10))) == b"second"
        await blocking(lambda: settle(module, receiver, "accept"))
        await until(lambda: hub.store.stats().message_count == 0, clock)
        await blocking(module.close)
    assert dropped._value.get() == before + 1


async def test_cloud_to_device_messages_wait_for_the_device_and_flow_on_its_devicebound_link(
    tmp_path: Path,
    hub: Hub,
    clock: FakeClock,
) -> None:
    await hub.enqueue("/devices/sensor1/messages/devicebound", [Message(b"c2d", {"cmd": "reboot"})])
    async with amqp_server(tmp_path, hub, lambda: hub.registry, clock) as (server, ca):
        device = await blocking(lambda: connect(server.port, ca))
        await blocking(lambda: put_token(device, SENSOR, token(clock, SENSOR)))
        receiver = await blocking(lambda: device.create_receiver("/devices/sensor1/messages/devicebound"))
        received = await blocking(lambda: receiver.receive(timeout=10))
        assert (messages.body_bytes(received), app_properties(received)) == (b"c2d", {"cmd": "reboot"})
        await blocking(lambda: settle(device, receiver, "accept"))
        await until(lambda: hub.store.stats().message_count == 0)
        await blocking(device.close)


async def test_an_expired_token_detaches_its_links_with_unauthorized_access_and_a_renewal_keeps_them(
    tmp_path: Path,
    hub: Hub,
    clock: FakeClock,
) -> None:
    async with amqp_server(tmp_path, hub, lambda: hub.registry, clock) as (server, ca):
        device = await blocking(lambda: connect(server.port, ca))
        await blocking(lambda: put_token(device, SENSOR, token(clock, SENSOR, lifetime=30)))
        sender = await blocking(lambda: device.create_sender(events_address(SENSOR)))
        await clock.advance(20)
        assert await blocking(lambda: put_token(device, SENSOR, token(clock, SENSOR, lifetime=30))) == (
            200,
            "OK",
        )
        await clock.advance(20)  # past the first token's expiry, within the renewal's
        assert (
            await blocking(lambda: sender.send(telemetry(b"still")))
        ).remote_state == proton.Delivery.ACCEPTED
        await clock.advance(15)  # past the renewal's expiry too

        def detached() -> str:
            try:
                sender.send(telemetry(b"late"), timeout=10)
            except (LinkDetached, proton.ProtonException) as exc:
                return str(exc)
            return "still attached"

        assert "amqp:unauthorized-access" in await blocking(detached)
        await blocking(device.close)


class _Twin:
    """A BlockingConnection's twin links: requests with the ``operation`` annotation, answers by
    correlation id."""

    def __init__(self, connection: BlockingConnection, identity: Identity) -> None:
        address = f"/devices/{identity.device_id}/modules/{identity.module_id}/twin"
        self.sender = connection.create_sender(address)
        self.receiver = connection.create_receiver(address, credit=10)
        self.count = 0

    def request(self, operation: str, body: bytes = b" ", resource: str | None = None) -> proton.Message:
        self.count += 1
        message: Any = proton.Message(body=body)
        message.inferred = True
        message.correlation_id = f"rid-{self.count}"
        message.annotations = {"operation": operation} | ({"resource": resource} if resource else {})
        self.sender.send(message)
        answer = self.receiver.receive(timeout=10)
        assert answer.correlation_id == f"rid-{self.count}"
        return answer


async def test_twin_get_and_a_reported_patch_go_through_the_twin_core(
    tmp_path: Path,
    hub: Hub,
    clock: FakeClock,
) -> None:
    async with amqp_server(
        tmp_path, hub, lambda: hub.registry, clock, twins=hub.twins, methods=hub.twins
    ) as (
        server,
        ca,
    ):

        def run() -> tuple[proton.Message, proton.Message, proton.Message]:
            connection = connect(server.port, ca)
            try:
                put_token(connection, FILTER, token(clock, FILTER))
                twin = _Twin(connection, FILTER)
                patched = twin.request("PATCH", b'{"temp": 5}', "/properties/reported")
                got = twin.request("GET")
                bad = twin.request("PATCH", b"[1, 2]", "/properties/reported")
                return patched, got, bad
            finally:
                connection.close()

        patched, got, bad = await blocking(run)
    assert messages.annotation(patched, "status") == "204"
    document = json.loads(messages.body_bytes(got))
    assert messages.annotation(got, "status") == "200"
    assert document["reported"]["temp"] == 5
    assert "desired" in document
    assert messages.annotation(bad, "status") == "400"


async def test_a_direct_method_reaches_the_module_on_its_method_link_and_its_answer_comes_back(
    tmp_path: Path,
    hub: Hub,
    clock: FakeClock,
) -> None:
    async with amqp_server(
        tmp_path, hub, lambda: hub.registry, clock, twins=hub.twins, methods=hub.twins
    ) as (
        server,
        ca,
    ):
        module = await blocking(lambda: connect(server.port, ca))
        await blocking(lambda: put_token(module, FILTER, token(clock, FILTER)))
        address = f"/devices/{FILTER.device_id}/modules/{FILTER.module_id}/methods/devicebound"
        requests = await blocking(lambda: module.create_receiver(address, credit=5))
        answers = await blocking(lambda: module.create_sender(address))
        call = asyncio.create_task(
            hub.twins.invoke(FILTER, "reboot", b'{"delay": 1}', connect_timeout=10, response_timeout=10)
        )
        request = await blocking(lambda: requests.receive(timeout=10))
        assert (app_properties(request), messages.body_bytes(request)) == (
            {"IoThub-methodname": "reboot"},
            b'{"delay": 1}',
        )
        response: Any = proton.Message(
            body=b'{"ok": true}', correlation_id=request.correlation_id, properties={"IoThub-status": 200}
        )
        response.inferred = True
        await blocking(lambda: answers.send(response))
        answer = await asyncio.wait_for(call, 10)
        assert (answer.status, answer.payload) == (200, b'{"ok": true}')
        await blocking(module.close)

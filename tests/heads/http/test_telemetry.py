"""REST telemetry (edgehub.heads.http.telemetry) through a real aiohttp client: every status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edgehub.heads.http.app import SERVER_OPTIONS
from edgehub.heads.http.telemetry import TelemetryApi
from edgehub.message import SystemProperty
from edgehub.metrics import sample_value
from tests.heads.http.support import DEVICE, OTHER, OTHER_KEY, FakeHub, authenticator, token

MAX = 1024
EVENTS = f"/devices/{DEVICE.device_id}/messages/events"


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def api(hub: FakeHub) -> TelemetryApi:
    return TelemetryApi(hub, authenticator(), max_message_size=MAX, max_in_flight=2)


@pytest.fixture
async def client(api: TelemetryApi) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(client_max_size=MAX + 1)
    app.router.add_post("/devices/{device}/messages/events", api.post_events)
    app.router.add_post("/devices/{device}/modules/{module}/messages/events", api.post_events)
    server = TestServer(app)
    await server.start_server(**SERVER_OPTIONS)  # the head's own options (no auto-decompression)
    async with TestClient(server) as test_client:
        yield test_client


async def test_a_message_is_acked_204_after_ingest_with_app_and_system_properties(
    client: TestClient[web.Request, web.Application], hub: FakeHub,
) -> None:
    received = sample_value("edgehub_messages_received_total", {"id": "d1", "route_output": ""})
    response = await client.post(EVENTS, data=b"hello", headers={
        "Authorization": token(DEVICE), "iothub-app-Color": "red", "Content-Type": "text/plain",
        "Content-Encoding": "utf-8", "iothub-messageid": "m1", "iothub-correlationid": "c1",
    })
    assert response.status == 204
    [message] = hub.ingested
    assert message.body == b"hello"
    assert dict(message.properties) == {"color": "red"}
    assert dict(message.system_properties) == {
        SystemProperty.CONTENT_TYPE: "text/plain", SystemProperty.CONTENT_ENCODING: "utf-8",
        SystemProperty.MESSAGE_ID: "m1", SystemProperty.CORRELATION_ID: "c1",
        SystemProperty.CONNECTION_DEVICE_ID: "d1",
    }
    assert sample_value("edgehub_messages_received_total", {"id": "d1", "route_output": ""}) == received + 1


async def test_a_gzip_content_encoding_is_a_property_and_the_body_stays_as_sent(
    client: TestClient[web.Request, web.Application], hub: FakeHub,
) -> None:
    response = await client.post(EVENTS, data=b"\x1f\x8bnot really gzip", headers={
        "Authorization": token(DEVICE), "Content-Encoding": "gzip"})
    assert response.status == 204
    assert hub.ingested[0].body == b"\x1f\x8bnot really gzip"


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "SharedAccessSignature nonsense"}, 401),
    ({"Authorization": token(DEVICE, key=OTHER_KEY)}, 401),
    ({"Authorization": token(DEVICE, expiry=int(time.time()) - 1)}, 401),
    ({"Authorization": token(OTHER)}, 403),
    ({"Authorization": token(DEVICE), "iothub-app-": "x"}, 400),
    ({"Authorization": token(DEVICE), "iothub-messageid": ""}, 400),
])
async def test_refusals_are_json_errors_and_nothing_is_ingested(
    client: TestClient[web.Request, web.Application], hub: FakeHub, headers: dict[str, str], status: int,
) -> None:
    response = await client.post(EVENTS, data=b"x", headers=headers)
    assert response.status == status
    body = await response.json()
    assert body["status"] == status
    assert body["message"]
    assert hub.ingested == []


async def test_a_body_over_max_message_size_is_413(
    client: TestClient[web.Request, web.Application], hub: FakeHub,
) -> None:
    response = await client.post(EVENTS, data=b"x" * (MAX + 1), headers={"Authorization": token(DEVICE)})
    assert response.status == 413
    assert (await response.json())["status"] == 413
    assert hub.ingested == []


async def test_a_chunked_body_over_max_message_size_is_413(
    client: TestClient[web.Request, web.Application], hub: FakeHub,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * (MAX // 2)

    response = await client.post(EVENTS, data=chunks(), headers={"Authorization": token(DEVICE)})
    assert response.status == 413
    assert hub.ingested == []


async def test_a_full_store_is_507_and_counted_unacked(
    client: TestClient[web.Request, web.Application], hub: FakeHub,
) -> None:
    labels = {"reason": "store_full", "from": "d1", "from_route_output": ""}
    before = sample_value("edgehub_messages_unack_total", labels)
    hub.full = True
    response = await client.post(EVENTS, data=b"x", headers={"Authorization": token(DEVICE)})
    assert response.status == 507
    assert (await response.json())["status"] == 507
    assert sample_value("edgehub_messages_unack_total", labels) == before + 1


async def test_beyond_the_in_flight_bound_requests_get_429_until_the_writes_return(
    client: TestClient[web.Request, web.Application], hub: FakeHub, api: TelemetryApi,
) -> None:
    hub.gate = asyncio.Event()
    headers = {"Authorization": token(DEVICE)}
    waiting = [asyncio.ensure_future(client.post(EVENTS, data=b"w", headers=headers)) for _ in range(2)]
    deadline = asyncio.get_running_loop().time() + 5
    while hub.waiting < 2:
        assert asyncio.get_running_loop().time() < deadline, "the two writes never started"
        await asyncio.sleep(0.01)
    refused = await client.post(EVENTS, data=b"r", headers=headers)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    hub.gate.set()
    assert [r.status for r in await asyncio.gather(*waiting)] == [204, 204]
    assert api.in_flight == 0
    accepted = await client.post(EVENTS, data=b"a", headers=headers)
    assert accepted.status == 204
    assert [m.body for m in hub.ingested] == [b"w", b"w", b"a"]


async def test_a_module_sends_as_itself_with_its_module_id(
    client: TestClient[web.Request, web.Application], hub: FakeHub,
) -> None:
    from tests.heads.http.support import CALLER

    response = await client.post(f"/devices/{CALLER.device_id}/modules/{CALLER.module_id}/messages/events",
                                 data=b"m", headers={"Authorization": token(CALLER)})
    assert response.status == 204
    assert hub.ingested[0].source == CALLER

"""edgeHub's direct-method API (edgehub.heads.http.methods) with a fake MethodPort and a real client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edgehub.heads.http.app import SERVER_OPTIONS
from edgehub.heads.http.methods import MODULE_ID_HEADER, MethodApi
from edgehub.message import Identity
from edgehub.twins.port import MAX_METHOD_PAYLOAD_BYTES, MethodError, MethodResponse, MethodTarget
from tests.heads.http.support import CALLER, DEVICE, TARGET, authenticator, token

MODULE_PATH = f"/twins/{TARGET.device_id}/modules/{TARGET.module_id}/methods"


@dataclass
class FakeMethods:
    """MethodPort answering every call with ``answer`` or raising ``error``; records the calls."""

    answer: MethodResponse = field(default_factory=lambda: MethodResponse(200, b'{"ok": true}'))
    error: MethodError | None = None
    calls: list[tuple[Identity, str, bytes, float, float, Identity | None]] = field(default_factory=list)

    def attach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        raise NotImplementedError

    def detach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        raise NotImplementedError

    def respond(self, identity: Identity, rid: str, response: MethodResponse) -> bool:
        raise NotImplementedError

    async def invoke(self, target: Identity, name: str, payload: bytes, *,
                     connect_timeout: float, response_timeout: float,
                     caller: Identity | None = None) -> MethodResponse:
        self.calls.append((target, name, payload, connect_timeout, response_timeout, caller))
        if self.error is not None:
            raise self.error
        return self.answer


async def _client(methods: FakeMethods | None) -> TestClient[web.Request, web.Application]:
    api = MethodApi(methods, authenticator(), edge_device_id="edge")
    app = web.Application(client_max_size=MAX_METHOD_PAYLOAD_BYTES * 2)
    app.router.add_post("/twins/{device}/methods", api.invoke)
    app.router.add_post("/twins/{device}/modules/{module}/methods", api.invoke)
    server = TestServer(app)
    await server.start_server(**SERVER_OPTIONS)
    client = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture
def methods() -> FakeMethods:
    return FakeMethods()


@pytest.fixture
async def client(methods: FakeMethods) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    test_client = await _client(methods)
    yield test_client
    await test_client.close()


def caller_headers() -> dict[str, str]:
    return {"Authorization": token(CALLER), MODULE_ID_HEADER: CALLER.id}


async def test_an_answered_call_is_200_with_the_targets_status_and_payload_and_edgehubs_defaults(
    client: TestClient[web.Request, web.Application], methods: FakeMethods,
) -> None:
    methods.answer = MethodResponse(404, b'{"why": "no such thing"}')
    response = await client.post(MODULE_PATH, json={"methodName": "reboot", "payload": {"in": 5}},
                                 headers=caller_headers())
    assert response.status == 200
    assert await response.json() == {"status": 404, "payload": {"why": "no such thing"}}
    assert methods.calls == [(TARGET, "reboot", b'{"in":5}', 0.0, 30.0, CALLER)]


async def test_timeouts_and_a_device_target_are_passed_through(
    client: TestClient[web.Request, web.Application], methods: FakeMethods,
) -> None:
    body = {"methodName": "m", "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 2.5}
    response = await client.post(f"/twins/{DEVICE.device_id}/methods", json=body, headers=caller_headers())
    assert response.status == 200
    assert methods.calls == [(DEVICE, "m", b"null", 2.5, 5.0, CALLER)]


@pytest.mark.parametrize(("status", "reason"), [(404, "target not connected"), (504, "no answer in time")])
async def test_a_method_error_is_its_status_with_a_json_reason(
    client: TestClient[web.Request, web.Application], methods: FakeMethods, status: int, reason: str,
) -> None:
    methods.error = MethodError(status, reason)
    response = await client.post(MODULE_PATH, json={"methodName": "m"}, headers=caller_headers())
    assert response.status == status
    assert await response.json() == {"status": status, "message": reason}


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400),
    (b"[1, 2]", 400),
    (b'{"payload": 1}', 400),
    (b'{"methodName": "m", "responseTimeoutInSeconds": -1}', 400),
    (b'{"methodName": "m", "connectTimeoutInSeconds": "soon"}', 400),
    (b'{"methodName": "m", "responseTimeoutInSeconds": true}', 400),
    (json.dumps({"methodName": "m", "payload": "x" * MAX_METHOD_PAYLOAD_BYTES}).encode(), 413),
])
async def test_a_malformed_or_oversized_call_is_refused_before_the_target_is_asked(
    client: TestClient[web.Request, web.Application], methods: FakeMethods, body: bytes, status: int,
) -> None:
    response = await client.post(MODULE_PATH, data=body, headers=caller_headers())
    assert response.status == status
    assert (await response.json())["status"] == status
    assert methods.calls == []


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": token(CALLER, expiry=1)}, 401),
    ({"Authorization": token(CALLER), MODULE_ID_HEADER: TARGET.id}, 403),
    ({"Authorization": token(DEVICE)}, 403),
])
async def test_only_an_authenticated_module_of_this_device_may_call_as_itself(
    client: TestClient[web.Request, web.Application], methods: FakeMethods, headers: dict[str, str],
    status: int,
) -> None:
    response = await client.post(MODULE_PATH, json={"methodName": "m"}, headers=headers)
    assert response.status == status
    assert methods.calls == []


async def test_without_a_method_port_a_valid_call_is_501() -> None:
    client = await _client(None)
    try:
        response = await client.post(MODULE_PATH, json={"methodName": "m"}, headers=caller_headers())
        assert response.status == 501
        assert (await response.json())["status"] == 501
    finally:
        await client.close()

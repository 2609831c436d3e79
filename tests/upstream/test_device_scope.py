"""The device scope from upstream: IoT Hub's scope pages parsed into identities, paged over a real
HTTPS server (aiohttp, with the dev CA), cached in a 0600 file for offline starts, refreshed on a
timer and after refused credentials (rate-limited), and the hub's registry authenticating a
scope identity's SAS token beside the config file's identities."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.config_file import parse_config
from edgehub.errors import AuthError
from edgehub.hub import Hub
from edgehub.message import Identity
from edgehub.settings import load_settings
from edgehub.store.memory import MemoryStore
from edgehub.testing.clock import FakeClock, settle
from edgehub.tls import ensure_dev_certificates, server_ssl_context
from edgehub.upstream.device_scope import (
    SCOPE_API_VERSION,
    UNKNOWN_REFRESH_SECS,
    DeviceScope,
    ScopeError,
    fetch_scope,
    load_cache,
    parse_scope_page,
    save_cache,
    scope_path,
)
from edgehub.upstream.https_post import https_post
from edgehub.upstream.transport import tls_context

KEY_A = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="
KEY_B = "YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI="
THUMBPRINT = "ab" * 32


def sas(key: str, kind: str = "sas") -> dict[str, Any]:
    return {"type": kind, "symmetricKey": {"primaryKey": key, "secondaryKey": None}}


PAGE_ONE = {
    "devices": [
        {"deviceId": "sensor", "status": "enabled", "authentication": sas(KEY_A)},
        {"deviceId": "retired", "status": "disabled", "authentication": sas(KEY_A)},
        {"deviceId": "camera", "status": "enabled", "authentication": {
            "type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": THUMBPRINT.upper()}}},
        {"deviceId": "ca-signed", "status": "enabled", "authentication": {"type": "certificateAuthority"}},
    ],
    "modules": [{"deviceId": "edge", "moduleId": "filter", "authentication": sas(KEY_B)}],
    "continuationLink": "page-2",
}
PAGE_TWO = {"devices": [], "modules": [{"deviceId": "edge", "moduleId": "$edgeAgent",
                                        "authentication": sas(KEY_B)}], "continuationLink": None}
EXPECTED = [
    IdentitySpec("sensor", primary_key=KEY_A),
    IdentitySpec("camera", x509_thumbprint=THUMBPRINT),
    IdentitySpec("edge", "filter", primary_key=KEY_B),
    IdentitySpec("edge", "$edgeAgent", primary_key=KEY_B),
]


def test_a_scope_page_becomes_the_identities_the_hub_can_check() -> None:
    specs, continuation = parse_scope_page(json.dumps(PAGE_ONE).encode())
    assert specs == EXPECTED[:3]  # the disabled device and the CA-signed one are left out
    assert continuation == "page-2"


@pytest.mark.parametrize("answer", [b"<html>", b"[]", b'{"devices": {}}', b'{"modules": [{"moduleId": "m"}]}',
                                    b'{"devices": [], "continuationLink": 3}'])
def test_an_answer_that_is_no_scope_page_is_a_scope_error(answer: bytes) -> None:
    with pytest.raises(ScopeError):
        parse_scope_page(answer)


@pytest.fixture
async def iot_hub(tmp_path: Path) -> AsyncIterator[tuple[int, Path, list[dict[str, Any]]]]:
    """An HTTPS server answering the scope API in two pages (the second chunked), recording requests."""
    certs = ensure_dev_certificates(tmp_path / "certs", ["localhost"])
    seen: list[dict[str, Any]] = []

    async def scope(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({"path": request.path_qs, "auth": request.headers.get("Authorization"), "body": body})
        if body.get("continuationLink") != "page-2":
            return web.json_response(PAGE_ONE)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(json.dumps(PAGE_TWO).encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/devices/{device}/modules/{module}/devicesAndModulesInTargetDeviceScope", scope)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=server_ssl_context(certs.cert_file, certs.key_file, None))
    await site.start()
    port = runner.addresses[0][1]
    yield port, certs.ca_file, seen
    await runner.cleanup()


async def test_every_page_of_the_scope_is_read_over_https_with_the_hubs_token(
    iot_hub: tuple[int, Path, list[dict[str, Any]]],
) -> None:
    port, ca_file, seen = iot_hub
    context = tls_context(ca_file)

    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        return await https_post("localhost", port, path, body, authorization="SharedAccessSignature x",
                                context=context)

    assert await fetch_scope(post, "edge") == EXPECTED
    assert [r["path"] for r in seen] == [scope_path("edge")] * 2
    assert seen[0]["path"].endswith(f"api-version={SCOPE_API_VERSION}")
    assert "%24edgeHub" in seen[0]["path"]
    assert seen[0]["auth"] == "SharedAccessSignature x"
    assert seen[0]["body"] == {"pageSize": 1000, "authChain": "edge"}
    assert seen[1]["body"]["continuationLink"] == "page-2"


async def test_a_refused_scope_request_is_a_scope_error(
    iot_hub: tuple[int, Path, list[dict[str, Any]]],
) -> None:
    port, ca_file, _ = iot_hub
    context = tls_context(ca_file)

    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        return await https_post("localhost", port, path.replace("devicesAndModules", "nothing"), body,
                                authorization="x", context=context)

    with pytest.raises(ScopeError, match="HTTP 404"):
        await fetch_scope(post, "edge")


def test_the_cache_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "device-scope.json"
    save_cache(path, EXPECTED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_cache(path) == tuple(EXPECTED)
    path.write_text("{garbled")
    assert load_cache(path) == ()


async def test_each_new_answer_is_cached_and_a_failed_refresh_keeps_the_cache(tmp_path: Path) -> None:
    clock = FakeClock()
    answers: list[list[IdentitySpec] | Exception] = [EXPECTED[:1], ScopeError("HTTP 503"), EXPECTED]
    changes: list[tuple[IdentitySpec, ...]] = []

    async def fetch() -> list[IdentitySpec]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    scope = DeviceScope(fetch, tmp_path / "scope.json", clock, changes.append, refresh_secs=600)
    task = asyncio.create_task(scope.run())
    try:
        await settle()
        assert changes == [tuple(EXPECTED[:1])]
        await clock.advance(600)  # the failed refresh: the cached identities stay
        assert scope.identities == tuple(EXPECTED[:1])
        assert load_cache(tmp_path / "scope.json") == tuple(EXPECTED[:1])
        await clock.advance(60)  # retried a minute later
        assert changes[-1] == tuple(EXPECTED)
        assert answers == []
    finally:
        task.cancel()


async def test_refused_credentials_refresh_the_scope_at_most_every_30_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    calls: list[float] = []

    async def fetch() -> list[IdentitySpec]:
        calls.append(clock.monotonic())
        return []

    scope = DeviceScope(fetch, tmp_path / "scope.json", clock, lambda _: None, refresh_secs=3600)
    task = asyncio.create_task(scope.run())
    try:
        await settle()
        scope.credentials_refused()  # right after a refresh: not yet
        await settle()
        assert calls == [0.0]
        await clock.advance(UNKNOWN_REFRESH_SECS)
        scope.credentials_refused()
        await settle()
        assert calls == [0.0, UNKNOWN_REFRESH_SECS]
    finally:
        task.cancel()


async def test_the_hub_authenticates_scope_identities_and_the_files_entries_win(clock: FakeClock) -> None:
    file_key = "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="
    config = parse_config({"schemaVersion": "1.1", "routes": {},
                           "identities": [{"deviceId": "sensor", "primaryKey": file_key}]}, "config.json")
    hub = Hub(load_settings({"EdgeDeviceId": "edge", "IotHubHostName": "hub.azure-devices.net"}), config,
              MemoryStore(), clock=clock)
    hub.take_scope(tuple(EXPECTED))
    now = clock.time()

    def token(identity: Identity, key: str) -> str:
        return make_sas_token(sas_resource("hub.azure-devices.net", identity), key, int(now) + 600)

    agent = Identity("edge", "$edgeAgent")
    assert hub.registry.authenticate_sas(agent, token(agent, KEY_B), now).identity == agent
    sensor = Identity("sensor")
    assert hub.registry.authenticate_sas(sensor, token(sensor, file_key), now).identity == sensor
    with pytest.raises(AuthError):
        hub.registry.authenticate_sas(sensor, token(sensor, KEY_A), now)  # the scope's key lost to the file's
    await hub.stop()


"""configSource=twin in virtual time: the hub's routes and store settings from the desired properties
its own twin gets upstream (over the config file's, cached across restarts), refusals reported in
lastDesiredStatus with the current routes kept, and configSource=local ignoring the twin."""

from __future__ import annotations

from typing import Any

import pytest

from edgehub.config_file import HubConfig, parse_config, with_desired_properties
from edgehub.errors import ConfigError
from edgehub.hub import HUB_TWIN_FLUSH_SECS, Hub
from edgehub.message import Identity, Message, SystemProperty
from edgehub.settings import load_settings
from edgehub.store.memory import MemoryKeyValue, MemoryStore
from edgehub.testing.clock import FakeClock, settle
from tests.test_hub import RecordingLink, until

HUB = Identity("edge", "$edgeHub")
SINK = Identity("edge", "sink")
DEVICE_SOURCE = {SystemProperty.CONNECTION_DEVICE_ID: "sensor"}
TO_SINK = 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/fromtwin")'


def file_config() -> HubConfig:
    """The file: everything upstream, a day to live, and the local registry."""
    return parse_config({
        "schemaVersion": "1.1",
        "routes": {"up": "FROM /messages/* INTO $upstream"},
        "storeAndForwardConfiguration": {"timeToLiveSecs": 86400},
        "identities": [{"deviceId": "sensor", "primaryKey": "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"}],
    }, "config.json")


def twin_desired(routes: dict[str, Any], ttl: int = 60) -> dict[str, Any]:
    return {"schemaVersion": "1.1", "routes": routes, "storeAndForwardConfiguration": {"timeToLiveSecs": ttl}}


def make(store: MemoryStore, clock: FakeClock, source: str = "twin") -> Hub:
    settings = load_settings({"EdgeDeviceId": "edge", "configSource": source})
    return Hub(settings, file_config(), store, clock=clock)


async def reported(hub: Hub, clock: FakeClock) -> dict[str, Any]:
    await clock.advance(HUB_TWIN_FLUSH_SECS)
    await settle()
    result: dict[str, Any] = (await hub.twins.get_twin(HUB))["reported"]
    return result


async def test_desired_properties_from_upstream_replace_the_files_routes_and_ttl(clock: FakeClock) -> None:
    hub = make(MemoryStore(), clock)
    await hub.start()
    try:
        assert [r.name for r in hub.config.routes] == ["up"]
        hub.twin_service.replace_desired(HUB, twin_desired({"toSink": TO_SINK}), 4)
        assert [r.name for r in hub.config.routes] == ["toSink"]
        assert hub.config.time_to_live_secs == 60
        assert [i.device_id for i in hub.config.identities] == ["sensor"]  # the registry stays the file's
        link = RecordingLink()
        hub.attach(SINK, link)
        await hub.ingest([Message(b"t", {}, DEVICE_SOURCE)])
        await until(lambda: link.received == [("fromtwin", b"t")])
        status = await reported(hub, clock)
        assert status["lastDesiredVersion"] == 4
        assert status["lastDesiredStatus"]["code"] == 200
    finally:
        await hub.stop()


async def test_a_desired_patch_from_upstream_changes_the_routes(clock: FakeClock) -> None:
    hub = make(MemoryStore(), clock)
    await hub.start()
    try:
        hub.twin_service.replace_desired(HUB, twin_desired({"toSink": TO_SINK}), 4)
        patch = {"routes": {"toSink": None, "up": "FROM /* INTO $upstream"}}
        hub.twin_service.apply_desired_patch(HUB, patch, 5)
        assert [r.name for r in hub.config.routes] == ["up"]
        assert (await reported(hub, clock))["lastDesiredVersion"] == 5
    finally:
        await hub.stop()


async def test_a_restart_without_upstream_runs_the_cached_twin_config(clock: FakeClock) -> None:
    kv = MemoryKeyValue()
    first = make(MemoryStore(kv=kv), clock)
    first.twin_service.replace_desired(HUB, twin_desired({"toSink": TO_SINK}), 4)
    await first.stop()
    second = make(MemoryStore(kv=kv), clock)  # the same data, read afresh
    try:
        assert [r.name for r in second.config.routes] == ["toSink"]
        assert second.config.source == f"twin of {HUB}"
    finally:
        await second.stop()


async def test_an_invalid_twin_config_is_refused_and_the_current_routes_stay(clock: FakeClock) -> None:
    hub = make(MemoryStore(), clock)
    await hub.start()
    try:
        hub.twin_service.replace_desired(HUB, twin_desired({"toSink": TO_SINK}), 4)
        hub.twin_service.apply_desired_patch(HUB, {"routes": {"bad": "FROM /messages/* INTO nowhere("}}, 5)
        assert [r.name for r in hub.config.routes] == ["toSink"]
        status = await reported(hub, clock)
        assert status["lastDesiredStatus"]["code"] == 400
        assert "routes.bad" in status["lastDesiredStatus"]["description"]
        assert status["lastDesiredVersion"] == 5
    finally:
        await hub.stop()


async def test_a_file_change_keeps_the_twins_routes_and_takes_the_files_registry(clock: FakeClock) -> None:
    hub = make(MemoryStore(), clock)
    await hub.start()
    try:
        hub.twin_service.replace_desired(HUB, twin_desired({"toSink": TO_SINK}), 4)
        changed = parse_config({"schemaVersion": "1.1", "routes": {"other": "FROM /* INTO $upstream"}},
                               "config.json")
        hub.apply_config(changed)
        assert [r.name for r in hub.config.routes] == ["toSink"]
        assert hub.config.identities == ()
    finally:
        await hub.stop()


async def test_config_source_local_ignores_the_twin(clock: FakeClock) -> None:
    hub = make(MemoryStore(), clock, source="local")
    await hub.start()
    try:
        hub.twin_service.replace_desired(HUB, twin_desired({"toSink": TO_SINK}), 4)
        assert [r.name for r in hub.config.routes] == ["up"]
    finally:
        await hub.stop()


async def test_desired_properties_without_a_config_leave_the_files(clock: FakeClock) -> None:
    hub = make(MemoryStore(), clock)
    await hub.start()
    try:
        hub.twin_service.replace_desired(HUB, {"someSetting": 1}, 2)
        assert [r.name for r in hub.config.routes] == ["up"]
    finally:
        await hub.stop()


def test_a_twin_never_supplies_the_local_registry() -> None:
    with pytest.raises(ConfigError, match="identities: a local registry is never taken from a twin"):
        with_desired_properties(file_config(), twin_desired({}) | {"identities": []}, "twin")


def test_unknown_keys_in_the_twin_config_are_refused_with_their_location() -> None:
    with pytest.raises(ConfigError, match=r"twin\.routez: unknown key"):
        with_desired_properties(file_config(), twin_desired({}) | {"routez": {}}, "twin")



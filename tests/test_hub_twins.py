"""The hub's twin wiring in virtual time: manifest desired properties, reported changes as twin change
notifications, the ``$edgeHub`` twin's clients and lastDesiredStatus."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from edgehub.config_file import HubConfig, parse_config
from edgehub.hub import HUB_TWIN_FLUSH_SECS, Hub
from edgehub.message import Identity
from edgehub.testing.clock import FakeClock, settle
from tests.test_hub import RecordingLink, until

FILTER = Identity("edge", "filter")
SINK = Identity("edge", "sink")
HUB = Identity("edge", "$edgeHub")


def manifest(desired: dict[str, Any], routes: dict[str, str] | None = None) -> HubConfig:
    return parse_config(
        {
            "modulesContent": {
                "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": routes or {}}},
                "filter": {"properties.desired": desired},
            }
        },
        "test",
    )


async def test_manifest_desired_properties_are_the_modules_twin(make_hub: Callable[[HubConfig], Hub]) -> None:
    hub = make_hub(manifest({"rate": 5}))
    await hub.start()
    twin = await hub.twins.get_twin(FILTER)
    assert twin["desired"]["rate"] == 5


async def test_reloaded_manifest_sends_the_difference_to_a_desired_listener(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(manifest({"rate": 5, "old": 1}))
    await hub.start()
    patches: list[dict[str, Any]] = []
    hub.twins.subscribe_desired(FILTER, patches.append)
    version = (await hub.twins.get_twin(FILTER))["desired"]["$version"]
    hub.apply_config(manifest({"rate": 6}))
    assert patches == [{"rate": 6, "old": None, "$version": version + 1}]


async def test_reported_change_is_routed_as_a_twin_change_notification(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(
        manifest({}, {"n": 'FROM /twinChangeNotifications INTO BrokeredEndpoint("/modules/sink/inputs/tw")'})
    )
    await hub.start()
    link = RecordingLink()
    hub.attach(SINK, link)
    version = await hub.twins.patch_reported(FILTER, {"door": "open"})
    await until(lambda: len(link.received) == 1)
    [(input_name, body)] = link.received
    assert input_name == "tw"
    assert json.loads(body) == {"version": version, "properties": {"reported": {"door": "open"}}}


async def test_hub_twin_lists_connected_and_disconnected_modules(
    make_hub: Callable[[HubConfig], Hub],
    clock: FakeClock,
) -> None:
    hub = make_hub(manifest({}))
    await hub.start()
    hub.client_connected(FILTER)
    await clock.advance(HUB_TWIN_FLUSH_SECS)
    await settle()
    clients = (await hub.twins.get_twin(HUB))["reported"]["clients"]
    [(key, entry)] = clients.items()
    assert "filter" in key
    assert entry["status"] == "Connected"
    hub.client_disconnected(FILTER)
    await clock.advance(HUB_TWIN_FLUSH_SECS)
    await settle()
    entry = next(iter((await hub.twins.get_twin(HUB))["reported"]["clients"].values()))
    assert entry["status"] == "Disconnected"
    assert "lastDisconnectedTimeUtc" in entry


async def test_refused_config_shows_in_last_desired_status(
    make_hub: Callable[[HubConfig], Hub],
    clock: FakeClock,
) -> None:
    hub = make_hub(manifest({}))
    await hub.start()
    await clock.advance(HUB_TWIN_FLUSH_SECS)
    await settle()
    ok = (await hub.twins.get_twin(HUB))["reported"]
    assert ok["lastDesiredStatus"]["code"] == 200
    hub.config_refused("routes.r: bad route")
    await clock.advance(HUB_TWIN_FLUSH_SECS)
    await settle()
    refused = (await hub.twins.get_twin(HUB))["reported"]
    assert refused["lastDesiredStatus"] == {"code": 400, "description": "routes.r: bad route"}
    assert refused["lastDesiredVersion"] == ok["lastDesiredVersion"] + 1

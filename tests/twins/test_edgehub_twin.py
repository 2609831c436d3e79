"""The $edgeHub twin's reported properties: edgeHub's shape, patch by patch."""

from __future__ import annotations

from edgehub.message import Identity
from edgehub.twins.document import merge_patch
from edgehub.twins.edgehub_twin import EdgeHubReported, VersionInfo, encode_client_key, utc_text

HUB = Identity("edge", "$edgeHub")
T0 = 1_700_000_000.0
VERSION = VersionInfo("0.1.0", "42", "abc")
BASE = {"schemaVersion": "1.0", "version": {"version": "0.1.0", "build": "42", "commit": "abc"}}


def test_start_clears_the_clients() -> None:
    assert EdgeHubReported(HUB, VERSION).started() == {**BASE, "clients": None}


def test_client_keys_escape_what_twin_keys_cannot_hold() -> None:
    assert encode_client_key("edge/$edgeAgent") == "edge/%24edgeAgent"
    assert encode_client_key("a.b c") == "a%2Eb%20c"


def test_connected_then_disconnected_module_keeps_its_connect_time() -> None:
    reported = EdgeHubReported(HUB, VERSION)
    start = reported.started()
    module = Identity("edge", "filter")
    connected = reported.client_connected(module, T0)
    entry = {"status": "Connected", "lastConnectedTimeUtc": "2023-11-14T22:13:20.000000Z"}
    assert connected == {**BASE, "clients": {"edge/filter": entry}}
    disconnected = reported.client_disconnected(module, T0 + 60)
    assert disconnected == {**BASE, "clients": {"edge/filter": {
        "status": "Disconnected", "lastDisconnectedTimeUtc": utc_text(T0 + 60)}}}
    document = merge_patch(merge_patch(start, connected), disconnected)
    assert document["clients"]["edge/filter"] == {
        "status": "Disconnected",
        "lastConnectedTimeUtc": utc_text(T0),
        "lastDisconnectedTimeUtc": utc_text(T0 + 60),
    }
    assert reported.reported()["clients"] == document["clients"]


def test_disconnected_device_is_removed_and_the_hub_is_never_listed() -> None:
    reported = EdgeHubReported(HUB, VERSION)
    device = Identity("sensor")
    reported.client_connected(device, T0)
    assert reported.client_disconnected(device, T0 + 1) == {**BASE, "clients": {"sensor": None}}
    assert reported.client_connected(HUB, T0) is None
    assert reported.client_disconnected(HUB, T0) is None
    assert reported.reported() == {**BASE, "clients": {}}


def test_applied_config_reports_its_version_and_status() -> None:
    reported = EdgeHubReported(HUB, VERSION)
    assert reported.desired_applied(7, 400, "routes.r1: unknown endpoint") == {
        **BASE, "lastDesiredVersion": 7,
        "lastDesiredStatus": {"code": 400, "description": "routes.r1: unknown endpoint"}, "clients": {},
    }
    reported.desired_applied(8, 200)
    assert reported.reported() == {
        **BASE, "lastDesiredVersion": 8, "lastDesiredStatus": {"code": 200, "description": ""}, "clients": {},
    }

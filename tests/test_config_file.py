"""Tests of edgehub.config_file: both file shapes, schemas 1.0-1.3, identities, every refusal.

Documents are built as dicts and as files under tmp_path; the example configs/ are loaded as shipped.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.auth.identities import IdentitySpec
from edgehub.config_file import (
    DEFAULT_TIME_TO_LIVE_SECS,
    HubConfig,
    default_config,
    load_config_bytes,
    load_config_file,
    parse_config,
)
from edgehub.errors import ConfigError
from edgehub.routing.router import compile_routes
from edgehub.routing.spec import RouteSpec
from edgehub.store.base import DEFAULT_PRIORITY, DrainOrder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KEY = base64.b64encode(b"p" * 32).decode()
KEY2 = base64.b64encode(b"s" * 32).decode()
UPSTREAM = "FROM /messages/* INTO $upstream"
TO_FILTER = 'FROM /messages/* INTO BrokeredEndpoint("/modules/filter/inputs/in1")'


def desired(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"schemaVersion": "1.1", "routes": {"up": UPSTREAM}}
    document.update(overrides)
    return document


def manifest(desired_properties: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "modulesContent": {
            "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {}}},
            "$edgeHub": {"properties.desired": desired_properties},
        },
        **top,
    }


def problems_of(document: object, base_dir: Path | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "test.json", base_dir)
    return caught.value.problems


def the_problem(document: object) -> tuple[str, str]:
    [problem] = problems_of(document)
    return problem


# --- shapes and schemas ---------------------------------------------------------------------------


def test_schema_1_0_routes_are_strings_with_default_priority_and_ttl() -> None:
    config = parse_config({"schemaVersion": "1.0", "routes": {"up": UPSTREAM}}, "f.json")

    assert config.routes == (
        RouteSpec(name="up", text=UPSTREAM, priority=DEFAULT_PRIORITY, time_to_live_secs=0),
    )
    assert config.time_to_live_secs == DEFAULT_TIME_TO_LIVE_SECS == 7200
    assert config.max_store_size_bytes is None
    assert config.identities == ()
    assert (config.source, config.schema_version) == ("f.json", "1.0")


def test_schema_1_1_routes_carry_priority_and_ttl_and_may_still_be_strings() -> None:
    config = parse_config(
        desired(
            routes={
                "urgent": {"route": UPSTREAM, "priority": 0, "timeToLiveSecs": 86400},
                "filter": {"route": TO_FILTER},
                "plain": UPSTREAM,
            }
        ),
        "f.json",
    )

    assert config.routes == (
        RouteSpec(name="urgent", text=UPSTREAM, priority=0, time_to_live_secs=86400),
        RouteSpec(name="filter", text=TO_FILTER, priority=DEFAULT_PRIORITY, time_to_live_secs=0),
        RouteSpec(name="plain", text=UPSTREAM, priority=DEFAULT_PRIORITY, time_to_live_secs=0),
    )


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "1.3", "1.1.0", "1.2.0"])
def test_edgehub_schema_versions_load(version: str) -> None:
    assert parse_config(desired(schemaVersion=version), "f.json").schema_version == version


@pytest.mark.parametrize("version", ["2.0", "1.4", "1", "one", "", 1.1, [1, 1]])
def test_unknown_schema_version_is_refused(version: object) -> None:
    location, reason = the_problem(desired(schemaVersion=version))

    assert location == "schemaVersion"
    assert "unsupported schemaVersion" in reason


def test_missing_schema_version_is_refused() -> None:
    location, reason = the_problem({"routes": {"up": UPSTREAM}})

    assert (location, reason.split(":")[0]) == ("schemaVersion", "missing")


def test_store_and_forward_configuration_sets_ttl_and_store_limit() -> None:
    config = parse_config(
        desired(
            storeAndForwardConfiguration={"timeToLiveSecs": 600, "storeLimits": {"maxSizeBytes": 1 << 30}}
        ),
        "f.json",
    )

    assert (config.time_to_live_secs, config.max_store_size_bytes) == (600, 1 << 30)


def test_drain_order_is_fifo_unless_configured() -> None:
    config = parse_config(desired(), "f.json")

    assert config.drain_order is DrainOrder.FIFO
    assert config.drain_order_of("$upstream") is DrainOrder.FIFO
    assert default_config().drain_order_of("/modules/filter/inputs/in") is DrainOrder.FIFO


def test_drain_order_applies_globally_and_per_endpoint() -> None:
    config = parse_config(
        desired(storeAndForwardConfiguration={
            "drainOrder": "newestFirst",
            "drainOrderByEndpoint": {
                "/modules/filter/inputs/in": "fifo",
                'BrokeredEndpoint("/modules/sink/inputs/raw")': "FIFO",
                "modules/alarm/inputs/in/": "NewestFirst",
            },
        }),
        "f.json",
    )

    assert config.drain_order is DrainOrder.NEWEST_FIRST
    assert config.drain_order_of("$upstream") is DrainOrder.NEWEST_FIRST
    assert config.drain_order_of("/modules/filter/inputs/in") is DrainOrder.FIFO
    assert config.drain_order_of("/modules/sink/inputs/raw") is DrainOrder.FIFO
    assert config.drain_order_of("/modules/alarm/inputs/in") is DrainOrder.NEWEST_FIRST


def test_upstream_alone_can_drain_newest_first() -> None:
    config = parse_config(
        desired(storeAndForwardConfiguration={"drainOrderByEndpoint": {"$upstream": "newestFirst"}}),
        "f.json",
    )

    assert config.drain_order_of("$upstream") is DrainOrder.NEWEST_FIRST
    assert config.drain_order_of("/modules/filter/inputs/in") is DrainOrder.FIFO


def test_edgehub_older_max_storage_space_bytes_is_read_as_the_store_limit() -> None:
    config = parse_config(desired(storeAndForwardConfiguration={"maxStorageSpaceBytes": 5000}), "f.json")

    assert (config.time_to_live_secs, config.max_store_size_bytes) == (7200, 5000)


def test_deployment_manifest_yields_edgehub_desired_properties_and_top_level_identities() -> None:
    identities = [{"deviceId": "s1", "primaryKey": KEY}]
    config = parse_config(
        manifest(desired(), identities=identities, **{"$schema-template": "4.0.0"}), "m.json"
    )

    assert config.routes == (RouteSpec(name="up", text=UPSTREAM),)
    assert config.identities == (IdentitySpec(device_id="s1", primary_key=KEY),)
    assert config.warnings == ()


def test_manifest_under_its_older_name_module_content_loads() -> None:
    document = {"moduleContent": manifest(desired())["modulesContent"]}

    assert parse_config(document, "m.json").routes == (RouteSpec(name="up", text=UPSTREAM),)


def test_manifest_without_edgehub_twin_is_refused() -> None:
    document: dict[str, Any] = {"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}

    assert the_problem(document) == (
        "modulesContent.$edgeHub",
        "missing: the manifest has no $edgeHub module twin",
    )


def test_manifest_problem_locations_include_the_path_to_the_desired_properties() -> None:
    location, _ = the_problem(manifest(desired(routes={"up": {"route": UPSTREAM, "priority": 10}})))

    assert location == 'modulesContent.$edgeHub["properties.desired"].routes.up.priority'


def test_identities_inside_the_manifest_desired_properties_are_refused_with_a_hint() -> None:
    location, reason = the_problem(manifest(desired(identities=[])))

    assert location.endswith('["properties.desired"].identities')
    assert "top level" in reason


@pytest.mark.parametrize("document", [{"routs": {}}, {}, [], "text", 3])
def test_a_document_of_neither_shape_is_refused(document: object) -> None:
    location, reason = the_problem(document)

    assert location == "test.json"
    assert "neither" in reason or "must be a JSON object" in reason


def test_mqtt_broker_section_is_ignored_with_a_warning() -> None:
    config = parse_config(desired(schemaVersion="1.2", mqttBroker={"authorizations": []}), "f.json")

    assert [location for location, _ in config.warnings] == ["mqttBroker"]


def test_signed_manifest_integrity_is_refused_rather_than_trusted_unchecked() -> None:
    location, reason = the_problem(desired(schemaVersion="1.3", integrity={"header": {}}))

    assert location == "integrity"
    assert "not supported" in reason


def test_twin_metadata_keys_are_ignored() -> None:
    config = parse_config(desired(**{"$version": 4, "$metadata": {}}), "f.json")

    assert config.warnings == ()


# --- refusals with their JSON path ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "location", "fragment"),
    [
        (desired(routes=[]), "routes", "must be a JSON object"),
        (desired(routes={"up": ""}), "routes.up", "route text is empty"),
        (desired(routes={"up": 5}), "routes.up", "must be a route string or"),
        (desired(routes={"up": None}), "routes.up", "must be a route string or"),
        (
            {"schemaVersion": "1.0", "routes": {"up": {"route": UPSTREAM}}},
            "routes.up",
            "schema 1.0 routes are strings",
        ),
        (desired(routes={"up": {"priority": 1}}), "routes.up.route", "must be a non-empty string"),
        (desired(routes={"up": {"route": UPSTREAM, "priority": 10}}), "routes.up.priority", "0 to 9"),
        (desired(routes={"up": {"route": UPSTREAM, "priority": -1}}), "routes.up.priority", "0 to 9"),
        (desired(routes={"up": {"route": UPSTREAM, "priority": "1"}}), "routes.up.priority", "0 to 9"),
        (desired(routes={"up": {"route": UPSTREAM, "priority": True}}), "routes.up.priority", "0 to 9"),
        (desired(routes={"up": {"route": UPSTREAM, "priority": 1.5}}), "routes.up.priority", "0 to 9"),
        (
            desired(routes={"up": {"route": UPSTREAM, "timeToLiveSecs": -5}}),
            "routes.up.timeToLiveSecs",
            "seconds >= 0",
        ),
        (desired(routes={"up": {"route": UPSTREAM, "ttl": 5}}), "routes.up.ttl", "unknown key"),
        (desired(routes={"a.b": 7}), 'routes["a.b"]', "must be a route string"),
        (
            desired(storeAndForwardConfiguration={"timeToLiveSecs": -1}),
            "storeAndForwardConfiguration.timeToLiveSecs",
            "positive number of seconds",
        ),
        (
            desired(storeAndForwardConfiguration={"timeToLiveSecs": 0}),
            "storeAndForwardConfiguration.timeToLiveSecs",
            "positive number of seconds",
        ),
        (
            desired(storeAndForwardConfiguration={"timeToLiveSecs": 2**31}),
            "storeAndForwardConfiguration.timeToLiveSecs",
            "positive number of seconds",
        ),
        (
            desired(storeAndForwardConfiguration={"storeLimits": {"maxSizeBytes": 0}}),
            "storeAndForwardConfiguration.storeLimits.maxSizeBytes",
            "positive number of bytes",
        ),
        (
            desired(storeAndForwardConfiguration={"storeLimits": {}}),
            "storeAndForwardConfiguration.storeLimits.maxSizeBytes",
            "missing",
        ),
        (
            desired(
                storeAndForwardConfiguration={"storeLimits": {"maxSizeBytes": 1}, "maxStorageSpaceBytes": 1}
            ),
            "storeAndForwardConfiguration.maxStorageSpaceBytes",
            "give storeLimits.maxSizeBytes only",
        ),
        (desired(storeAndForwardConfiguration=7200), "storeAndForwardConfiguration", "must be a JSON object"),
        (
            desired(storeAndForwardConfiguration={"drainOrder": "lifo"}),
            "storeAndForwardConfiguration.drainOrder",
            'must be "fifo" or "newestFirst"',
        ),
        (
            desired(storeAndForwardConfiguration={"drainOrder": 1}),
            "storeAndForwardConfiguration.drainOrder",
            'must be "fifo" or "newestFirst"',
        ),
        (
            desired(storeAndForwardConfiguration={"drainOrderByEndpoint": "newestFirst"}),
            "storeAndForwardConfiguration.drainOrderByEndpoint",
            "must be a JSON object",
        ),
        (
            desired(storeAndForwardConfiguration={"drainOrderByEndpoint": {"$upstream": "oldestLast"}}),
            "storeAndForwardConfiguration.drainOrderByEndpoint.$upstream",
            'must be "fifo" or "newestFirst"',
        ),
        (
            desired(storeAndForwardConfiguration={"drainOrderByEndpoint": {"filter": "fifo"}}),
            "storeAndForwardConfiguration.drainOrderByEndpoint.filter",
            "unknown endpoint",
        ),
        (
            desired(storeAndForwardConfiguration={"drainOrderByEndpoint": {
                "/modules/f/inputs/i": "fifo", 'BrokeredEndpoint("/modules/f/inputs/i")': "newestFirst",
            }}),
            'storeAndForwardConfiguration.drainOrderByEndpoint["BrokeredEndpoint(\\"/modules/f/inputs/i\\")"]',
            "a second time",
        ),
        (desired(storeAndForwardConfig={}), "storeAndForwardConfig", "unknown key"),
        (desired(identities={}), "identities", "must be a list"),
        (desired(identities=["s1"]), "identities[0]", "must be a JSON object"),
        (desired(identities=[{"primaryKey": KEY}]), "identities[0].deviceId", "missing"),
        (desired(identities=[{"deviceId": "a/b", "primaryKey": KEY}]), "identities[0].deviceId", "1 to 128"),
        (
            desired(identities=[{"deviceId": 7, "primaryKey": KEY}]),
            "identities[0].deviceId",
            "must be a string",
        ),
        (desired(identities=[{"deviceId": "s1\n", "primaryKey": KEY}]), "identities[0].deviceId", "1 to 128"),
        (
            desired(identities=[{"deviceId": "edge", "moduleId": "$edgeAgent", "primaryKey": KEY}]),
            "identities[0].moduleId",
            "reserved for system modules",
        ),
        (
            desired(identities=[{"deviceId": "s1", "primaryKey": "not base64!"}]),
            "identities[0].primaryKey",
            "base64",
        ),
        (
            desired(identities=[{"deviceId": "s1", "primaryKey": base64.b64encode(b"short").decode()}]),
            "identities[0].primaryKey",
            "16-64 bytes",
        ),
        (
            desired(identities=[{"deviceId": "s1", "primaryKey": 42}]),
            "identities[0].primaryKey",
            "base64 string",
        ),
        (
            desired(identities=[{"deviceId": "s1", "secondaryKey": KEY}]),
            "identities[0].secondaryKey",
            "without",
        ),
        (desired(identities=[{"deviceId": "s1"}]), "identities[0]", "has no credential"),
        (
            desired(identities=[{"deviceId": "s1", "x509Thumbprint": "abc"}]),
            "identities[0].x509Thumbprint",
            "SHA-1 (40) or SHA-256 (64)",
        ),
        (
            desired(identities=[{"deviceId": "s1", "x509CaFile": "/no/such/ca.pem"}]),
            "identities[0].x509CaFile",
            "no such file",
        ),
        (
            desired(identities=[{"deviceId": "s1", "primarykey": KEY}]),
            "identities[0].primarykey",
            "unknown key",
        ),
    ],
)
def test_invalid_value_is_refused_with_its_json_path(document: object, location: str, fragment: str) -> None:
    problems = problems_of(document)

    assert location in [found for found, _ in problems]
    assert any(fragment in reason for found, reason in problems if found == location), problems


def test_every_problem_in_the_file_is_listed() -> None:
    document = desired(
        schemaVersion="9.9",
        routes={"a": {"route": UPSTREAM, "priority": 11}, "b": ""},
        storeAndForwardConfiguration={"timeToLiveSecs": -1},
        identities=[{"deviceId": "s1"}, {"deviceId": "s2", "primaryKey": "%%%"}],
    )

    assert [location for location, _ in problems_of(document)] == [
        "schemaVersion",
        "routes.a.priority",
        "routes.b",
        "storeAndForwardConfiguration.timeToLiveSecs",
        "identities[0]",
        "identities[1].primaryKey",
    ]


def test_a_key_is_never_echoed_in_a_problem() -> None:
    bad_key = "c2VjcmV0!" + KEY
    [(_, reason)] = problems_of(desired(identities=[{"deviceId": "s1", "primaryKey": bad_key}]))

    assert bad_key not in reason
    assert "secret" not in reason


# --- identities -----------------------------------------------------------------------------------


def test_devices_and_modules_with_keys_or_certificates_are_read(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    thumbprint = "AB:" * 31 + "AB"
    config = parse_config(
        desired(
            identities=[
                {"deviceId": "sensor1", "primaryKey": KEY, "secondaryKey": KEY2},
                {"deviceId": "edge", "moduleId": "filter", "primaryKey": KEY},
                {"deviceId": "cam1", "x509Thumbprint": thumbprint},
                {"deviceId": "cam2", "x509CaFile": "ca.pem"},
            ]
        ),
        "f.json",
        base_dir=tmp_path,
    )

    assert config.identities == (
        IdentitySpec(device_id="sensor1", primary_key=KEY, secondary_key=KEY2),
        IdentitySpec(device_id="edge", module_id="filter", primary_key=KEY),
        IdentitySpec(device_id="cam1", x509_thumbprint="ab" * 32),
        IdentitySpec(device_id="cam2", x509_ca_file=str(tmp_path / "ca.pem")),
    )


def test_a_device_and_a_module_on_it_are_different_identities() -> None:
    config = parse_config(
        desired(
            identities=[
                {"deviceId": "edge", "primaryKey": KEY},
                {"deviceId": "edge", "moduleId": "filter", "primaryKey": KEY},
            ]
        ),
        "f.json",
    )

    assert [spec.identity.id for spec in config.identities] == ["edge", "edge/filter"]


def test_a_child_edge_hub_is_the_one_system_module_a_parent_may_list() -> None:
    config = parse_config(
        desired(identities=[{"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": KEY}]), "f.json",
    )

    assert [spec.identity.id for spec in config.identities] == ["child/$edgeHub"]


def test_duplicate_identity_is_refused_pointing_at_the_first() -> None:
    entry = {"deviceId": "edge", "moduleId": "filter", "primaryKey": KEY}

    assert the_problem(desired(identities=[entry, {"deviceId": "s1", "primaryKey": KEY}, entry])) == (
        "identities[2]",
        "duplicate of identities[0] (edge/filter)",
    )


# --- files ----------------------------------------------------------------------------------------


def test_json_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "schemaVersion": "1.1",\n  "routes": {"up": "x",}\n}\n')

    with pytest.raises(ConfigError) as caught:
        load_config_file(path)

    [(location, reason)] = caught.value.problems
    assert location == str(path)
    assert reason.startswith("invalid JSON at line 3, column 24:")


def test_duplicate_json_keys_are_refused_rather_than_silently_dropped() -> None:
    text = b'{"schemaVersion": "1.1", "routes": {"up": "FROM /messages/* INTO $upstream", "up": "x"}}'

    with pytest.raises(ConfigError) as caught:
        load_config_bytes(text, "f.json")

    assert caught.value.problems == [("routes.up", "appears more than once (JSON keeps only the last)")]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"schemaVersion": "1.1", "x": NaN}', "NaN is not a JSON number"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000, "invalid JSON"),
    ],
)
def test_bytes_that_are_not_json_are_refused(data: bytes, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_bytes(data, "f.json")

    [(location, reason)] = caught.value.problems
    assert location == "f.json"
    assert fragment in reason


def test_utf8_byte_order_mark_is_accepted() -> None:
    data = b"\xef\xbb\xbf" + json.dumps(desired()).encode()

    assert load_config_bytes(data, "f.json").routes == (RouteSpec(name="up", text=UPSTREAM),)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"

    with pytest.raises(ConfigError) as caught:
        load_config_file(path)

    [(location, reason)] = caught.value.problems
    assert location == str(path)
    assert "cannot read" in reason


def test_x509_ca_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(desired(identities=[{"deviceId": "cam", "x509CaFile": "certs/ca.pem"}])))

    [spec] = load_config_file(path).identities

    assert spec.x509_ca_file == str(tmp_path / "certs" / "ca.pem")


def test_default_config_sends_everything_upstream_for_two_hours() -> None:
    assert compile_routes(default_config().routes)
    assert default_config() == HubConfig(
        routes=(RouteSpec(name="upstream", text="FROM /messages/* INTO $upstream"),),
        time_to_live_secs=7200,
        max_store_size_bytes=None,
        identities=(),
        source="built-in default",
    )


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda path: path.name)
def test_every_example_config_loads_without_problems(path: Path) -> None:
    config = load_config_file(path)

    assert len(compile_routes(config.routes)) == len(config.routes)
    assert config.identities
    assert config.warnings == ()


def test_the_example_configs_are_all_there() -> None:
    assert {path.name for path in CONFIGS.glob("*.json")} >= {
        "default.json",
        "dev.json",
        "constrained.json",
        "nested-parent.json",
        "nested-child.json",
        "generic-broker.json",
        "deployment-manifest.json",
    }


# --- properties -----------------------------------------------------------------------------------

ROUTE_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
ROUTE_ENTRIES = st.fixed_dictionaries(
    {"route": st.just(UPSTREAM)},
    optional={"priority": st.integers(0, 9), "timeToLiveSecs": st.integers(0, 2**31 - 1)},
)


@given(routes=st.dictionaries(ROUTE_NAMES, ROUTE_ENTRIES | st.just(UPSTREAM), max_size=8))
def test_any_valid_schema_1_1_document_keeps_every_route_as_written(routes: dict[str, Any]) -> None:
    document = desired(routes=copy.deepcopy(routes))

    config = parse_config(document, "f.json")

    assert [route.name for route in config.routes] == list(routes)
    for route in config.routes:
        entry = routes[route.name]
        written = entry if isinstance(entry, dict) else {}
        assert route.priority == written.get("priority", DEFAULT_PRIORITY)
        assert route.time_to_live_secs == written.get("timeToLiveSecs", 0)


# --- module twins' desired properties ---------------------------------------------------------------


def test_manifest_gives_each_module_its_desired_properties() -> None:
    document = manifest(desired())
    document["modulesContent"]["filter"] = {"properties.desired": {"threshold": 10, "$version": 3}}
    document["modulesContent"]["empty"] = {}
    config = parse_config(document, "m.json")
    assert config.module_desired == {"filter": {"threshold": 10}}
    assert parse_config(desired(), "d.json").module_desired == {}


def test_module_desired_properties_over_the_twin_bounds_are_a_problem_at_their_path() -> None:
    document = manifest(desired())
    document["modulesContent"]["filter"] = {"properties.desired": {"bad key": 1}}
    document["modulesContent"]["big"] = {"properties.desired": {"s": "x" * 5000}}
    problems = problems_of(document)
    assert [location for location, _ in problems] == [
        'modulesContent.filter["properties.desired"]', 'modulesContent.big["properties.desired"]',
    ]
    assert "invalid character" in problems[0][1]
    assert "over 4096" in problems[1][1]


def test_module_twin_entry_must_be_an_object_with_a_module_id() -> None:
    document = manifest(desired())
    document["modulesContent"]["filter"] = []
    document["modulesContent"]["bad/id"] = {"properties.desired": {}}
    locations = [location for location, _ in problems_of(document)]
    assert locations == ["modulesContent.filter", 'modulesContent["bad/id"]']

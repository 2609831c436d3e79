"""The config file (``--config``): edgeHub desired properties or a deployment manifest → HubConfig.

Owns the file's shapes, schema versions 1.0-1.3 and every value check, reporting each problem
with a JSON path; must not parse route text (edgehub.routing does) nor read the environment.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from edgehub.auth.identities import IdentitySpec
from edgehub.broker.acl import AclRule, parse_acl
from edgehub.config_identities import identity_id_problem, parse_identities
from edgehub.config_json import (
    JsonObject,
    NonFiniteNumberError,
    Report,
    child_path,
    json_integer,
    json_object,
    json_text,
    kind_of,
    refuse_constant,
    shown,
    unknown_keys,
)
from edgehub.config_store_forward import DEFAULT_TIME_TO_LIVE_SECS as DEFAULT_TIME_TO_LIVE_SECS
from edgehub.config_store_forward import StoreAndForward, parse_store_and_forward
from edgehub.errors import ConfigError
from edgehub.message import Identity
from edgehub.routing.spec import RouteSpec
from edgehub.store.base import DEFAULT_PRIORITY, DrainOrder
from edgehub.twins.document import check_document
from edgehub.twins.port import TwinError

MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024
"""A config file larger than this is refused rather than read into memory."""

SUPPORTED_SCHEMA_VERSIONS: Final = ("1.0", "1.1", "1.2", "1.3")
"""As edgeHub's EdgeHubConfigParser: major 1, minor 0-3 (``1.2.0`` style is accepted too)."""

_INT32_MAX: Final = 2**31 - 1
_INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class HubConfig:
    """What the config file decides: routes, time to live, store limit, drain order, local identities.

    ``warnings`` are ``(location, reason)`` pairs for parts that were accepted but ignored
    (the hub logs them); ``schema_version`` is as written in the file.
    """

    routes: tuple[RouteSpec, ...]
    time_to_live_secs: int
    max_store_size_bytes: int | None
    identities: tuple[IdentitySpec, ...]
    source: str
    schema_version: str = "1.1"
    warnings: tuple[tuple[str, str], ...] = ()
    module_desired: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    drain_order: DrainOrder = DrainOrder.FIFO
    """``storeAndForwardConfiguration.drainOrder``: every endpoint's, unless named below."""
    drain_order_by_endpoint: Mapping[str, DrainOrder] = field(default_factory=dict)
    """``storeAndForwardConfiguration.drainOrderByEndpoint``, by endpoint name (``$upstream``,
    ``/modules/{m}/inputs/{i}``)."""
    identity_desired: Mapping[Identity, dict[str, Any]] = field(default_factory=dict)
    """``identities[].desiredProperties``: desired properties of any identity, by identity."""
    """Module id → its twin's desired properties, from a whole manifest's
    ``modulesContent.{module}["properties.desired"]`` ($edgeAgent and $edgeHub excluded:
    the hub's own desired properties are this config)."""
    acl: tuple[AclRule, ...] = ()
    """The top-level ``acl`` list: generic MQTT topic rules (edgehub.broker.acl); empty: open."""

    def drain_order_of(self, endpoint: str) -> DrainOrder:
        """The drain order of the endpoint named ``endpoint`` (as its queues are)."""
        return self.drain_order_by_endpoint.get(endpoint, self.drain_order)


def default_config() -> HubConfig:
    """The config without a file: everything upstream, two hours to live, no local identities."""
    return HubConfig(
        routes=(RouteSpec(name="upstream", text="FROM /messages/* INTO $upstream"),),
        time_to_live_secs=DEFAULT_TIME_TO_LIVE_SECS,
        max_store_size_bytes=None,
        identities=(),
        source="built-in default",
    )


def read_config_bytes(path: Path) -> bytes:
    """The file's bytes, at most MAX_CONFIG_BYTES + 1 of them; raises OSError."""
    with path.open("rb") as file:
        return file.read(MAX_CONFIG_BYTES + 1)


def load_config_file(path: Path) -> HubConfig:
    """Read, parse and check ``path``; raises ConfigError listing every problem."""
    try:
        data = read_config_bytes(path)
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read the config file: {exc.strerror or exc}")]) from None
    return load_config_bytes(data, str(path), path.parent)


def load_config_bytes(data: bytes, source: str, base_dir: Path | None = None) -> HubConfig:
    """Parse a config file's bytes (UTF-8 JSON, BOM allowed); relative paths resolve against ``base_dir``."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([(source, f"the config file is larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([(source, f"not UTF-8 text (bad byte at offset {exc.start})")]) from None
    try:
        document = json.loads(text, object_pairs_hook=JsonObject.from_pairs, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [(source, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from None
    except NonFiniteNumberError as exc:
        raise ConfigError([(source, f"invalid JSON: {exc} is not a JSON number")]) from None
    except RecursionError:
        raise ConfigError([(source, "invalid JSON: nested too deeply")]) from None
    return parse_config(document, source, base_dir)


def parse_config(document: object, source: str, base_dir: Path | None = None) -> HubConfig:
    """Check a parsed JSON document of either shape; raises ConfigError listing every problem.

    (a) edgeHub desired properties (``schemaVersion``, ``routes``, ``storeAndForwardConfiguration``),
    (b) a deployment manifest (``modulesContent.$edgeHub["properties.desired"]``, or the older
    ``moduleContent``); either may carry a top-level ``identities`` list.
    """
    report = Report()
    root = json_object(document, source, report)
    if root is None:
        raise ConfigError(report.problems)
    if "modulesContent" in root or "moduleContent" in root:
        desired = _manifest_desired_properties(root, report)
        desired_path = f'{_manifest_content_key(root)}.$edgeHub["properties.desired"]'
    elif "schemaVersion" in root or "routes" in root:
        desired, desired_path = root, ""
    else:
        report.problem(
            source,
            "neither edgeHub desired properties (schemaVersion, routes) "
            "nor a deployment manifest (modulesContent.$edgeHub)",
        )
        raise ConfigError(report.problems)
    parsed = _desired_properties(desired, desired_path, in_manifest=desired is not root, report=report)
    module_desired = _module_desired(root, report) if desired is not root else {}
    identities = parse_identities(root.get("identities"), "identities", base_dir, report)
    identity_desired = _identity_desired(root.get("identities"), "identities", report)
    acl, acl_problems = parse_acl(root.get("acl"), "acl")
    for location, reason in acl_problems:
        report.problem(location, reason)
    if report.problems:
        raise ConfigError(report.problems)
    schema_version, routes, store_and_forward = parsed
    return HubConfig(
        routes=tuple(routes),
        time_to_live_secs=store_and_forward.time_to_live_secs,
        max_store_size_bytes=store_and_forward.max_size_bytes,
        drain_order=store_and_forward.drain_order,
        drain_order_by_endpoint=store_and_forward.drain_order_by_endpoint,
        identities=tuple(identities),
        source=source,
        schema_version=schema_version,
        warnings=tuple(report.warnings),
        module_desired=module_desired,
        identity_desired=identity_desired,
        acl=tuple(acl),
    )


def has_hub_config(desired: Mapping[str, object]) -> bool:
    """Whether the hub's own twin desired properties carry its config (as IoT Edge deploys it)."""
    return "schemaVersion" in desired or "routes" in desired


def with_desired_properties(base: HubConfig, desired: Mapping[str, object], source: str) -> HubConfig:
    """``base`` (the config file) with the routes, time to live, store limit and drain order of
    edgeHub desired properties ``desired`` (the hub's own twin); identities and module desired
    properties stay the file's. Raises ConfigError listing every problem."""
    report = Report()
    root = json_object(desired, source, report)
    if root is None:
        raise ConfigError(report.problems)
    if "identities" in root:
        report.problem(child_path(source, "identities"), "a local registry is never taken from a twin")
    schema_version, routes, store_and_forward = _desired_properties(root, source, in_manifest=False,
                                                                    report=report)
    if report.problems:
        raise ConfigError(report.problems)
    return dataclasses.replace(
        base,
        routes=tuple(routes),
        time_to_live_secs=store_and_forward.time_to_live_secs,
        max_store_size_bytes=store_and_forward.max_size_bytes,
        drain_order=store_and_forward.drain_order,
        drain_order_by_endpoint=store_and_forward.drain_order_by_endpoint,
        source=source,
        schema_version=schema_version,
        warnings=base.warnings + tuple(report.warnings),
    )


def _manifest_content_key(root: Mapping[str, object]) -> str:
    return "modulesContent" if "modulesContent" in root else "moduleContent"


def _manifest_desired_properties(root: Mapping[str, object], report: Report) -> Mapping[str, object] | None:
    """``modulesContent.$edgeHub["properties.desired"]``; other modules are not the hub's business."""
    key = _manifest_content_key(root)
    if "modulesContent" in root and "moduleContent" in root:
        report.problem("moduleContent", "give modulesContent only (moduleContent is its old name)")
    for other in root:
        if other not in ("modulesContent", "moduleContent", "identities", "acl") and other[:1] != "$":
            report.warn(child_path("", other), "ignored: not part of a deployment manifest the hub reads")
    content = json_object(root[key], key, report)
    if content is None:
        return None
    hub_path = child_path(key, "$edgeHub")
    if "$edgeHub" not in content:
        report.problem(hub_path, "missing: the manifest has no $edgeHub module twin")
        return None
    hub = json_object(content["$edgeHub"], hub_path, report)
    if hub is None:
        return None
    desired_path = child_path(hub_path, "properties.desired")
    if "properties.desired" not in hub:
        report.problem(desired_path, "missing: $edgeHub has no desired properties")
        return None
    return json_object(hub["properties.desired"], desired_path, report)


_SYSTEM_MODULES: Final = ("$edgeAgent", "$edgeHub")


def _identity_desired(value: object, path: str, report: Report) -> dict[Identity, dict[str, Any]]:
    """Each identity's ``desiredProperties``: the twin a cloud registry would hold for it (a parent
    hub serves them to the identities below a child hub); checked against IoT Hub's twin bounds."""
    found: dict[Identity, dict[str, Any]] = {}
    if not isinstance(value, list):
        return found  # reported by _identities
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping) or "desiredProperties" not in entry:
            continue
        device, module = entry.get("deviceId"), entry.get("moduleId")
        if not isinstance(device, str) or not (module is None or isinstance(module, str)):
            continue  # reported by _identities
        location = child_path(f"{path}[{index}]", "desiredProperties")
        try:
            found[Identity(device, module)] = check_document(entry["desiredProperties"], "desired")
        except TwinError as error:
            report.problem(location, error.reason)
    return found


def _module_desired(root: Mapping[str, object], report: Report) -> dict[str, dict[str, Any]]:
    """Every other module's ``properties.desired``, checked against IoT Hub's twin bounds.

    A module without desired properties gets none (an empty twin); a bad document is a
    problem at its JSON path with IoT Hub's reason.
    """
    key = _manifest_content_key(root)
    content = root.get(key)
    if not isinstance(content, Mapping):
        return {}  # reported by _manifest_desired_properties
    found: dict[str, dict[str, Any]] = {}
    for module_id, twin in content.items():
        if module_id in _SYSTEM_MODULES:
            continue
        module_path = child_path(key, module_id)
        if (problem := identity_id_problem(module_id)) is not None:
            report.problem(module_path, f"not a module id: {problem}")
            continue
        twin_obj = json_object(twin, module_path, report)
        if twin_obj is None:
            continue
        desired_path = child_path(module_path, "properties.desired")
        for other in twin_obj:
            if other != "properties.desired":
                report.warn(child_path(module_path, other), "ignored: only properties.desired is read")
        if "properties.desired" not in twin_obj:
            continue
        try:
            found[module_id] = check_document(twin_obj["properties.desired"], "desired")
        except TwinError as error:
            report.problem(desired_path, error.reason)
    return found


_Desired = tuple[str, list[RouteSpec], StoreAndForward]


def _desired_properties(
    desired: Mapping[str, object] | None, path: str, *, in_manifest: bool, report: Report
) -> _Desired:
    """schemaVersion, routes and storeAndForwardConfiguration of the edgeHub twin."""
    if desired is None:
        return "1.1", [], StoreAndForward()
    schema_version, minor = _schema_version(
        desired.get("schemaVersion"), child_path(path, "schemaVersion"), report
    )
    routes = _routes(desired.get("routes"), child_path(path, "routes"), minor, report)
    store_and_forward = parse_store_and_forward(
        desired.get("storeAndForwardConfiguration"), child_path(path, "storeAndForwardConfiguration"), report
    )
    for key in desired:
        location = child_path(path, key)
        if key in ("schemaVersion", "routes", "storeAndForwardConfiguration") or key.startswith("$"):
            continue  # $version, $metadata: twin bookkeeping
        if key in ("identities", "acl") and not in_manifest:
            continue
        if key == "identities":
            report.problem(location, "identities belong at the top level of the file, beside modulesContent")
        elif key == "mqttBroker":
            report.warn(
                location, "ignored: edgeHub's MQTT broker policy is not supported (see genericTopics)"
            )
        elif key == "integrity":
            report.problem(
                location, "manifest signing (integrity) is not supported; remove it to run unsigned"
            )
        else:
            report.problem(
                location, "unknown key (known: schemaVersion, routes, storeAndForwardConfiguration)"
            )
    return schema_version, routes, store_and_forward


_SCHEMA_VERSION: Final = re.compile(r"1\.([0-9]+)(?:\.[0-9]+){0,2}")


def _schema_version(value: object, path: str, report: Report) -> tuple[str, int]:
    """The version text and its minor number (1 when unknown, so routes still get checked)."""
    if value is None:
        report.problem(path, 'missing: edgeHub desired properties need a schemaVersion such as "1.1"')
        return "1.1", 1
    match = _SCHEMA_VERSION.fullmatch(value) if isinstance(value, str) else None
    if (
        not isinstance(value, str)
        or match is None
        or f"1.{int(match.group(1))}" not in SUPPORTED_SCHEMA_VERSIONS
    ):
        report.problem(
            path,
            f"unsupported schemaVersion {shown(value)} (supported: {', '.join(SUPPORTED_SCHEMA_VERSIONS)})",
        )
        return "1.1", 1
    return value, int(match.group(1))


def _routes(value: object, path: str, minor: int, report: Report) -> list[RouteSpec]:
    if value is None:
        return []
    routes_obj = json_object(value, path, report)
    if routes_obj is None:
        return []
    routes: list[RouteSpec] = []
    for name, entry in routes_obj.items():
        location = child_path(path, name)
        if not name.strip():
            report.problem(location, "a route needs a name")
        elif isinstance(entry, str):
            if entry.strip():
                routes.append(RouteSpec(name=name, text=entry))
            else:
                report.problem(location, "the route text is empty")
        elif isinstance(entry, dict) and minor >= 1:
            if (route := _route_object(name, entry, location, report)) is not None:
                routes.append(route)
        elif isinstance(entry, dict):
            report.problem(
                location, "schema 1.0 routes are strings; use schemaVersion 1.1 for priority and ttl"
            )
        else:
            shapes = "a route string" if minor == 0 else "a route string or {route, priority, timeToLiveSecs}"
            report.problem(location, f"must be {shapes} (got {kind_of(entry)})")
    return routes


_ROUTE_KEYS: Final = ("route", "priority", "timeToLiveSecs")


def _route_object(name: str, entry: Mapping[str, object], path: str, report: Report) -> RouteSpec | None:
    """A schema 1.1 route: ``{"route": text, "priority": 0-9, "timeToLiveSecs": n}``."""
    before = len(report.problems)
    obj = json_object(entry, path, report)
    if obj is None:
        return None
    unknown_keys(obj, path, _ROUTE_KEYS, report)
    text = json_text(obj.get("route"), child_path(path, "route"), report)
    priority: int | None = DEFAULT_PRIORITY
    if "priority" in obj:
        priority = json_integer(
            obj["priority"],
            child_path(path, "priority"),
            report,
            low=0,
            high=9,
            expected="a priority from 0 to 9",
        )
    ttl: int | None = 0
    if "timeToLiveSecs" in obj:
        ttl = json_integer(
            obj["timeToLiveSecs"],
            child_path(path, "timeToLiveSecs"),
            report,
            low=0,
            high=_INT32_MAX,
            expected="a number of seconds >= 0 (0 = the global timeToLiveSecs)",
        )
    if len(report.problems) > before or text is None or priority is None or ttl is None:
        return None
    return RouteSpec(name=name, text=text, priority=priority, time_to_live_secs=ttl)


# --- identities -------------------------------------------------------------------------------------

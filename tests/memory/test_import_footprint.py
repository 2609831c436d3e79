"""What a real hub imports, by mode and heads (docs/architecture.md §6): a low-memory hub with
only the MQTT head loads no pydantic, cryptography, prometheus-client, aiohttp, paho, proton or
uvloop; each is loaded only by what uses it.

Module sets come from the hub's own ``-X importtime`` lines (``PYTHONPROFILEIMPORTTIME=1``), so
they include everything imported lazily until the hub stops. RSS is reported, never asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.memory.hubmem import LOW_MEMORY_MQTT_ONLY, idle_hub, imported_modules, settled_rss_kib, top_level

HEAVY: Final = frozenset({
    "pydantic", "pydantic_core", "pydantic_settings", "cryptography", "prometheus_client", "aiohttp",
    "paho", "proton", "uvloop", "amqtt", "rocksdict",
})
"""Packages that cost megabytes each; which of them a hub imports is what these tests pin down."""
ALL_HEADS: Final = {"amqpSettings__enabled": "true", "httpSettings__enabled": "true"}


def report(name: str, **figures: object) -> None:
    print(f"[memory] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def started_twice(folder: Path, env: dict[str, str]) -> tuple[set[str], set[str], int]:
    """Top-level modules of a first start (dev certificates issued), of a second start (reused),
    and the second start's settled RSS in KiB."""
    with idle_hub(folder, env, importtime=True) as first:
        pass
    with idle_hub(folder, env, importtime=True) as second:
        rss = settled_rss_kib(second.pid)
    return top_level(imported_modules(first.lines)), top_level(imported_modules(second.lines)), rss


def test_low_memory_mqtt_only_hub_imports_no_heavy_package_but_rocksdb(tmp_path: Path) -> None:
    pytest.importorskip("rocksdict", reason="no RocksDB wheel for this machine (32-bit ARM)")
    first, second, rss = started_twice(tmp_path, {**LOW_MEMORY_MQTT_ONLY, "storeBackend": "rocksdb"})

    report("low-memory, MQTT only, rocksdb (imports traced)", rss_mib=round(rss / 1024, 1))
    assert {"edgehub", "asyncio"} <= second
    assert second & HEAVY == {"rocksdict"}
    # The first start issues the dev CA and server certificate: cryptography, nothing else.
    assert first & HEAVY == {"rocksdict", "cryptography"}


LOADED_ON_DEMAND: Final = frozenset({
    "edgehub.upstream.mqtt", "edgehub.upstream.factory", "edgehub.upstream.identity_links",
    "edgehub.upstream.device_scope", "edgehub.upstream.twin_sync", "edgehub.mqtt.client",
    "edgehub.broker.core", "edgehub.heads.mqtt.generic", "edgehub.routing.condition",
    "argparse", "uuid", "unicodedata", "_strptime",
})
"""Modules a standalone MQTT-only hub without generic topics or WHERE clauses has no use for: the
upstream link, the generic broker, the route condition compiler, the CLI parser of other commands,
and stdlib modules a few lines of edgehub stand in for."""


def test_standalone_mqtt_only_hub_loads_no_upstream_link_broker_or_condition_compiler(tmp_path: Path) -> None:
    env = {**LOW_MEMORY_MQTT_ONLY, "storeBackend": "sqlite"}
    with idle_hub(tmp_path, env):
        pass
    with idle_hub(tmp_path, env, importtime=True) as hub:
        pass
    loaded = imported_modules(hub.lines)

    assert {"edgehub.heads.mqtt.head", "edgehub.routing.router", "edgehub.upstream.presented"} <= loaded
    assert loaded & LOADED_ON_DEMAND == set()


def test_upstream_link_and_condition_compiler_load_when_configured(tmp_path: Path) -> None:
    from tests.hubproc import write_config

    route = "FROM /messages/* WHERE $body.t > 1 INTO $upstream"
    config = write_config(tmp_path / "config.json", {"r": route}, [])
    env = {**LOW_MEMORY_MQTT_ONLY, "storeBackend": "sqlite",
           "EdgeHubConnectionString": "HostName=127.0.0.1;DeviceId=edge;ModuleId=$edgeHub;"
                                      "SharedAccessKey=" + "A" * 44}
    with idle_hub(tmp_path, env, config=config):
        pass
    with idle_hub(tmp_path, env, importtime=True, config=config) as hub:
        pass
    loaded = imported_modules(hub.lines)

    assert {"edgehub.upstream.mqtt", "edgehub.routing.condition"} <= loaded


def test_sqlite_hub_does_not_load_rocksdb(tmp_path: Path) -> None:
    _, second, _ = started_twice(tmp_path, {**LOW_MEMORY_MQTT_ONLY, "storeBackend": "sqlite"})

    assert "sqlite3" in second
    assert second & HEAVY == set()


def test_default_mode_with_every_head_imports_what_the_heads_and_the_loop_use(tmp_path: Path) -> None:
    pytest.importorskip("rocksdict", reason="no RocksDB wheel for this machine (32-bit ARM)")
    _, second, rss = started_twice(tmp_path, {**ALL_HEADS, "storeBackend": "rocksdb"})

    report("default mode, every head (imports traced)", rss_mib=round(rss / 1024, 1))
    assert {"aiohttp", "proton", "uvloop", "rocksdict"} <= second
    assert second & {"pydantic", "pydantic_settings", "cryptography", "paho", "amqtt"} == set()


def test_amqp_engine_is_imported_only_with_the_amqp_head(tmp_path: Path) -> None:
    env = {**LOW_MEMORY_MQTT_ONLY, "storeBackend": "sqlite"}
    _, without, _ = started_twice(tmp_path / "off", env)
    _, with_amqp, _ = started_twice(tmp_path / "on", env | {"amqpSettings__enabled": "true"})

    assert "proton" not in without
    assert "proton" in with_amqp
    assert "aiohttp" not in with_amqp


def test_metrics_listener_serves_without_prometheus_client(tmp_path: Path) -> None:
    from tests.hubproc import free_port

    port = free_port()
    env = {**LOW_MEMORY_MQTT_ONLY, "storeBackend": "sqlite", "Metrics__Listener__Port": str(port)}
    with idle_hub(tmp_path, env):
        pass
    with idle_hub(tmp_path, env, importtime=True) as hub:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    assert "# TYPE edgehub_connected_clients gauge" in text
    assert "prometheus_client" not in top_level(imported_modules(hub.lines))


@pytest.mark.parametrize("module", ["edgehub.settings", "edgehub.assembly", "edgehub.tls",
                                    "edgehub.auth.registry"])
def test_core_modules_import_without_pydantic_or_cryptography(module: str) -> None:
    probe = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            timeout=60).stdout

    assert module.split(".")[0] in loaded
    for heavy in ("pydantic", "pydantic_settings", "cryptography", "prometheus_client", "aiohttp", "paho"):
        assert f"'{heavy}'" not in loaded, f"{module} imports {heavy}"

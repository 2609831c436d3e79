"""Every example in configs/ starts as shipped: with the environment its manifest gives the edgeHub
module (low-memory mode, heads off, ...), ready on /ready, stopped cleanly by SIGTERM; the nested
pair connects child to parent and a device's message crosses it."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgehub.connection_string import ConnectionString
from edgehub.identity_cli import token
from edgehub.message import Identity
from edgehub.settings import Settings
from tests.e2e.parts import metric, wait_until
from tests.hubproc import HubProcess, free_port

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
UPSTREAM_VARIABLES = ("EdgeHubConnectionString", "GatewayHostName", "UpstreamCaFile")
"""What points a config at a parent that is not here: dropped when a config is started on its own."""
HUB_NAME = "myhub.azure-devices.net"


def manifest_env(path: Path) -> dict[str, str]:
    """``systemModules.edgeHub.env`` of a whole deployment manifest ({} for desired properties)."""
    document = json.loads(path.read_text())
    agent = document.get("modulesContent", {}).get("$edgeAgent", {}).get("properties.desired", {})
    env = agent.get("systemModules", {}).get("edgeHub", {}).get("env", {})
    return {name: str(entry["value"]) for name, entry in env.items()}


def local_ports(env: dict[str, str]) -> dict[str, str]:
    """Free ports for every listener (the examples use the well-known ones), HTTP on unless turned off."""
    return {"httpSettings__enabled": "true", **env,
            "mqttSettings__port": str(free_port()), "mqttSettings__plainPort": str(free_port()),
            "httpSettings__port": str(free_port()), "Metrics__Listener__Port": str(free_port())}


def ready(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


STANDALONE = [path for path in sorted(CONFIGS.glob("*.json")) if path.name != "nested-child.json"]


@pytest.mark.parametrize("config", STANDALONE, ids=lambda path: path.name)
def test_example_config_starts_ready_with_its_manifest_environment_and_stops_cleanly(
    tmp_path: Path, config: Path,
) -> None:
    env = local_ports({k: v for k, v in manifest_env(config).items() if k not in UPSTREAM_VARIABLES})

    with HubProcess(tmp_path, config, env=env) as hub:
        wait_until(lambda: ready(int(env["Metrics__Listener__Port"])), 20, f"{config.name} ready")
        if env.get("OptimizeForPerformance") == "false":
            assert "low-memory mode" in hub.output
        if env["httpSettings__enabled"] == "false":
            assert "http: " not in hub.output
        assert hub.stop() == 0
    assert "stopped" in hub.output


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs Debian's mosquitto-clients")
def test_nested_child_connects_to_its_parent_and_a_devices_message_crosses(tmp_path: Path) -> None:
    parent_config, child_config = CONFIGS / "nested-parent.json", CONFIGS / "nested-child.json"
    parent_env = local_ports(manifest_env(parent_config)) | {"IotHubHostName": HUB_NAME}
    child_env = local_ports(manifest_env(child_config))
    # The manifest names the parent by host name on 8883; here it listens on a free port.
    child_key = ConnectionString.parse(child_env.pop("EdgeHubConnectionString")).shared_access_key
    del child_env["GatewayHostName"]
    child_env |= {
        "EdgeHubConnectionString": f"HostName=127.0.0.1:{parent_env['mqttSettings__port']};DeviceId=child;"
                                   f"ModuleId=$edgeHub;SharedAccessKey={child_key}",
        "IotHubHostName": HUB_NAME,
        "UpstreamCaFile": str(tmp_path / "parent" / "data" / "certs" / "dev-ca.pem"),
    }
    child_metrics = int(child_env["Metrics__Listener__Port"])
    parent_metrics = int(parent_env["Metrics__Listener__Port"])

    with HubProcess(tmp_path / "parent", parent_config, env=parent_env), \
            HubProcess(tmp_path / "child", child_config, env=child_env) as child:
        sensor_token = token(child_config, Identity("sensor1"), Settings(iothub_hostname=HUB_NAME))
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", child_env["mqttSettings__plainPort"], "-i", "sensor1",
             "-u", f"{HUB_NAME}/sensor1/?api-version=2021-04-12", "-P", sensor_token,
             "-t", "devices/sensor1/messages/events/", "-q", "1", "-m", "through the child"],
            check=True, timeout=30,
        )
        wait_until(
            lambda: metric(child_metrics, "edgehub_messages_sent_total", {"to": "upstream"}) >= 1, 30,
            "the child delivered the message to its parent",
        )
        # Stored at the parent (its own upstream is not configured here, so it waits there).
        assert metric(parent_metrics, "edgehub_messages_received_total") >= 1
        assert child.stop() == 0

"""``edgehub check``: each check's OK/WARN/FAIL on real files, sockets and a running hub, and the
command's exit codes, JSON and probe mode."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgehub.check import (
    Check,
    Status,
    Target,
    check_certificates,
    check_clock,
    check_config_version,
    check_disk,
    check_heads,
    check_modules,
    check_storage_volume,
    check_upstream,
    config_version,
    exit_code,
    mount_point_of,
    report,
)
from edgehub.config_file import default_config, load_config_file
from edgehub.settings import HttpSettings, MqttSettings, Settings
from edgehub.testing.certs import make_client_certificate
from edgehub.tls import ensure_dev_certificates
from tests.hubproc import HubProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "configs" / "dev.json"
NOW = datetime.now(UTC)
KEY = "qtw7zXdy6fT6tovmcXX3SWCI62dZM1+cHbZwWsxxPjE="

MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
23 22 8:1 /var/lib/docker/volumes/edgehub/_data /data rw,relatime - ext4 /dev/sda1 rw
24 22 0:22 / /tmp rw - tmpfs tmpfs rw
"""


def target(settings: Settings, config_path: Path | None = None, metrics_url: str | None = None,
           expect: str | None = None) -> Target:
    config = load_config_file(config_path) if config_path else default_config()
    return Target(settings, config, config_path, metrics_url, expect)


def edgehub(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if "__" not in k} | env
    return subprocess.run([sys.executable, "-m", "edgehub", *args], env=environment, capture_output=True,
                          text=True, timeout=60, check=False)


# --- store volume and disk ----------------------------------------------------------------------------


def test_mount_point_is_the_longest_mount_holding_the_path() -> None:
    assert mount_point_of(Path("/data/store"), MOUNTINFO) == ("/data", "ext4")
    assert mount_point_of(Path("/database"), MOUNTINFO) == ("/", "overlay")


def test_store_in_the_container_layer_warns_and_on_a_volume_is_ok(tmp_path: Path) -> None:
    settings = Settings(storage_folder=tmp_path)
    on_layer = MOUNTINFO.replace(" /tmp rw", " /elsewhere rw")
    on_volume = f"25 22 8:2 / {tmp_path} rw - ext4 /dev/sdb rw\n"

    assert check_storage_volume(target(settings), on_layer).status is Status.WARN
    assert check_storage_volume(target(settings), MOUNTINFO + on_volume).status is Status.OK


def test_a_missing_storage_folder_fails(tmp_path: Path) -> None:
    result = check_storage_volume(target(Settings(storage_folder=tmp_path / "absent")), MOUNTINFO)

    assert result.status is Status.FAIL
    assert "does not exist" in result.message


def test_disk_fails_when_the_store_limit_does_not_fit_in_the_free_space(tmp_path: Path) -> None:
    config = tmp_path / "huge.json"
    document = json.loads(DEV.read_text())
    document["storeAndForwardConfiguration"]["storeLimits"] = {"maxSizeBytes": 2**62}
    config.write_text(json.dumps(document))
    small = tmp_path / "small.json"
    document["storeAndForwardConfiguration"]["storeLimits"] = {"maxSizeBytes": 1024}
    small.write_text(json.dumps(document))
    settings = Settings(storage_folder=tmp_path)

    assert check_disk(target(settings, config)).status is Status.FAIL
    assert check_disk(target(settings, small)).status is Status.OK
    assert check_disk(target(settings, DEV)).status is Status.WARN  # no limit at all


# --- certificates and clock ---------------------------------------------------------------------------


def production(tmp_path: Path, days: int, not_before: datetime | None = None) -> Settings:
    cert = make_client_certificate(tmp_path, "gateway.local", days=days, not_before=not_before)
    return Settings(storage_folder=tmp_path, server_certificate_file=cert.cert_file,
                    server_private_key_file=cert.key_file)


@pytest.mark.parametrize(("days", "status"), [(365, Status.OK), (10, Status.WARN)])
def test_production_certificate_warns_within_30_days_of_expiry(
    tmp_path: Path, days: int, status: Status,
) -> None:
    assert check_certificates(target(production(tmp_path, days)), NOW).status is status


def test_an_expired_certificate_fails(tmp_path: Path) -> None:
    settings = production(tmp_path, 10)

    assert check_certificates(target(settings), NOW + timedelta(days=11)).status is Status.FAIL


def test_a_dev_certificate_is_flagged_even_when_valid(tmp_path: Path) -> None:
    ensure_dev_certificates(tmp_path / "certs", ["localhost"])

    result = check_certificates(target(Settings(storage_folder=tmp_path)), NOW)

    assert result.status is Status.WARN
    assert "dev certificate" in result.message


def test_clock_before_the_certificate_start_fails_and_a_year_zero_clock_too(tmp_path: Path) -> None:
    settings = production(tmp_path, 365, not_before=NOW + timedelta(days=3))

    assert check_clock(target(settings), NOW).status is Status.FAIL
    assert check_clock(target(Settings(storage_folder=tmp_path)), datetime(1970, 1, 2, tzinfo=UTC)).status \
        is Status.FAIL
    assert check_clock(target(Settings(storage_folder=tmp_path / "x")), NOW).status is Status.OK


# --- upstream -----------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port that accepts connections (a stand-in for a plaintext parent)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def upstream_settings(tmp_path: Path, port: int) -> Settings:
    from edgehub.connection_string import ConnectionString

    connection = ConnectionString.parse(f"HostName=127.0.0.1:{port};DeviceId=gw;ModuleId=$edgeHub;"
                                        f"SharedAccessKey={KEY}")
    return Settings(storage_folder=tmp_path, connection_string=connection, upstream_tls=False,
                    iothub_hostname="myhub.example", edge_device_id="gw")


def test_standalone_hub_warns_that_upstream_messages_wait(tmp_path: Path) -> None:
    assert check_upstream(target(Settings(storage_folder=tmp_path)), None).status is Status.WARN


def test_unreachable_upstream_fails(tmp_path: Path) -> None:
    result = check_upstream(target(upstream_settings(tmp_path, free_port())), None)

    assert result.status is Status.FAIL
    assert "unreachable" in result.message


def test_reachable_upstream_is_ok_only_when_the_hub_reports_itself_connected(
    tmp_path: Path, listener: int,
) -> None:
    settings = upstream_settings(tmp_path, listener)
    came_back = "edgehub_offline_duration_seconds_count 2.0\n"
    online = 'edgehub_offline_count_total{id="gw/$edgeHub"} 2.0\n' + came_back
    offline = 'edgehub_offline_count_total{id="gw/$edgeHub"} 3.0\n' + came_back

    assert check_upstream(target(settings), online).status is Status.OK
    assert check_upstream(target(settings), offline).status is Status.FAIL
    assert check_upstream(target(settings), None).status is Status.WARN


# --- config version -----------------------------------------------------------------------------------


def test_config_version_is_the_manifests_version_when_it_has_one(tmp_path: Path) -> None:
    manifest = json.loads((ROOT / "configs" / "deployment-manifest.json").read_text())
    manifest["modulesContent"]["$edgeHub"]["properties.desired"]["$version"] = 7
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    settings = Settings(storage_folder=tmp_path)

    assert config_version(path) == "7"
    assert check_config_version(target(settings, path, expect="7")).status is Status.OK
    assert check_config_version(target(settings, path, expect="8")).status is Status.FAIL
    assert config_version(DEV).startswith("1.1+sha256:")


# --- heads and the command ----------------------------------------------------------------------------


def test_heads_fail_when_no_hub_answers(tmp_path: Path) -> None:
    settings = Settings(storage_folder=tmp_path, mqtt=MqttSettings(port=free_port()),
                        http=HttpSettings(enabled=False))

    result = check_heads(target(settings, metrics_url=f"http://127.0.0.1:{free_port()}"))

    assert result.status is Status.FAIL


def test_exit_code_fails_on_a_failure_and_on_warnings_only_when_strict() -> None:
    warned = [Check("a", Status.OK, ""), Check("b", Status.WARN, "")]

    assert exit_code(warned) == 0
    assert exit_code(warned, strict=True) == 1
    assert exit_code([*warned, Check("c", Status.FAIL, "")]) == 1
    assert "1 ok, 1 warnings, 0 failed" in report(warned, as_json=False)


def test_check_against_a_running_hub_passes_and_probe_follows_its_life(tmp_path: Path) -> None:
    metrics = free_port()
    env = {"Metrics__Listener__Port": str(metrics), "mqttSettings__port": str(free_port()),
           "mqttSettings__plainPort": str(free_port())}
    hub = HubProcess(tmp_path, DEV, env=env).start()
    check_env = {"StorageFolder": str(tmp_path / "data"), "httpSettings__enabled": "false",
                 "amqpSettings__enabled": "false", **env}
    try:
        result = edgehub("check", "--config", str(DEV), "--json", env=check_env)
        strict = edgehub("check", "--config", str(DEV), "--strict", env=check_env)
        probe_running = edgehub("check", "--probe", env=check_env)
    finally:
        assert hub.stop() == 0
    probe_stopped = edgehub("check", "--probe", env=check_env)

    document = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    assert result.returncode == 0, result.stdout
    assert statuses["heads"] == "OK"
    assert statuses["certificates"] == "WARN"  # the dev certificate
    assert set(statuses) == {"config", "storage", "disk", "certificates", "clock", "upstream", "heads",
                             "modules"}
    assert strict.returncode == 1
    assert (probe_running.returncode, probe_stopped.returncode) == (0, 1)


def test_modules_of_the_manifest_must_be_connected(tmp_path: Path) -> None:
    manifest = ROOT / "configs" / "deployment-manifest.json"
    settings = Settings(storage_folder=tmp_path, edge_device_id="edge")
    connected = ('edgehub_client_connect_success_total{id="edge/filter"} 2.0\n'
                 'edgehub_client_disconnect_total{id="edge/filter"} 1.0\n')
    gone = connected.replace("} 1.0", "} 2.0")

    assert check_modules(target(settings, manifest), connected).status is Status.OK
    assert check_modules(target(settings, manifest), gone).status is Status.FAIL
    assert check_modules(target(settings, DEV), gone).status is Status.OK  # desired properties: no modules

"""``edgehub identity add|list|remove|token``: the config file's identities as users edit them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgehub.auth.registry import IdentityRegistry
from edgehub.config_file import load_config_file
from edgehub.connection_string import ConnectionString
from edgehub.identity_cli import IdentityFileError, add, parse_identity, remove, token
from edgehub.message import Identity
from edgehub.settings import Settings

DEV = Path(__file__).resolve().parents[1] / "configs" / "dev.json"


def edgehub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if "__" not in k} | (env or {})
    return subprocess.run([sys.executable, "-m", "edgehub", *args], env=environment, capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(DEV.read_text())
    return path


def test_added_module_authenticates_with_the_key_in_its_connection_string(config: Path) -> None:
    settings = Settings(iothub_hostname="myhub.example", edgehub_hostname="gw.local")

    printed = add(config, Identity("edge", "pump"), settings)

    connection = ConnectionString.parse(printed)
    assert (connection.device_id, connection.module_id) == ("edge", "pump")
    assert connection.gateway_hostname == "gw.local"
    hub_config = load_config_file(config)
    registry = IdentityRegistry(hub_config.identities, ["myhub.example"])
    minted = token(config, Identity("edge", "pump"), settings, ttl=60)
    pump = Identity("edge", "pump")
    assert registry.authenticate_sas(pump, minted, time.time()).identity == pump
    assert len(connection.key) == 32


def test_add_keeps_the_rest_of_the_file_as_it_was(config: Path) -> None:
    before = json.loads(config.read_text())

    add(config, Identity("sensor2"), Settings())

    after = json.loads(config.read_text())
    assert after["routes"] == before["routes"]
    assert after["identities"][:-1] == before["identities"]
    assert list(after) == list(before)


def test_adding_an_identity_twice_is_refused_and_the_file_is_unchanged(config: Path) -> None:
    before = config.read_bytes()

    with pytest.raises(IdentityFileError, match="already"):
        add(config, Identity("sensor1"), Settings())

    assert config.read_bytes() == before


def test_removed_identity_is_gone_and_removing_it_again_is_an_error(config: Path) -> None:
    remove(config, Identity("edge", "monitor"))

    assert Identity("edge", "monitor") not in {spec.identity for spec in load_config_file(config).identities}
    with pytest.raises(IdentityFileError, match="not in"):
        remove(config, Identity("edge", "monitor"))


def test_token_expires_after_the_given_time_to_live(config: Path) -> None:
    minted = token(config, Identity("sensor1"), Settings(), ttl=120, now=1_000_000.0)

    assert minted.endswith("&se=1000120")
    assert "sr=localhost%2Fdevices%2Fsensor1&" in minted


def test_secondary_key_signs_when_asked(config: Path) -> None:
    primary = token(config, Identity("sensor1"), Settings(), now=0.0)
    secondary = token(config, Identity("sensor1"), Settings(), now=0.0, secondary=True)

    assert primary != secondary


def test_identity_ids_are_checked_as_iot_hub_checks_them() -> None:
    assert parse_identity("edge/filter") == Identity("edge", "filter")
    with pytest.raises(IdentityFileError):
        parse_identity("a b")


def test_command_line_add_list_token_remove_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "new.json"

    added = edgehub("identity", "add", "--config", str(path), "--create", "d1")
    listed = edgehub("identity", "list", "--config", str(path), "--json")
    minted = edgehub("identity", "token", "--config", str(path), "d1", "--ttl", "30")
    removed = edgehub("identity", "remove", "--config", str(path), "d1")
    missing = edgehub("identity", "token", "--config", str(path), "d1")

    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("HostName=localhost;DeviceId=d1;SharedAccessKey=")
    assert json.loads(listed.stdout) == [{"id": "d1", "kind": "device", "auth": "sas"}]
    assert minted.stdout.startswith("SharedAccessSignature sr=localhost%2Fdevices%2Fd1&sig=")
    assert removed.returncode == 0
    assert (missing.returncode, "not in" in missing.stderr) == (2, True)
    assert edgehub("check-config", "--config", str(path)).returncode == 0

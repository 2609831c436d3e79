"""The config file's ``acl`` section: loaded into HubConfig, bad rules refused by ``check-config``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgehub.broker.acl import AclRule, Action
from edgehub.config_file import load_config_bytes
from edgehub.errors import ConfigError


def document(acl: object) -> bytes:
    return json.dumps({"schemaVersion": "1.1", "routes": {}, "acl": acl}).encode()


def test_acl_rules_are_loaded_in_order() -> None:
    config = load_config_bytes(document([
        {"deny": "publish", "identity": "$anonymous", "topic": "secret/#"},
        {"allow": "all", "topic": "#"},
    ]), "test")
    assert config.acl == (AclRule(False, "$anonymous", Action.PUBLISH, "secret/#"),
                          AclRule(True, "*", Action.BOTH, "#"))


def test_a_manifest_carries_the_acl_beside_its_identities() -> None:
    desired = {"schemaVersion": "1.1", "routes": {}}
    manifest = {"modulesContent": {"$edgeHub": {"properties.desired": desired}},
                "acl": [{"allow": "subscribe", "topic": "a/+"}]}
    config = load_config_bytes(json.dumps(manifest).encode(), "test")
    assert config.acl == (AclRule(True, "*", Action.SUBSCRIBE, "a/+"),)


def test_bad_rules_are_refused_with_their_location() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_bytes(document([{"allow": "publish", "topic": "a/#/b"}, {"allow": "read", "topic": "x"}]),
                          "test")
    assert [location for location, _ in caught.value.problems] == ["acl[0].topic", "acl[1].allow"]


def test_check_config_reports_a_bad_acl_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(document([{"deny": "all", "identity": "*", "topic": "a#"}]))
    result = subprocess.run([sys.executable, "-m", "edgehub", "check-config", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    expected = "acl[0].topic: invalid topic filter: '#' must be the last level, alone"
    assert expected in result.stdout + result.stderr

"""Nested hubs, every part real: device → child ``edgehub run`` → parent ``edgehub run`` → mosquitto.

The child authenticates at the parent as ``child/$edgeHub`` (declared in the parent's identities) and
publishes each message on its original sender's telemetry topic, which only a child edge hub may do
(the nested-hub rule). Each hop's next hop is down at first, so every message is stored at each hop.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgehub.tls import ensure_dev_certificates
from tests.e2e.conftest import DeviceFactory, Report
from tests.e2e.parts import Broker, Observer, Tally, key, sent_upstream, upstream_env, wait_until
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow

HUB_NAME = "myhub.example"
"""The IoT hub both edge hubs belong to: it names them in SAS ``sr`` and usernames."""
SENDERS = ("d1", "d2")
TO_UPSTREAM = {"upstream": "FROM /messages/* INTO $upstream"}


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_messages_flow_device_to_child_to_parent_to_upstream_stored_at_each_hop(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory, report: Report, tls: bool,
) -> None:
    parent_folder = tmp_path / "parent"
    parent_config = write_config(tmp_path / "parent.json", TO_UPSTREAM, [
        {"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": key("child")},
    ])
    parent_env = upstream_env(broker.port, key("parent"), device_id="parent") | {
        "IotHubHostName": HUB_NAME, "Metrics__Listener__Port": str(free_port()),
    }
    parent_port = int(parent_env["mqttSettings__port" if tls else "mqttSettings__plainPort"])
    child_config = write_config(tmp_path / "child.json", TO_UPSTREAM,
                                [{"deviceId": d, "primaryKey": key(d)} for d in SENDERS])
    child_env = upstream_env(parent_port, key("child"), device_id="child", tls=tls) | {
        "IotHubHostName": HUB_NAME, "Metrics__Listener__Port": str(free_port()),
    }
    if tls:  # the child trusts the parent's dev CA (the parent reuses the CA found in its folder)
        dev = ensure_dev_certificates(parent_folder / "data" / "certs", ["localhost", HUB_NAME])
        child_env["UpstreamCaFile"] = str(dev.ca_file)
    child_metrics = int(child_env["Metrics__Listener__Port"])
    broker.stop()

    with HubProcess(tmp_path / "child", child_config, child_env) as child:
        devices = [device(d, int(child.env["mqttSettings__plainPort"])) for d in SENDERS]
        for client in devices:
            client.publish(range(100), "kind=nested")
            client.wait_acked(30)  # stored at the child: its parent is not running
        with HubProcess(parent_folder, parent_config, parent_env):
            # The child's upstream sends count only what the parent acked: stored at the parent,
            # whose own upstream is down.
            wait_until(lambda: sent_upstream(child_metrics) >= 200, 30, "child delivered to the parent")
            for client in devices:
                client.publish(range(100, 200), "kind=nested")
                client.wait_acked(30)
            wait_until(lambda: sent_upstream(child_metrics) >= 400, 30, "child delivered the rest")
            broker.start()
            observer.wait_for(((d, n) for d in SENDERS for n in range(200)), 60)
    tally = Tally.of(observer.snapshot())
    report("duplicates", tally.duplicates)
    assert tally.missing({d: range(200) for d in SENDERS}) == {}
    assert tally.out_of_order() == {}
    # Upstream of the parent each message is on its original sender's topic (not the child's), with
    # the properties its device gave it.
    assert {a.topic.split("/")[1] for a in observer.snapshot()} == set(SENDERS)
    assert all("kind=nested" in a.topic.split("/", 4)[4] for a in observer.snapshot())

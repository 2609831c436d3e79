"""The generic MQTT broker with Debian's mosquitto_pub / mosquitto_sub (MQTT 3.1.1 and 5) against a
real hub: wildcards, retained messages, QoS 2, persistent sessions across a restart, anonymous
clients refused unless allowed, ACL refusals."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.conformance.generic_broker import Broker, run_broker

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
                       reason="Debian's mosquitto-clients are not installed (make system-deps)"),
]

TIMEOUT: Final = 20.0
VERSIONS: Final = {"311": "mqttv311", "5": "mqttv5"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with run_broker(tmp_path_factory.mktemp("generic-mosquitto")) as running:
        yield running


@pytest.fixture(params=sorted(VERSIONS), ids=lambda v: f"mqtt{v}")
def v(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def pub(broker: Broker, v: str, topic: str, message: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", VERSIONS[v], "-t", topic,
         "-m", message, *extra], capture_output=True, text=True, timeout=TIMEOUT, check=False)


class Sub:
    """mosquitto_sub printing ``topic payload`` lines, exiting after ``count`` messages; started
    once its subscription is in place (-d prints the SUBACK; a resumed session's queued messages
    may come before it)."""

    def __init__(self, broker: Broker, v: str, topic: str, count: int, *extra: str) -> None:
        self.process = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", VERSIONS[v],
             "-t", topic, "-C", str(count), "-v", "-d", "-W", str(int(TIMEOUT)), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        self.early: list[str] = []
        for line in self.process.stdout:
            if "SUBACK" in line:
                break
            self.early.append(line)

    def messages(self) -> list[str]:
        self.process.wait(timeout=TIMEOUT)  # -W bounds it; read through the text buffer (not
        assert self.process.stdout is not None  # communicate(), whose raw reads skip what it holds)
        out = self.process.stdout.read()
        self.process.stdout.close()
        debug = ("Client ", "Subscribed ", "Timed out")
        lines = [*self.early, *out.splitlines()]
        return [line.strip() for line in lines if line.strip() and not line.startswith(debug)]


def sub(broker: Broker, v: str, topic: str, count: int, *extra: str) -> Sub:
    return Sub(broker, v, topic, count, *extra)


def messages(receiver: Sub) -> list[str]:
    return receiver.messages()


def test_mosquitto_sub_with_wildcards_gets_mosquitto_pub_messages(broker: Broker, v: str) -> None:
    receiver = sub(broker, v, f"m{v}/+/temp", 2, "-q", "1")
    assert pub(broker, v, f"m{v}/line1/temp", "21", "-q", "1").returncode == 0
    assert pub(broker, v, f"m{v}/line1/other", "no", "-q", "1").returncode == 0
    assert pub(broker, v, f"m{v}/line2/temp", "22", "-q", "2").returncode == 0
    assert messages(receiver) == [f"m{v}/line1/temp 21", f"m{v}/line2/temp 22"]
    assert receiver.process.returncode == 0


def test_retained_message_reaches_a_later_mosquitto_sub(broker: Broker, v: str) -> None:
    assert pub(broker, v, f"mr{v}/status", "online", "-r", "-q", "1").returncode == 0
    receiver = sub(broker, v, f"mr{v}/#", 1)
    assert messages(receiver) == [f"mr{v}/status online"]
    assert pub(broker, v, f"mr{v}/status", "", "-r").returncode == 0  # an empty retained payload clears it
    cleared = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", VERSIONS[v], "-t", f"mr{v}/#",
         "-C", "1", "-W", "1"], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert cleared.stdout == ""


def test_qos_2_with_mosquitto_clients(broker: Broker, v: str) -> None:
    receiver = sub(broker, v, f"mq{v}/x", 1, "-q", "2")
    assert pub(broker, v, f"mq{v}/x", "exactly-once", "-q", "2").returncode == 0
    assert messages(receiver) == [f"mq{v}/x exactly-once"]


def test_acl_refused_subscription_is_reported_by_mosquitto_sub(broker: Broker, v: str) -> None:
    result = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", VERSIONS[v], "-t", "secret/#",
         "-C", "1", "-W", "3", "-d"], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    code = 135 if v == "5" else 128  # 0x87 Not authorized / 3.1.1's 0x80 Failure
    assert f"Subscribed (mid: 1): {code}" in result.stdout, result.stdout
    assert "All subscription requests were denied" in result.stderr


def test_persistent_session_of_mosquitto_sub_survives_a_hub_restart(tmp_path: Path, v: str) -> None:
    with run_broker(tmp_path / "hub") as broker:
        session = ["-i", f"mosq-persist-{v}", "-c", "-q", "1"] + (["-x", "3600"] if v == "5" else [])
        first = sub(broker, v, "store/#", 1, *session)
        assert pub(broker, v, "store/a", "before", "-q", "1").returncode == 0
        assert messages(first) == ["store/a before"]
        assert pub(broker, v, "store/b", "while-away", "-q", "1").returncode == 0
        broker.restart()
        again = sub(broker, v, "store/#", 1, *session)
        assert messages(again) == ["store/b while-away"]


def test_anonymous_mosquitto_clients_are_refused_unless_allowed(tmp_path: Path, v: str) -> None:
    with run_broker(tmp_path / "hub", env={"mqttSettings__allowAnonymous": "false"}) as broker:
        result = pub(broker, v, "any/topic", "x")
        # CONNACK 5 (3.1.1) / 0x87 (MQTT 5): not authorized
        assert result.returncode == (135 if v == "5" else 5), result.stderr
        assert "not authori" in result.stderr.lower(), result.stderr

"""The azure-iot-device SDK (device and module clients) against a real hub over TLS with SAS tokens.

The SDK pins paho-mqtt < 2, so its roles run as subprocesses in .venv-azure
(tests/conformance/azure_sdk_client.py, built by ``make test``). It only dials port 8883,
so this module's hub listens there; a taken 8883 fails the tests, it does not skip them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from edgehub.message import Identity
from tests.conformance.deployment import (
    AZURE_SDK_PORT,
    Deployment,
    DeploymentSpec,
    module,
    run_deployment,
)

ROOT: Final = Path(__file__).resolve().parents[2]
AZURE_PYTHON: Final = ROOT / ".venv-azure" / "bin" / "python"
SDK_SCRIPT: Final = Path(__file__).with_name("azure_sdk_client.py")
ROLE_TIMEOUT: Final = 20.0
LABEL: Final = "x&y=z/é +%"
"""A custom property value with the characters a topic property bag must escape."""

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(not AZURE_PYTHON.exists(),
                       reason=".venv-azure is missing: `make test` builds it from requirements-azure.txt"),
]

THERMOSTAT = Identity("thermostat:1@hall")
"""An id with characters the SDK percent-encodes in its topics but not in its username."""
MONITOR = module("monitor")
FILTER = module("filter")
SINK = module("sink")

SPEC = DeploymentSpec(
    routes={
        "thermostatToMonitor": "FROM /messages/* WHERE $connectionDeviceId = 'thermostat:1@hall' "
                               "INTO BrokeredEndpoint(\"/modules/monitor/inputs/telemetry\")",
        "filterToSink": "FROM /messages/modules/filter/outputs/out "
                        "INTO BrokeredEndpoint(\"/modules/sink/inputs/in1\")",
    },
    identities=[THERMOSTAT, MONITOR, FILTER, SINK],
    tls_port=AZURE_SDK_PORT,
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("azure"), SPEC) as running:
        yield running


class SdkRoles:
    """Starts SDK clients in .venv-azure; ``close`` kills and reaps any still running (a test
    that failed half-way must not leave a process or its pipes behind)."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, role: str, identity: Identity, *args: str) -> subprocess.Popen[str]:
        """One SDK client as ``identity`` playing ``role`` (send or receive)."""
        command = [
            str(AZURE_PYTHON), str(SDK_SCRIPT), role,
            "--connection-string", self.deployment.connection_string(identity),
            "--ca-file", str(self.deployment.ca_file), "--timeout", str(ROLE_TIMEOUT - 5), *args,
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                process.communicate()


@pytest.fixture
def sdk(deployment: Deployment) -> Iterator[SdkRoles]:
    roles = SdkRoles(deployment)
    yield roles
    roles.close()


def finish(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Wait (bounded) for the role to end; its events, requiring exit 0."""
    try:
        out, err = process.communicate(timeout=ROLE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"SDK role did not finish in {ROLE_TIMEOUT}s:\n{out}\n{err}") from None
    assert process.returncode == 0, f"SDK role exited {process.returncode}:\n{out}\n{err}"
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def received(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The received messages in message id order: the SDK calls ``on_message_received`` from a
    pool of 4 threads, so its own order is not the arrival order (paho's tests check that)."""
    return sorted((event for event in events if event["event"] == "received"), key=lambda e: e["message_id"])


def sent_count(events: list[dict[str, Any]]) -> int:
    return sum(event["event"] == "sent" for event in events)


def test_azure_sdk_device_telemetry_is_accepted_and_routed_with_its_properties(
    sdk: SdkRoles,
) -> None:
    receiver = sdk.start("receive", MONITOR, "--count", "2")
    sender = sdk.start("send", THERMOSTAT, "--count", "2", "--message-id-prefix", "th-",
                        "--label", LABEL)

    assert sent_count(finish(sender)) == 2  # send_message returns after the PUBACK
    messages = received(finish(receiver))
    assert messages == [
        {
            "event": "received", "input": "telemetry",
            "body": json.dumps({"n": n, "source": "azure-sdk"}),
            # The SDK keeps the connection ids the hub adds ($.cdid, as edgeHub) among custom properties.
            "properties": {"$.cdid": "thermostat:1@hall", "seq": str(n), "label": LABEL},
            "content_type": "application/json", "content_encoding": "utf-8", "message_id": f"th-{n}",
        }
        for n in range(2)
    ]


def test_azure_sdk_module_output_reaches_another_sdk_module_input_through_a_route(
    sdk: SdkRoles,
) -> None:
    receiver = sdk.start("receive", SINK, "--count", "3")
    sender = sdk.start("send", FILTER, "--count", "3", "--output", "out",
                        "--message-id-prefix", "f-", "--label", LABEL)

    assert sent_count(finish(sender)) == 3
    messages = received(finish(receiver))
    assert messages == [
        {
            "event": "received", "input": "in1",
            "body": json.dumps({"n": n, "source": "azure-sdk"}),
            "properties": {"$.cdid": "edge", "$.cmid": "filter", "seq": str(n), "label": LABEL},
            "content_type": "application/json", "content_encoding": "utf-8", "message_id": f"f-{n}",
        }
        for n in range(3)
    ]


def test_azure_sdk_module_gets_the_inputs_queued_while_it_was_offline(
    sdk: SdkRoles,
) -> None:
    sender = sdk.start("send", FILTER, "--count", "4", "--output", "out",
                        "--message-id-prefix", "q-", "--label", "queued")
    assert sent_count(finish(sender)) == 4  # acked: stored while no sink is connected

    messages = received(finish(sdk.start("receive", SINK, "--count", "4")))
    assert [(m["message_id"], m["properties"]["seq"], m["input"]) for m in messages] == [
        (f"q-{n}", str(n), "in1") for n in range(4)
    ]

"""azure-iot-device as IoT Edge modules use it: get_twin, patch_twin_reported_properties, desired
patches after the deployment manifest changes, and a direct method one module invokes on another
through the hub's HTTPS method API; again after a hub restart (reported properties kept).

The SDK dials MQTT on 8883 and HTTPS on 443 only, so this module's hub listens on both.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

import pytest

from tests.conformance.deployment import AZURE_SDK_PORT, Deployment, DeploymentSpec, module, run_deployment
from tests.conformance.test_azure_sdk import AZURE_PYTHON, ROLE_TIMEOUT, SDK_SCRIPT, finish

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(
        not AZURE_PYTHON.exists(),
        reason=".venv-azure is missing: `make test` builds it from requirements-azure.txt",
    ),
]

HTTPS_PORT: Final = 443
TWINNED = module("twinned")
CALLER = module("caller")
SPEC = DeploymentSpec(
    routes={},
    identities=[TWINNED, CALLER],
    tls_port=AZURE_SDK_PORT,
    https_port=HTTPS_PORT,
    module_desired={"twinned": {"interval": 10, "mode": "eco"}},
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("azure-twins"), SPEC) as running:
        yield running


class Role:
    """One SDK role whose JSON events are read as they come (a thread drains stdout)."""

    def __init__(self, deployment: Deployment, role: str, identity: Any, *args: str) -> None:
        command = [
            str(AZURE_PYTHON),
            str(SDK_SCRIPT),
            role,
            "--connection-string",
            deployment.connection_string(identity),
            "--ca-file",
            str(deployment.ca_file),
            "--timeout",
            str(ROLE_TIMEOUT - 5),
            *args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, kind: str, timeout: float = ROLE_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["event"] == kind:
                    return event
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {kind!r} event: {self.events}\n{self._stderr()}")
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def end(self) -> int:
        """Wait (bounded) for the role to exit, kill it otherwise; close its pipes."""
        try:
            code = self.process.wait(timeout=ROLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._drainer.join(timeout=5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code

    def _stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None or self.process.stderr.closed:
            return ""
        return self.process.stderr.read()



def test_azure_sdk_module_twin_desired_patch_and_direct_method(deployment: Deployment) -> None:
    twin_role = Role(deployment, "twin", TWINNED, "--count", "1", "--label", "first")
    try:
        twin = twin_role.wait_for("twin")["twin"]
        assert twin["desired"]["interval"] == 10
        assert twin["desired"]["mode"] == "eco"
        reported = twin_role.wait_for("reported")["twin"]["reported"]
        assert reported["reportedBy"] == "azure-sdk"
        assert reported["label"] == "first"
        twin_role.wait_for("ready")

        invoked = finish(
            subprocess.Popen(
                [
                    str(AZURE_PYTHON),
                    str(SDK_SCRIPT),
                    "invoke",
                    "--connection-string",
                    deployment.connection_string(CALLER),
                    "--ca-file",
                    str(deployment.ca_file),
                    "--target",
                    TWINNED.id,
                    "--method",
                    "echo",
                    "--label",
                    "call",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        [result] = [e["result"] for e in invoked if e["event"] == "invoked"]
        assert result == {"status": 200, "payload": {"echo": {"n": 1, "label": "call"}, "method": "echo"}}
        method = twin_role.wait_for("method")
        assert method["name"] == "echo"

        version = twin["desired"]["$version"]
        deployment.rewrite_module_desired("twinned", {"interval": 20})
        patch = twin_role.wait_for("desired")["patch"]
        assert patch == {"interval": 20, "mode": None, "$version": version + 1}
        assert twin_role.end() == 0
    finally:
        if twin_role.process.poll() is None:
            twin_role.process.kill()
        twin_role.end()


def test_azure_sdk_module_reads_its_reported_properties_after_a_hub_restart(deployment: Deployment) -> None:
    first = Role(deployment, "twin", TWINNED, "--count", "0", "--label", "before-restart")
    first.wait_for("reported")
    assert first.end() == 0
    assert deployment.hub.stop() == 0
    deployment.hub.start()
    again = Role(deployment, "twin", TWINNED, "--count", "0", "--label", "after-restart")
    twin = again.wait_for("twin")["twin"]
    assert again.end() == 0
    assert twin["reported"]["label"] == "before-restart"  # read before this role patched it

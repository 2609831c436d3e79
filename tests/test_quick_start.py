"""The README's quick start, followed literally: the hub as ``make run`` starts it (configs/dev.json),
then the two copy-paste commands; the second one prints the message the first one sent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hubproc import HubProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def quick_start_commands() -> list[str]:
    """The code block of the quick start that sends and receives (the one with mosquitto_pub)."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    [block] = [b for b in blocks if "mosquitto_pub" in b]
    return [line for line in block.splitlines() if line.strip()]


def test_make_run_serves_the_dev_config_with_a_plaintext_loopback_port() -> None:
    assert "CONFIG ?= configs/dev.json" in MAKEFILE
    assert "mqttSettings__plainPort=$${mqttSettings__plainPort:-1883}" in MAKEFILE


def test_quick_start_is_two_make_commands_then_two_copy_paste_commands() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run " in section
    assert "make test " in section
    assert len(quick_start_commands()) == 2


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="needs Debian's mosquitto-clients")
def test_quick_start_commands_deliver_the_message_from_the_device_to_the_module(tmp_path: Path) -> None:
    port = free_port()
    send, receive = (line.replace("-p 1883 ", f"-p {port} ") for line in quick_start_commands())
    hub = HubProcess(tmp_path, ROOT / "configs" / "dev.json", env={
        "mqttSettings__plainPort": str(port), "mqttSettings__port": str(free_port()),
    }).start()
    try:
        sent = subprocess.run(["bash", "-c", send], cwd=ROOT, capture_output=True, text=True, timeout=30,
                              check=False)
        received = subprocess.run(["bash", "-c", receive], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30, check=False)
    finally:
        assert hub.stop() == 0
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    expected = 'devices/edge/modules/filter/inputs/input1/%24.cdid=sensor1 {"temperature": 21.5}'
    assert received.stdout.strip() == expected
    assert received.stdout.strip() in README

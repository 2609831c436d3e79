"""The AMQP head as the hub builds it: with ``amqpSettings__enabled=false`` proton is never imported and
nothing listens on ``amqpSettings__port``; enabled, the port serves AMQPS and the head reports ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.hubproc import free_port

SCRIPT = textwrap.dedent("""
    import asyncio, json, socket, sys
    from edgehub.assembly import assemble
    from edgehub.settings import load_settings

    async def main() -> None:
        assembly = assemble(load_settings(), None)
        await assembly.start()
        try:
            with socket.socket() as probe:
                amqp_open = probe.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0
            print(json.dumps({
                "proton_imported": any(m.startswith(("proton", "cproton")) for m in sys.modules),
                "amqp_open": amqp_open,
                "describe": assembly.describe(),
                "ready": assembly.hub.heads and [head.name for head in assembly.hub.heads],
            }))
        finally:
            await assembly.stop()

    asyncio.run(main())
""")


def run_hub_script(tmp_path: Path, **env: str) -> dict[str, object]:
    amqp_port = free_port()
    environment = {k: v for k, v in os.environ.items() if "__" not in k} | {
        "StorageFolder": str(tmp_path / "data"),
        "mqttSettings__port": "0",
        "httpSettings__enabled": "false",
        "amqpSettings__port": str(amqp_port),
        "Metrics__Listener__Port": "0",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(amqp_port)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return document


def test_with_the_amqp_head_off_proton_is_never_imported_and_its_port_is_closed(tmp_path: Path) -> None:
    outcome = run_hub_script(tmp_path, amqpSettings__enabled="false")
    assert outcome["proton_imported"] is False
    assert outcome["amqp_open"] is False
    assert outcome["ready"] == ["mqtt"]
    describe = outcome["describe"]
    assert isinstance(describe, list)
    assert not [line for line in describe if line.startswith("amqp:")]


def test_with_the_amqp_head_on_its_port_listens_and_the_hub_describes_it(tmp_path: Path) -> None:
    outcome = run_hub_script(tmp_path, amqpSettings__enabled="true")
    assert outcome["proton_imported"] is True
    assert outcome["amqp_open"] is True
    assert outcome["ready"] == ["mqtt", "amqp"]
    describe = outcome["describe"]
    assert isinstance(describe, list)
    assert [line for line in describe if line.startswith("amqp: amqps://0.0.0.0:")]

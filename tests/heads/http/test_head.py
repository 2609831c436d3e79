"""The HTTP head as the hub builds it: off means aiohttp is never imported and nothing is bound,
and the metrics port is then served by the minimal server; on, both sites serve and stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.hubproc import free_port

SCRIPT = textwrap.dedent("""
    import asyncio, json, socket, sys, urllib.request
    from edgehub.assembly import assemble
    from edgehub.settings import load_settings

    async def main() -> None:
        assembly = assemble(load_settings(), None)
        await assembly.start()
        try:
            https_port, metrics_port = int(sys.argv[1]), int(sys.argv[2])
            with socket.socket() as probe:
                https_open = probe.connect_ex(("127.0.0.1", https_port)) == 0
            answers = {}
            for path in ("/health", "/ready", "/metrics"):
                url = f"http://127.0.0.1:{metrics_port}{path}"
                answers[path] = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
            print(json.dumps({
                "aiohttp_imported": any(m == "aiohttp" or m.startswith("aiohttp.") for m in sys.modules),
                "https_open": https_open,
                "health": json.loads(answers["/health"]),
                "ready": json.loads(answers["/ready"]),
                "metrics_has_names": b"edgehub_connected_clients" in answers["/metrics"],
                "describe": assembly.describe(),
            }))
        finally:
            await assembly.stop()

    asyncio.run(main())
""")


def run_hub_script(tmp_path: Path, **env: str) -> dict[str, object]:
    https_port, metrics_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if "__" not in k} | {
        "StorageFolder": str(tmp_path / "data"), "amqpSettings__enabled": "false",
        "mqttSettings__port": "0", "httpSettings__port": str(https_port),
        "Metrics__Listener__Port": str(metrics_port), **env,
    }
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(https_port), str(metrics_port)],
                            env=environment, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return document


def test_with_the_http_head_off_aiohttp_is_never_imported_nothing_binds_and_probes_still_answer(
    tmp_path: Path,
) -> None:
    outcome = run_hub_script(tmp_path, httpSettings__enabled="false")
    assert outcome["aiohttp_imported"] is False
    assert outcome["https_open"] is False
    assert outcome["health"] == {"status": "alive"}
    assert outcome["ready"] == {"ready": True, "store": {"open": True}, "heads": {"mqtt": {"bound": True}}}
    assert outcome["metrics_has_names"] is True
    describe = outcome["describe"]
    assert isinstance(describe, list)
    assert [line for line in describe if line.startswith(("http:", "metrics:"))] == [
        line for line in describe if line.startswith("metrics: http://0.0.0.0:")
    ]
    assert len([line for line in describe if line.startswith("metrics:")]) == 1


def test_with_the_http_head_on_and_mqtt_off_the_head_owns_a_websocket_only_mqtt_server(
    tmp_path: Path,
) -> None:
    outcome = run_hub_script(tmp_path, mqttSettings__enabled="false")
    assert outcome["aiohttp_imported"] is True
    assert outcome["https_open"] is True
    assert outcome["ready"] == {"ready": True, "store": {"open": True}, "heads": {"http": {"bound": True}}}
    describe = outcome["describe"]
    assert isinstance(describe, list)
    assert not any(line.startswith("mqtt:") for line in describe)
    assert any(line.startswith("http: https://") for line in describe)


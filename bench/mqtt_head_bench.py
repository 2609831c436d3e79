"""The MQTT head alone: QoS 1 telemetry through server.py into a hub that stores nothing.

Measures the head's decode / session / ack path, not the store; mosquitto on the same load
is the yardstick. Prints a table; never fails on a timing.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile

from bench.common import Row, free_port, print_table, server_process
from bench.mqtt_loadgen import Credentials, run_load

_SERVE = """
import asyncio, sys
from edgehub.heads.mqtt.server import start_mqtt_server
from edgehub.message import Identity

class NoopHub:
    async def ingest(self, messages):
        pass
    def attach(self, identity, link):
        pass
    def detach(self, identity, link):
        pass

async def main():
    await start_mqtt_server(NoopHub(), lambda r: Identity.parse(r.client_id), host="127.0.0.1",
                            port=int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def _measure(port: int, publishers: int, window: int, total: int) -> tuple[int, float]:
    creds = [Credentials(f"bench{i}", "u", "p", topic=f"devices/bench{i}/messages/events/")
             for i in range(publishers)]
    result = asyncio.run(run_load("127.0.0.1", port, creds, None, "", total // publishers, 1, window=window))
    return result.acked, result.seconds


def run(quick: bool = False) -> None:
    total = 40_000 if quick else 200_000
    loads = [(1, 100), (4, 100), (8, 500)]
    rows: list[Row] = []
    port = free_port()
    with server_process([sys.executable, "-c", _SERVE, str(port)], port):
        for publishers, window in loads:
            acked, seconds = _measure(port, publishers, window, total)
            name = f"edgehub MQTT head, {publishers} pub, window {window}"
            rows.append(Row(name, acked, seconds, "no-op hub"))
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if mosquitto is not None:
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
            conf.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n")
            conf.flush()
            with server_process([mosquitto, "-c", conf.name], port):
                for publishers, window in loads:
                    acked, seconds = _measure(port, publishers, window, total)
                    name = f"mosquitto, {publishers} pub, window {window}"
                    rows.append(Row(name, acked, seconds, "no subscriber"))
    print_table("MQTT head: QoS 1 publish -> PUBACK (loopback, bench.mqtt_loadgen)", rows)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)

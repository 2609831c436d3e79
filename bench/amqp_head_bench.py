"""Module → module through the hub over AMQP beside the same over MQTT, one hub, one run.

A module ``source`` sends QoS 1-like telemetry (settled ``accepted`` after the durable write) and a
route takes it to the module ``sink``'s input; the sink receives it (AMQP: a receiver link with 100
credit, each message accepted; MQTT: bench.mqtt_loadgen with a window of 100). The AMQP clients are
python-qpid-proton's reactor over TLS with SASL PLAIN, as the Azure IoT C SDK connects. Prints a table;
never fails on a timing. (AMQP over WebSocket ingest is measured by bench.amqp_upstream_bench: the
parent hub's head there.)
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import proton
from proton.handlers import MessagingHandler
from proton.reactor import Container

from bench.common import process_memory_mib
from bench.fleet import EDGE, HOST, Fleet, edgehub, every_head
from bench.mqtt_loadgen import run_load
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.message import Identity

PAYLOAD: Final = b"x" * 256
CREDIT: Final = 100
LIMIT_SECS: Final = 300.0


class _ModuleToModule(MessagingHandler):
    """The source's sender and the sink's receiver on two connections; stops at ``total`` received."""

    def __init__(self, url: str, ca_file: Path, fleet: Fleet, total: int) -> None:
        super().__init__(prefetch=CREDIT, auto_accept=True)
        self.url, self.ca_file, self.fleet, self.total = url, ca_file, fleet, total
        self.sent = self.accepted = self.received = 0
        self.started = self.finished = 0.0
        self.connections: list[Any] = []

    def _connect(self, container: Any, identity: Identity) -> Any:
        domain = proton.SSLDomain(proton.SSLDomain.MODE_CLIENT)
        domain.set_trusted_ca_db(str(self.ca_file))
        domain.set_peer_authentication(proton.SSLDomain.VERIFY_PEER)
        token = make_sas_token(sas_resource(HOST, identity), self.fleet.key, int(time.time()) + 3600)
        connection = container.connect(
            self.url, ssl_domain=domain, allowed_mechs="PLAIN", allow_insecure_mechs=True,
            user=f"{identity.device_id}/modules/{identity.module_id}@sas.{HOST}", password=token)
        self.connections.append(connection)
        return connection

    def on_start(self, event: Any) -> None:
        sink, source = self.fleet.module("sink"), self.fleet.module("source")
        event.container.create_receiver(self._connect(event.container, sink),
                                        f"/devices/{EDGE}/modules/sink/messages/events")
        event.container.create_sender(self._connect(event.container, source),
                                      f"/devices/{EDGE}/modules/source/messages/events")
        self.started = time.perf_counter()

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.sent < self.total:
            message = proton.Message(body=PAYLOAD, properties={"n": str(self.sent)})
            message.inferred = True
            event.sender.send(message)
            self.sent += 1

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1

    def on_message(self, event: Any) -> None:
        self.received += 1
        if self.received >= self.total:
            self.finished = time.perf_counter()
            for connection in self.connections:
                connection.close()

    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        print(f"  amqp transport error: {condition}", file=sys.stderr)
        for connection in self.connections:
            connection.close()


def _amqp(port: int, ca_file: Path, fleet: Fleet, total: int) -> tuple[int, float]:
    handler = _ModuleToModule(f"amqps://127.0.0.1:{port}", ca_file, fleet, total)
    Container(handler).run()
    seconds = (handler.finished or time.perf_counter()) - handler.started
    return handler.received, seconds


def run(quick: bool = False) -> list[dict[str, object]]:
    total = 5_000 if quick else 40_000
    fleet = Fleet(devices=0, modules=("source", "sink"))
    routes = {"toSink": 'FROM /messages/modules/source/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}
    root = Path(tempfile.mkdtemp(prefix="edgehub-amqp-head-bench-"))
    settings = every_head()
    rows: list[dict[str, object]] = []
    try:
        with edgehub(fleet, root / "hub", routes, settings, label="edgehub (every head)") as hub:
            ca_file = hub.data / "certs" / "dev-ca.pem"
            received, seconds = _amqp(int(settings["amqpSettings__port"]), ca_file, fleet, total)
            rows.append({"protocol": "AMQP (TLS, SASL PLAIN)", "delivered": received, "seconds": seconds})
            mqtt = asyncio.run(run_load(
                "127.0.0.1", hub.port, [fleet.credentials(fleet.module("source"))],
                fleet.credentials(fleet.module("sink")), fleet.input_filter("sink"), total, 1,
                window=CREDIT, limit_secs=LIMIT_SECS))
            rows.append({"protocol": "MQTT (plain port, QoS 1)", "delivered": mqtt.received,
                         "seconds": mqtt.seconds})
            rss, peak = process_memory_mib(hub.pid)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mqtt_rate = rows[1]["delivered"] / rows[1]["seconds"] if rows[1]["seconds"] else 0.0  # type: ignore[operator]
    print(f"\n## Module → module through the hub, AMQP beside MQTT: {total} messages of "
          f"{len(PAYLOAD)} bytes, one source, one sink, window/credit {CREDIT}\n")
    print("| protocol | delivered | msg/s | vs MQTT |")
    print("|---|---|---|---|")
    for row in rows:
        rate = row["delivered"] / row["seconds"] if row["seconds"] else 0.0  # type: ignore[operator]
        row["rate"] = rate
        print(f"| {row['protocol']} | {row['delivered']} | {rate:,.0f} | "
              f"{rate / mqtt_rate if mqtt_rate else 0:.2f} |")
    print(f"\nhub RSS after both runs: {rss:.1f} MiB (peak {peak:.1f} MiB), every head on")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)

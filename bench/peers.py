"""The peers every scenario measures beside edgehub: Debian's mosquitto (plain, with persistence, bridged)
and amqtt's broker. Starting and stopping them only; the scenarios load and measure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.common import server_process

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
AMQTT = Path(sys.executable).parent / "amqtt"


def have_amqtt() -> bool:
    return AMQTT.exists()


def mosquitto_config(
    folder: Path, port: int, *, persistence: bool = False, extra: Sequence[str] = (), name: str = "mosquitto"
) -> Path:
    """Unbounded queues and in-flight windows (the load generator paces itself); ``persistence`` keeps
    messages in ``folder`` (mosquitto writes its database at autosave and at exit)."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "max_inflight_messages 0",
        "max_queued_messages 0",
    ]
    if persistence:
        lines += ["persistence true", f"persistence_location {folder}/"]
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # as root mosquitto drops to a user that cannot read the folder
    path = folder / f"{name}.conf"
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


@contextlib.contextmanager
def mosquitto(
    folder: Path,
    port: int,
    *,
    persistence: bool = False,
    extra: Sequence[str] = (),
    label: str = "mosquitto",
    preexec: Callable[[], None] | None = None,
) -> Iterator[int]:
    """A running mosquitto on ``port``; yields its pid."""
    assert MOSQUITTO is not None, "mosquitto is not installed (make system-deps)"
    folder.mkdir(parents=True, exist_ok=True)
    config = mosquitto_config(
        folder, port, persistence=persistence, extra=extra, name=label.replace(" ", "-")
    )
    with server_process([MOSQUITTO, "-c", str(config)], port, label=label, preexec=preexec) as process:
        yield process.pid


def bridge_extra(upstream_port: int) -> list[str]:
    """mosquitto as a store-and-forward peer: everything out to ``upstream_port`` at QoS 1, kept while
    that is down."""
    return [
        "connection upstream",
        f"address 127.0.0.1:{upstream_port}",
        "topic # out 1",
        "cleansession false",
        "clientid edge-bridge",
        "bridge_protocol_version mqttv311",
        "restart_timeout 1",
    ]


@contextlib.contextmanager
def amqtt(folder: Path, port: int, preexec: Callable[[], None] | None = None) -> Iterator[int]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "amqtt.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\nplugins:\n"
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    with server_process(
        [str(AMQTT), "-c", str(config)], port, label="amqtt broker", preexec=preexec
    ) as process:
        yield process.pid

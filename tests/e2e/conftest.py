"""Fixtures of the end-to-end tests: an upstream mosquitto with a persistent observer, devices that close,
and ``report`` for counts worth seeing (duplicates), printed in the summary of every run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

from tests.e2e.parts import Broker, Device, Observer, key


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """The upstream: a real mosquitto on a free loopback port, persistence on (restarts keep sessions)."""
    upstream = Broker(tmp_path / "broker").start()
    yield upstream
    upstream.stop()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    """Subscribed to every device's telemetry on ``broker`` before any hub connects."""
    watcher = Observer(broker)
    yield watcher
    watcher.close()


DeviceFactory = Callable[[str, int], Device]


@pytest.fixture
def device() -> Iterator[DeviceFactory]:
    """``device(id, hub_plain_port)``: a connected device with the key ``key(id)``; all closed at the end."""
    opened: list[Device] = []

    def connect(device_id: str, port: int) -> Device:
        client = Device(device_id, key(device_id), port)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


Report = Callable[[str, object], None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """``report(name, value)``: a test's measured count, listed in the terminal summary (never asserted)."""

    def note(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return note


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    rows = [
        (test.nodeid.rpartition("::")[2], test.user_properties)
        for outcome in ("passed", "failed", "xfailed")
        for test in terminalreporter.stats.get(outcome, [])
        if getattr(test, "when", "") == "call" and getattr(test, "user_properties", None)
        and "tests/e2e/" in test.nodeid
    ]
    if rows:
        terminalreporter.section("end-to-end counts (at-least-once: duplicates allowed, reported)")
        for name, properties in rows:
            terminalreporter.line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in properties))

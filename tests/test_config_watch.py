"""Tests of edgehub.config_watch: a changed file reaches the hub, a bad one never does
(docs/architecture.md §4).

Polling runs in virtual time on FakeClock; files live under tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgehub.config_file import HubConfig, load_config_file
from edgehub.config_watch import ConfigWatcher
from edgehub.errors import ConfigError, RouteSyntaxError
from edgehub.routing.spec import RouteSpec
from edgehub.testing.clock import FakeClock

UPSTREAM = "FROM /messages/* INTO $upstream"
TO_FILTER = 'FROM /messages/* INTO BrokeredEndpoint("/modules/filter/inputs/in1")'


def write_config(path: Path, routes: dict[str, Any], *, indent: int | None = None) -> None:
    path.write_text(json.dumps({"schemaVersion": "1.1", "routes": routes}, indent=indent))


def write_truncated_config(path: Path) -> None:
    """What a poll may see while an editor is still writing the file."""
    path.write_text('{"schemaVersion": "1.1", "routes": {')


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "hub.json"
    write_config(path, {"up": UPSTREAM})
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def applied() -> list[HubConfig]:
    return []


@pytest.fixture
def watcher(config_path: Path, clock: FakeClock, applied: list[HubConfig]) -> ConfigWatcher:
    return ConfigWatcher(config_path, applied.append, clock)


@pytest.fixture
async def running(watcher: ConfigWatcher) -> AsyncIterator[ConfigWatcher]:
    task = asyncio.create_task(watcher.run())
    yield watcher
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def route_names(config: HubConfig) -> list[str]:
    return [route.name for route in config.routes]


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_unchanged_file_is_not_passed_on(watcher: ConfigWatcher, applied: list[HubConfig]) -> None:
    assert watcher.check_once() is False
    assert applied == []


def test_changed_file_is_loaded_and_passed_on(
    watcher: ConfigWatcher, config_path: Path, applied: list[HubConfig]
) -> None:
    write_config(config_path, {"up": UPSTREAM, "filter": {"route": TO_FILTER, "priority": 1}})

    assert watcher.check_once() is True
    [config] = applied
    assert config.routes[1] == RouteSpec(name="filter", text=TO_FILTER, priority=1)
    assert watcher.current == config
    assert watcher.check_once() is False


def test_same_size_rewrite_within_one_timestamp_tick_is_still_noticed(
    watcher: ConfigWatcher, config_path: Path, applied: list[HubConfig]
) -> None:
    before = config_path.stat()
    config_path.write_text(config_path.read_text().replace('"up"', '"UP"'))
    os.utime(config_path, ns=(before.st_atime_ns, before.st_mtime_ns))

    assert watcher.check_once() is True
    assert route_names(applied[0]) == ["UP"]


async def test_running_watcher_applies_a_change_at_the_next_poll(
    running: ConfigWatcher, config_path: Path, clock: FakeClock, applied: list[HubConfig]
) -> None:
    await clock.advance(0)
    write_config(config_path, {"second": UPSTREAM})

    await clock.advance(1.9)
    assert applied == []
    await clock.advance(0.1)
    assert [route_names(config) for config in applied] == [["second"]]


async def test_poll_interval_is_configurable(
    config_path: Path, clock: FakeClock, applied: list[HubConfig]
) -> None:
    watcher = ConfigWatcher(config_path, applied.append, clock, interval_secs=30)
    task = asyncio.create_task(watcher.run())
    write_config(config_path, {"second": UPSTREAM})

    await clock.advance(29)
    assert applied == []
    await clock.advance(1)
    assert len(applied) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_invalid_file_is_refused_with_one_warning_and_the_old_config_stays(
    running: ConfigWatcher,
    config_path: Path,
    clock: FakeClock,
    applied: list[HubConfig],
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_config(config_path, {"up": {"route": UPSTREAM, "priority": 12}})

    await clock.advance(2 * 5)

    assert applied == []
    [warning] = warnings_in(caplog)
    assert "refused, keeping the current config" in warning
    assert "routes.up.priority" in warning


async def test_a_fixed_file_is_applied_after_a_refused_one(
    running: ConfigWatcher, config_path: Path, clock: FakeClock, applied: list[HubConfig]
) -> None:
    write_truncated_config(config_path)
    await clock.advance(2)
    write_config(config_path, {"fixed": UPSTREAM})
    await clock.advance(2)

    assert [route_names(config) for config in applied] == [["fixed"]]


def test_validate_hook_refusal_keeps_the_old_config(
    config_path: Path, clock: FakeClock, applied: list[HubConfig], caplog: pytest.LogCaptureFixture
) -> None:
    def compile_routes(config: HubConfig) -> None:
        for route in config.routes:
            if "INTO" not in route.text:
                raise RouteSyntaxError("expected INTO", len(route.text), route.text)

    watcher = ConfigWatcher(config_path, applied.append, clock, validate=compile_routes)
    write_config(config_path, {"broken": "FROM /messages/*"})

    assert watcher.check_once() is False
    assert applied == []
    [warning] = warnings_in(caplog)
    assert "expected INTO" in warning


def test_validate_hook_config_error_lists_its_problems(
    config_path: Path, clock: FakeClock, applied: list[HubConfig], caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(config: HubConfig) -> None:
        raise ConfigError([("routes.up", "unknown endpoint"), ("routes.down", "bad condition")])

    watcher = ConfigWatcher(config_path, applied.append, clock, validate=refuse)
    write_config(config_path, {"up": UPSTREAM, "down": UPSTREAM})

    assert watcher.check_once() is False
    [warning] = warnings_in(caplog)
    assert "routes.up: unknown endpoint; routes.down: bad condition" in warning


def test_missing_file_warns_once_keeps_the_config_and_a_new_file_is_applied(
    watcher: ConfigWatcher, config_path: Path, applied: list[HubConfig], caplog: pytest.LogCaptureFixture
) -> None:
    config_path.unlink()

    assert [watcher.check_once() for _ in range(3)] == [False, False, False]
    [warning] = warnings_in(caplog)
    assert "missing" in warning

    write_config(config_path, {"back": UPSTREAM})
    assert watcher.check_once() is True
    assert route_names(applied[0]) == ["back"]


def test_file_restored_to_the_running_config_is_not_passed_on_again(
    watcher: ConfigWatcher, config_path: Path, applied: list[HubConfig]
) -> None:
    original = config_path.read_text()
    config_path.unlink()
    watcher.check_once()
    config_path.write_text(original)

    assert watcher.check_once() is False
    assert applied == []


def test_reformatted_file_with_the_same_config_is_not_passed_on(
    config_path: Path, clock: FakeClock, applied: list[HubConfig]
) -> None:
    watcher = ConfigWatcher(config_path, applied.append, clock, current=load_config_file(config_path))
    write_config(config_path, {"up": UPSTREAM}, indent=4)

    assert watcher.check_once() is False
    assert applied == []


def test_change_made_before_the_first_poll_is_noticed_when_current_config_is_given(
    config_path: Path, clock: FakeClock, applied: list[HubConfig]
) -> None:
    loaded_at_start = load_config_file(config_path)
    write_config(config_path, {"changed": UPSTREAM})
    watcher = ConfigWatcher(config_path, applied.append, clock, current=loaded_at_start)

    assert watcher.check_once() is True
    assert route_names(applied[0]) == ["changed"]


async def test_watcher_keeps_polling_after_on_change_fails(
    config_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[list[str]] = []

    def on_change(config: HubConfig) -> None:
        received.append(route_names(config))
        if len(received) == 1:
            raise RuntimeError("hub could not apply it")

    watcher = ConfigWatcher(config_path, on_change, clock)
    task = asyncio.create_task(watcher.run())
    write_config(config_path, {"first": UPSTREAM})
    await clock.advance(2)
    write_config(config_path, {"second": UPSTREAM})
    await clock.advance(2)

    assert received == [["first"], ["second"]]
    assert any(record.levelno == logging.ERROR for record in caplog.records)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_cancelling_run_stops_polling(
    watcher: ConfigWatcher, config_path: Path, clock: FakeClock, applied: list[HubConfig]
) -> None:
    task = asyncio.create_task(watcher.run())
    await clock.advance(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    write_config(config_path, {"late": UPSTREAM})

    await clock.advance(10)

    assert task.cancelled()
    assert applied == []
    assert clock.sleepers == 0


def test_ignored_parts_of_a_new_config_are_logged(
    watcher: ConfigWatcher, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path.write_text(json.dumps({"schemaVersion": "1.2", "routes": {}, "mqttBroker": {}}))

    assert watcher.check_once() is True
    [warning] = warnings_in(caplog)
    assert "mqttBroker" in warning


@pytest.mark.parametrize("interval", [0, -1.0])
def test_interval_must_be_positive(config_path: Path, clock: FakeClock, interval: float) -> None:
    with pytest.raises(ValueError, match="interval_secs"):
        ConfigWatcher(config_path, lambda config: None, clock, interval_secs=interval)

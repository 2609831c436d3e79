"""``edgehub`` as users run it: exit codes, clean stop on signals, check-config, stats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgehub.message import Message
from edgehub.store.base import Delivery, IngestItem, QueueKey
from edgehub.store.open import open_store
from tests.hubproc import HubProcess, free_port


def edgehub(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if "__" not in k}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgehub", *args], env=environment, capture_output=True,
                          text=True, timeout=timeout, check=False)


def hub_env(tmp_path: Path) -> dict[str, str]:
    return {"mqttSettings__port": str(free_port()), "mqttSettings__plainPort": str(free_port())}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_prints_where_it_listens_and_stops_cleanly_on_a_signal(tmp_path: Path, sig: int) -> None:
    hub = HubProcess(tmp_path, env=hub_env(tmp_path)).start()
    assert "store: " in hub.output
    assert "mqtt: mqtts://" in hub.output
    assert hub.stop(sig) == 0
    assert "stopped" in hub.output
    assert (tmp_path / "data" / "certs" / "dev-ca.pem").exists()


def test_a_bad_environment_variable_exits_2_naming_it(tmp_path: Path) -> None:
    result = edgehub("run", env={"StorageFolder": str(tmp_path), "mqttSettings__port": "99999"})
    assert result.returncode == 2
    assert "mqttSettings__port" in result.stderr


def test_a_bad_config_file_exits_2_with_each_problem_located(tmp_path: Path) -> None:
    bad_text = tmp_path / "bad-text.json"
    bad_text.write_text(json.dumps({"schemaVersion": "1.1", "routes": {
        "r1": "FROM /messages/* INTO", "r2": "FROM /messages/* WHERE a = INTO $upstream",
    }}))
    bad_priority = tmp_path / "bad-priority.json"
    bad_priority.write_text(json.dumps({"schemaVersion": "1.1", "routes": {
        "r3": {"route": "FROM /messages/* INTO $upstream", "priority": 12},
    }}))
    result = edgehub("check-config", "--config", str(bad_text), env={"StorageFolder": str(tmp_path)})
    assert result.returncode == 2
    assert "routes.r1" in result.stderr
    assert "routes.r2" in result.stderr
    assert "position" in result.stderr
    result = edgehub("check-config", "--config", str(bad_priority), env={"StorageFolder": str(tmp_path)})
    assert result.returncode == 2
    assert "routes.r3.priority" in result.stderr
    run = edgehub("run", "--config", str(bad_text), env={"StorageFolder": str(tmp_path)})
    assert run.returncode == 2


def test_check_config_accepts_every_example_deployment() -> None:
    for example in sorted(Path("configs").glob("*.json")):
        result = edgehub("check-config", "--config", str(example))
        assert result.returncode == 0, (example, result.stderr)


def test_a_store_that_cannot_be_opened_exits_3_with_the_path_and_never_runs_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "store").mkdir(parents=True)
    (folder / "store" / "CURRENT").write_text("garbage\n")
    result = edgehub("run", env={"StorageFolder": str(folder), **hub_env(tmp_path)})
    assert result.returncode == 3, result.stderr
    assert str(folder / "store") in result.stderr


def test_stats_prints_queue_lengths_and_sizes_of_a_store(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    store = open_store(folder / "store", backend="auto", sync=False, low_memory=True, max_size_bytes=None,
                       recovery="fail")
    queue = QueueKey("$upstream", 0)
    items = [IngestItem(Message(b"x" * 100, enqueued_ms=1), (Delivery(queue, 2**50),)) for _ in range(3)]
    store.append(items)
    store.close()
    result = edgehub("stats", "--storage", str(folder))
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("$upstream"))
    assert row.split()[1:3] == ["0", "3"]


def test_quarantine_moves_a_corrupt_store_aside_says_so_and_starts_empty(tmp_path: Path) -> None:
    store = tmp_path / "data" / "store"
    store.mkdir(parents=True)
    (store / "CURRENT").write_text("garbage\n")
    env = {"storeRecovery": "quarantine", **hub_env(tmp_path)}
    with HubProcess(tmp_path, env=env) as hub:
        assert "moved it to" in hub.output
    assert hub.process is not None
    assert hub.process.returncode == 0
    assert list(tmp_path.glob("data/store.corrupt-*"))


def test_the_running_hub_takes_a_changed_config_file_and_refuses_a_bad_one_keeping_the_old(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.json"
    routes = {"schemaVersion": "1.1", "routes": {"up": "FROM /messages/* INTO $upstream"}}
    config.write_text(json.dumps(routes))
    with HubProcess(tmp_path, config=config, env=hub_env(tmp_path)) as hub:
        routes["routes"] = {
            "a": "FROM /messages/* INTO $upstream", "b": "FROM /messages/modules/* INTO $upstream",
        }
        config.write_text(json.dumps(routes))
        assert "2 routes" in hub.wait_for_line("config from ")
        config.write_text(json.dumps({"schemaVersion": "1.1", "routes": {"bad": "FROM /messages/* INTO"}}))
        refused = hub.wait_for_line("refused, keeping the current config")
        assert "routes.bad" in refused
        assert hub.stop() == 0


@pytest.mark.parametrize("argv", [["run"], ["run", "--config", "configs/dev.json"], ["run", "--config", ""]])
def test_plain_run_reads_the_hubs_own_command_lines_as_the_parser_does(argv: list[str]) -> None:
    from edgehub.cli import _parser, plain_run

    parsed = _parser().parse_args(argv)

    assert plain_run(argv) == (True, parsed.config)


@pytest.mark.parametrize("argv", [
    ["run", "--conf", "x.json"], ["run", "--config=x.json"], ["run", "--config", "-h"], ["run", "-h"],
    ["run", "--config"], ["check-config"], ["stats", "--json"], [],
])
def test_plain_run_leaves_every_other_command_line_to_the_parser(argv: list[str]) -> None:
    from edgehub.cli import plain_run

    assert plain_run(argv) == (False, None)


def test_edgehub_run_with_an_abbreviated_option_still_runs_through_the_parser(tmp_path: Path) -> None:
    result = edgehub("run", "--conf", str(tmp_path / "missing.json"), env={"StorageFolder": str(tmp_path)})

    assert result.returncode == 2
    assert "missing.json" in result.stderr


def test_performance_mode_freezes_start_up_objects_and_collects_the_young_generation_less_often() -> None:
    import gc

    from edgehub.cli import YOUNG_GENERATION_THRESHOLD, _tune_collector

    threshold = gc.get_threshold()
    before = gc.get_freeze_count()
    try:
        _tune_collector()
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, threshold[1], threshold[2])
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

"""The results file: its name, the machine and mode in it, each scenario's tables, and the PNG plots."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.results import RunInfo, ScenarioReport, machine_info, render, results_path, write
from bench.timeline import ScenarioTimeline

STARTED = datetime(2026, 12, 1, 23, 5, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _info(platform: str = "native") -> RunInfo:
    return RunInfo(STARTED, quick=True, machine={"host": "pi-4", "arch": "armv7l", "platform": platform},
                   ceiling="load generator ceiling: 30,000 msg/s")


def test_results_file_is_named_by_date_host_and_arch(tmp_path: Path) -> None:
    assert results_path(tmp_path, STARTED, "pi 4/b", "armv7l") == tmp_path / "2026-12-01-pi-4-b-armv7l.md"


def test_report_holds_machine_mode_ceiling_tables_and_failures() -> None:
    reports = [ScenarioReport("mqtt", 12.0, "## MQTT\n\n| a |\n|---|\n| 1 |"),
               ScenarioReport("cgroup", 1.0, "", error="OSError: no cgroup")]
    text = render(_info(), reports)
    assert "| arch | armv7l |" in text
    assert "Mode: quick (--quick)" in text
    assert "load generator ceiling: 30,000 msg/s" in text
    assert "| mqtt | 12 | ran |" in text
    assert "| cgroup | 1 | failed: OSError: no cgroup |" in text
    assert "# mqtt\n\n## MQTT\n\n| a |" in text
    assert "Emulated" not in text


def test_emulated_runs_are_marked_as_such_and_name_the_arm32_script() -> None:
    text = render(_info("emulated:qemu-arm-static"), [])
    assert "**Emulated**" in text
    assert "Reproduce: `sh bench/arm32/run.sh`" in text


def test_emulated_arm64_runs_name_the_script_with_its_arch() -> None:
    machine = {"host": "vm", "arch": "aarch64", "platform": "emulated:qemu-aarch64-static"}
    info = RunInfo(STARTED, quick=True, machine=machine)
    assert "Reproduce: `sh bench/arm32/run.sh --arch arm64`" in render(info, [])


def test_write_draws_a_png_per_scenario_with_series(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    timeline = ScenarioTimeline("mqtt", started=0.0)
    timeline.add_arrivals("edgehub QoS 1", [0.1 * i for i in range(50)])
    timeline.add_rss("edgehub", 1.0, 60.0)
    reports = [ScenarioReport("mqtt", 5.0, "| t |", timeline=timeline),
               ScenarioReport("router", 1.0, "| r |", timeline=ScenarioTimeline("router"))]
    path = write(tmp_path, _info(), reports)
    png = tmp_path / "2026-12-01-pi-4-armv7l-mqtt.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert "![mqtt: throughput and RSS over time](2026-12-01-pi-4-armv7l-mqtt.png)" in path.read_text()
    assert not (tmp_path / "2026-12-01-pi-4-armv7l-router.png").exists()  # nothing to draw


def test_machine_info_names_python_and_the_hub_version() -> None:
    info = machine_info()
    assert info["python"].split()[1].count(".") == 2
    assert info["edgehub"] != "absent"
    assert info["arch"]

"""The suite: scenario selection, the progress line and its ETA, a scenario's tables teed into the results
file, and a failing scenario reported while the rest still run."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench import suite
from bench.suite import Progress, Scenario, main, run_suite, select

FAKE = Scenario("fake", "tests.bench.fake_scenario", 1, 1, "a fake")


def test_quick_without_names_runs_the_headline_profile_starting_with_the_ceiling() -> None:
    names = [s.name for s in select([], quick=True)]
    assert names[0] == "loadgen-ceiling"
    assert {"telemetry", "mqtt", "backlog", "ttl", "memory", "cgroup"} <= set(names)


def test_full_profile_runs_every_scenario_and_names_pick_single_ones() -> None:
    assert {s.name for s in select([], quick=False)} >= {s.name for s in suite.SCENARIOS}
    assert [s.name for s in select(["router", "store"], quick=False)] == ["router", "store"]


def test_unknown_scenario_is_refused_with_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nosuch"])
    assert exit_info.value.code == 2
    assert "unknown scenario(s): nosuch" in capsys.readouterr().err


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(s.name in listed for s in suite.SCENARIOS)


def test_eta_scales_the_remaining_estimates_by_how_the_finished_ones_ran() -> None:
    progress = Progress([FAKE, FAKE, FAKE], quick=True, stream=io.StringIO())
    progress.estimates = [10.0, 10.0, 10.0]
    progress.index, progress.scenario_started = 1, 100.0
    progress.actual = [20.0]  # the first took twice its estimate
    assert progress.eta(at=105.0) == pytest.approx(15.0 + 20.0)
    assert progress.line(at=105.0).startswith("[2/3 fake] elapsed ")
    assert progress.line(at=105.0).endswith("ETA 0m35s")


def test_suite_tees_tables_into_the_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_suite([FAKE], quick=True, results=tmp_path, plots=False) == 0
    [written] = tmp_path.glob("*.md")
    text = written.read_text()
    assert "## Fake scenario (quick=True)" in text
    assert "| fake | 0 | ran |" in text
    assert "## Fake scenario" in capsys.readouterr().out  # still printed as it runs


def test_a_failing_scenario_is_reported_and_the_next_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = Scenario("failing", "tests.bench.fake_scenario", 1, 1, "fails")
    monkeypatch.setenv("EDGEHUB_FAKE_SCENARIO_FAILS", "1")
    report = suite.run_scenario(failing, quick=True)
    assert report.error == "RuntimeError: the fake scenario failed"
    monkeypatch.delenv("EDGEHUB_FAKE_SCENARIO_FAILS")
    assert suite.run_scenario(FAKE, quick=True).error is None

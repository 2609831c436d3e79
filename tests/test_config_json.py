"""The JSON plumbing of the config file: located problems instead of exceptions."""

from __future__ import annotations

import json

import pytest

from edgehub.config_json import (
    JsonObject,
    NonFiniteNumberError,
    Report,
    child_path,
    json_integer,
    json_object,
    json_text,
    refuse_constant,
)


def test_duplicate_keys_are_reported_at_their_path() -> None:
    document = json.loads('{"a": 1, "a": 2}', object_pairs_hook=JsonObject.from_pairs)
    report = Report()
    assert json_object(document, "root", report) == {"a": 2}
    assert report.problems == [("root.a", "appears more than once (JSON keeps only the last)")]


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(NonFiniteNumberError):
        json.loads("[NaN]", parse_constant=refuse_constant)


def test_odd_keys_are_quoted_in_paths() -> None:
    assert child_path("routes", "r1") == "routes.r1"
    assert child_path("routes", "my route.x") == 'routes["my route.x"]'
    assert child_path("", "top") == "top"


@pytest.mark.parametrize(("value", "expected"), [(7200, 7200), (7200.0, 7200), (7200.5, None), (True, None),
                                                 ("7200", None), (-1, None)])
def test_integers_are_whole_numbers_in_range(value: object, expected: int | None) -> None:
    report = Report()
    assert json_integer(value, "ttl", report, low=0, high=10**6, expected="0..1000000") == expected
    assert bool(report.problems) == (expected is None)


def test_text_must_be_a_non_empty_string() -> None:
    report = Report()
    assert json_text("x", "p", report) == "x"
    assert json_text("  ", "q", report) is None
    assert report.problems[0][0] == "q"

"""Tests for edgehub.routing.values: property lookup, the JSON body, cross-type comparison, numbers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from edgehub.message import Message, SystemProperty
from edgehub.routing.values import (
    UNDEFINED,
    MessageView,
    compare_any,
    parse_body_path,
    parse_number,
    read_body_path,
)


def json_message(
    body: bytes, content_type: str = "application/json", encoding: str | None = "utf-8"
) -> Message:
    system = {SystemProperty.CONTENT_TYPE: content_type}
    if encoding is not None:
        system[SystemProperty.CONTENT_ENCODING] = encoding
    return Message(body, system_properties=system)


def test_property_lookup_falls_back_to_case_insensitive() -> None:
    view = MessageView(Message(b"", {"Temperature": "20"}, {"ContentType": "text/plain"}))
    assert view.application_property("temperature") == "20"
    assert view.application_property("missing") is UNDEFINED
    assert view.system_property("contenttype") == "text/plain"
    assert view.system_property("missing") is UNDEFINED


def test_undefined_is_falsy_and_prints_its_name() -> None:
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"


@pytest.mark.parametrize(
    ("content_type", "encoding", "codec"),
    [
        ("application/json", "utf-8", "utf-8"),
        ("Application/JSON", "UTF-8", "utf-8"),
        ("application/json; charset=utf-8", "utf-8", "utf-8"),
        ("application/json", None, "utf-8"),
        ("application/json", "utf-16", "utf-16-le"),
        ("application/json", "utf-32", "utf-32-le"),
    ],
)
def test_json_bodies_are_read_with_their_encoding(
    content_type: str, encoding: str | None, codec: str
) -> None:
    view = MessageView(json_message('{"a": 1, "b": "é"}'.encode(codec), content_type, encoding))
    assert view.body() == {"a": 1.0, "b": "é"}


def test_a_utf8_byte_order_mark_is_skipped() -> None:
    assert MessageView(json_message(b'\xef\xbb\xbf{"a": true}')).body() == {"a": True}


@pytest.mark.parametrize(
    "message",
    [
        json_message(b'{"a": 1}', content_type="text/plain"),
        Message(b'{"a": 1}'),
        json_message(b'{"a": 1}', encoding="latin-1"),
        json_message(b"not json"),
        json_message(b"[1, 2]"),
        json_message(b"\xff\xfe"),
        json_message(b"[" * 100_000 + b"]" * 100_000),
    ],
    ids=["text", "no-content-type", "latin-1", "bad-json", "array", "bad-utf8", "deep"],
)
def test_bodies_that_are_not_queryable_json_objects_read_as_none(message: Message) -> None:
    assert MessageView(message).body() is None


def test_body_is_parsed_once_per_view(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_loads = json.loads

    def counting_loads(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_loads(*args, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    view = MessageView(json_message(b'{"a": 1}'))
    assert view.body() == view.body() == {"a": 1.0}
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("a", (("a", None),)),
        ("a.b[0].c", (("a", None), ("b", 0), ("c", None))),
        ("Weather.Temperature", (("Weather", None), ("Temperature", None))),
    ],
)
def test_body_paths_are_names_dots_and_indexes(path: str, steps: tuple[tuple[str, int | None], ...]) -> None:
    assert parse_body_path(path) == steps


@pytest.mark.parametrize("path", ["", "a..b", "a.", "[0]", "a[x]", "a[0][1]", "a[-1]", "a]"])
def test_unsupported_body_paths_are_refused(path: str) -> None:
    assert parse_body_path(path) is None


def test_reading_body_paths() -> None:
    body: dict[str, object] = {"a": {"b": [{"c": "x"}, 2.0]}, "n": None, "nan": math.nan}
    for path, value in [
        ("a.b[0].c", "x"),
        ("a.b[1]", 2.0),
        ("n", None),
        ("a.b", [{"c": "x"}, 2.0]),
        ("a.b[2]", UNDEFINED),
        ("a.x", UNDEFINED),
        ("a[0]", UNDEFINED),
        ("a.b.c", UNDEFINED),
        ("nan", UNDEFINED),
    ]:
        steps = parse_body_path(path)
        assert steps is not None
        assert read_body_path(body, steps) == value, path
    assert read_body_path(None, (("a", None),)) is UNDEFINED


@pytest.mark.parametrize(
    ("operator", "left", "right", "result"),
    [
        ("=", "40", "40", True),
        ("<", "a", "b", True),
        (">=", 2.0, 3.0, False),
        ("=", True, True, True),
        ("<", False, True, True),
        ("=", None, None, True),
        ("<=", None, None, True),
        ("<", None, None, False),
        ("=", "40", 40.0, False),
        ("!=", "40", 40.0, True),
        ("<>", True, 1.0, True),
        (">", "40", 30.0, UNDEFINED),
        ("=", 1.0, None, False),
        ("=", UNDEFINED, 1.0, UNDEFINED),
        ("=", {"a": 1.0}, {"a": 1.0}, UNDEFINED),
        ("!=", [1.0], 1.0, UNDEFINED),
    ],
)
def test_comparing_values_of_any_type(operator: str, left: object, right: object, result: object) -> None:
    assert compare_any(operator, left, right) is result


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("3", 3.0),
        ("-3.5", -3.5),
        ("  42  ", 42.0),
        ("+7", 7.0),
        ("7-", -7.0),
        ("(7)", -7.0),
        ("1,000.5", 1000.5),
        ("1.", 1.0),
        (".5", 0.5),
        ("10e10", 1e11),
        ("10e1000", math.inf),
        ("-Infinity", -math.inf),
        ("10000000000000000000000000", 1e25),
    ],
)
def test_numbers_parse_like_dotnet_double_tryparse(text: str, number: float) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize(
    "text", ["", "apple", ".", "1_000", "0x10", "NaN", "nan", "inf", "--1", "+1-", "(-1)", "1 2"]
)
def test_non_numbers_parse_as_undefined(text: str) -> None:
    assert parse_number(text) is UNDEFINED

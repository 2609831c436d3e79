"""Tests for edgehub.routing.functions: signatures and run-time results of each built-in."""

from __future__ import annotations

import math

import pytest

from edgehub.routing import functions
from edgehub.routing.functions import BUILTINS, Overload, resolve, signatures
from edgehub.routing.values import UNDEFINED, Value, ValueType

S, N, B, NULL, U, ANY = (
    ValueType.STRING,
    ValueType.NUMBER,
    ValueType.BOOL,
    ValueType.NULL,
    ValueType.UNDEFINED,
    ValueType.ANY,
)


def call(name: str, *arguments: Value) -> Value:
    """Run ``name`` with the overload a $body value (type ANY) in each position selects."""
    overload = resolve(name, tuple(ANY for _ in arguments))
    assert isinstance(overload, Overload), name
    return overload.run(*arguments)


def test_the_function_set_is_edgehubs_plus_iot_hub_type_checks() -> None:
    assert set(BUILTINS) == {
        "abs", "exp", "power", "square", "ceiling", "floor", "sign", "sqrt",
        "as_number", "is_bool", "is_defined", "is_null", "is_number", "is_string",
        "is_object", "is_array", "is_primitive",
        "concat", "length", "lower", "upper", "substring", "index_of",
        "starts_with", "ends_with", "contains",
    }  # fmt: skip


def test_names_resolve_case_insensitively_and_unknown_names_are_undefined() -> None:
    assert isinstance(resolve("Is_Defined", (S,)), Overload)
    assert resolve("no_such_function", (S,)) is UNDEFINED


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("abs", (S,)),
        ("abs", (N, N)),
        ("power", (N,)),
        ("as_number", (B,)),
        ("as_number", (NULL,)),
        ("concat", (S,)),
        ("concat", (S, NULL)),
        ("concat", (S, U)),
        ("length", (N,)),
        ("substring", (S, S)),
        ("substring", (S,)),
        ("starts_with", (S, N)),
        ("contains", (NULL, S)),
        ("index_of", (S, S, S)),
    ],
)
def test_wrong_argument_types_or_counts_resolve_to_none(name: str, arguments: tuple[ValueType, ...]) -> None:
    assert resolve(name, arguments) is None


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("abs", (ANY,)),
        ("concat", (S, ANY, S, S)),
        ("as_number", (N,)),
        ("as_number", (ANY,)),
        ("is_defined", (U,)),
        ("is_bool", (S,)),
        ("starts_with", (ANY, ANY)),
    ],
)
def test_body_values_and_any_typed_checks_are_accepted(name: str, arguments: tuple[ValueType, ...]) -> None:
    assert isinstance(resolve(name, arguments), Overload)


def test_signatures_describe_each_overload() -> None:
    assert signatures("substring") == ["SUBSTRING(string, number)", "SUBSTRING(string, number, number)"]
    assert signatures("concat") == ["CONCAT(string, string, string, ...)"]
    assert signatures("is_null") == ["IS_NULL(any)"]


@pytest.mark.parametrize(
    ("name", "arguments", "result"),
    [
        ("abs", (-12.0,), 12.0),
        ("exp", (0.0,), 1.0),
        ("exp", (4000.0,), math.inf),
        ("power", (2.0, 3.0), 8.0),
        ("power", (10.0, 4000.0), math.inf),
        ("power", (-10.0, 4001.0), -math.inf),
        ("power", (0.0, -1.0), math.inf),
        ("power", (-8.0, 1 / 3), UNDEFINED),
        ("square", (3.0,), 9.0),
        ("ceiling", (2.1,), 3.0),
        ("ceiling", (-2.1,), -2.0),
        ("ceiling", (math.inf,), math.inf),
        ("floor", (-2.1,), -3.0),
        ("sign", (-2.1,), -1.0),
        ("sign", (0.0,), 0.0),
        ("sign", (math.inf,), 1.0),
        ("sqrt", (4.0,), 2.0),
        ("sqrt", (-4.0,), UNDEFINED),
        ("abs", ("12",), UNDEFINED),
        ("abs", (UNDEFINED,), UNDEFINED),
        ("power", (2.0, None), UNDEFINED),
    ],
)
def test_mathematical_functions(name: str, arguments: tuple[Value, ...], result: Value) -> None:
    assert call(name, *arguments) == result
    assert type(call(name, *arguments)) is type(result)


def test_ceiling_of_a_small_negative_keeps_the_sign_of_zero() -> None:
    zero = call("ceiling", -0.5)
    assert isinstance(zero, float)
    assert math.copysign(1.0, zero) == -1.0


@pytest.mark.parametrize(
    ("name", "value", "result"),
    [
        ("as_number", "3", 3.0),
        ("as_number", "apple", UNDEFINED),
        ("as_number", 4.0, 4.0),
        ("as_number", True, UNDEFINED),
        ("is_bool", True, True),
        ("is_bool", "true", False),
        ("is_bool", UNDEFINED, UNDEFINED),
        ("is_defined", None, True),
        ("is_defined", UNDEFINED, False),
        ("is_defined", {"a": 1.0}, True),
        ("is_null", None, True),
        ("is_null", "", False),
        ("is_null", UNDEFINED, False),
        ("is_number", 12.34, True),
        ("is_number", math.inf, False),
        ("is_number", "1", False),
        ("is_string", "x", True),
        ("is_string", 1.0, False),
        ("is_object", {"a": 1.0}, True),
        ("is_object", [1.0], False),
        ("is_array", [1.0], True),
        ("is_primitive", None, True),
        ("is_primitive", "x", True),
        ("is_primitive", [1.0], False),
        ("is_primitive", UNDEFINED, False),
    ],
)
def test_type_checking_functions(name: str, value: Value, result: Value) -> None:
    assert call(name, value) == result


def test_is_bool_of_a_non_bool_static_type_is_false_without_looking() -> None:
    overload = resolve("is_bool", (S,))
    assert isinstance(overload, Overload)
    assert overload.run(UNDEFINED) is False


@pytest.mark.parametrize(
    ("name", "arguments", "result"),
    [
        ("concat", ("a", "b", "c"), "abc"),
        ("concat", ("a", UNDEFINED), UNDEFINED),
        ("concat", ("a", None), UNDEFINED),
        ("length", ("HELLO",), 5.0),
        ("length", ("",), 0.0),
        ("lower", ("HeLLo",), "hello"),
        ("upper", ("hello",), "HELLO"),
        ("substring", ("abc", 1.0), "bc"),
        ("substring", ("abc", 3.0), ""),
        ("substring", ("abc", 4.0), UNDEFINED),
        ("substring", ("abc", -1.0), UNDEFINED),
        ("substring", ("abc", 1.5), "bc"),
        ("substring", ("hello", 1.0, 4.0), "ello"),
        ("substring", ("hello", 4.0, 0.0), ""),
        ("substring", ("abc", 3.0, 0.0), UNDEFINED),
        ("substring", ("abc", 1.0, 3.0), UNDEFINED),
        ("substring", ("abc", 1.0, -1.0), UNDEFINED),
        ("substring", ("abc", 1.0, None), UNDEFINED),
        ("index_of", ("abcdef", "cd"), 2.0),
        ("index_of", ("abc", "xz"), -1.0),
        ("index_of", ("abc", ""), 0.0),
        ("starts_with", ("abc", "ab"), True),
        ("starts_with", ("abc", "AB"), False),
        ("ends_with", ("abc", "bc"), True),
        ("contains", ("abc", "b"), True),
        ("contains", ("abc", UNDEFINED), UNDEFINED),
        ("starts_with", (1.0, "1"), UNDEFINED),
    ],
)
def test_string_functions_are_ordinal(name: str, arguments: tuple[Value, ...], result: Value) -> None:
    assert call(name, *arguments) == result
    assert type(call(name, *arguments)) is type(result)


def test_every_builtin_has_a_run_function() -> None:
    for overloads in functions.BUILTINS.values():
        assert overloads
        assert all(callable(overload.run) for overload in overloads)

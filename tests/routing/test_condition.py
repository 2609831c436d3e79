"""Tests for edgehub.routing.condition: edgeHub's typing and three-valued semantics, compiled."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub.errors import RouteSyntaxError
from edgehub.message import Message, SystemProperty
from edgehub.routing.condition import RouteCondition, parse_condition
from edgehub.routing.parser import parse_expression
from edgehub.routing.values import UNDEFINED, Value

SENSOR = Message(
    b'{"temp": 21.5, "tags": ["a", "b"], "site": {"name": "Berlin"}, "ok": true, "none": null, "s": "40"}',
    {"key1": "value1", "key2": "3", "key3": "VALUE3", "$sys4": "value4", "$body.temp": "shadow"},
    {
        SystemProperty.CONNECTION_DEVICE_ID: "dev1",
        SystemProperty.CONNECTION_MODULE_ID: "sensor",
        SystemProperty.CONTENT_TYPE: "application/json",
        SystemProperty.CONTENT_ENCODING: "utf-8",
        "sys4": "sysvalue4",
    },
)
DEVICE = Message(b"raw", {}, {SystemProperty.CONNECTION_DEVICE_ID: "dev2"})


def value(text: str, message: Message = SENSOR) -> Value:
    return parse_condition(text).value(message)


# --- three-valued logic (edgeHub's Bool: true, false, undefined) ---


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("true AND true", True),
        ("true AND false", False),
        ("undefined AND false", False),
        ("false AND undefined", False),
        ("true AND undefined", UNDEFINED),
        ("undefined OR true", True),
        ("false OR undefined", UNDEFINED),
        ("undefined OR undefined", UNDEFINED),
        ("NOT (none = 'x')", UNDEFINED),
        ("none = 'x' OR true", True),
        ("none = 'x' AND false", False),
        ("NOT true", False),
        ("not false", True),
        ("undefined < undefined", UNDEFINED),
    ],
)
def test_three_valued_logic(text: str, result: Value) -> None:
    assert value(text) is result


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("null", None),
        ("null AND true", None),
        ("(null AND false) = null", True),
        ("null OR true", True),
        ("null OR false", False),
        ("(null OR null) = null", True),
        ("NOT null", True),
        ("NOT (key1 = 'value1' AND null)", True),
        ("null <= null", True),
        ("null < null", False),
    ],
)
def test_null_follows_edgehub(text: str, result: Value) -> None:
    assert value(text) is result


def test_only_true_matches() -> None:
    for text in ("null", "undefined", "3", "'text'", "key1", "false", "none = 'x'"):
        assert parse_condition(text).matches(SENSOR) is False, text
    assert parse_condition("key1 = 'value1'").matches(SENSOR) is True


# --- properties ---


def test_bare_names_are_application_properties_matched_case_insensitively() -> None:
    assert value("key1 = 'value1'") is True
    assert value('KEY1 = "value1"') is True
    assert value("key1 = 'VALUE1'") is False
    assert value("missing = 'x'") is UNDEFINED


def test_dollar_names_are_system_properties() -> None:
    assert value("$connectionDeviceId = 'dev1'") is True
    assert value("$ConnectionModuleId = 'sensor'") is True
    assert value("NOT IS_DEFINED($connectionModuleId)", DEVICE) is True
    assert value("IS_DEFINED($outputName)") is False


def test_an_application_property_named_with_a_dollar_wins_unless_braced() -> None:
    assert value("$sys4 = 'value4'") is True
    assert value("{$sys4} = 'sysvalue4'") is True
    assert value("{ $sys4 } = 'sysvalue4'") is True


def test_an_empty_application_property_still_wins_over_the_system_property() -> None:
    message = Message(b"", {"$to": ""}, {SystemProperty.TO: "elsewhere"})
    assert value("$to = ''", message) is True
    assert value("{$to} = 'elsewhere'", message) is True


def test_names_with_brackets_outside_body_paths_are_undefined() -> None:
    assert value("$a[0]") is UNDEFINED
    assert value("{$a[0]}") is UNDEFINED


# --- $body ---


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("{$body.temp} = 21.5", True),
        ("$body.temp > 20", UNDEFINED),  # the application property "$body.temp" wins: a string
        ("$body.tags[1] = 'b'", True),
        ("$body.site.name = 'Berlin'", True),
        ("$BODY.ok", True),
        ("$body.none = null", True),
        ("IS_NULL($body.none)", True),
        ("IS_DEFINED($body.missing)", False),
        ("IS_DEFINED($body.site)", True),
        ("IS_OBJECT($body.site)", True),
        ("IS_ARRAY($body.tags)", True),
        ("$body.site = 'x'", UNDEFINED),
        ("$body.s = '40'", True),
        ("$body.s = 40", False),
        ("$body.s > 30", UNDEFINED),
        ("$body.tags[5] = 'x'", UNDEFINED),
        ("AS_NUMBER($body.s) + {$body.temp} = 61.5", True),
        ("$body.ok AND true", True),
        ("NOT $body.ok", False),
        ("- {$body.temp} < 0", True),
        ("LENGTH($body.s) = 2", True),
    ],
)
def test_body_paths_read_json_bodies(text: str, result: Value) -> None:
    assert value(text) is result


def test_body_paths_are_undefined_when_the_body_is_not_json() -> None:
    text_body = Message(b'{"temp": 1}', system_properties={SystemProperty.CONTENT_TYPE: "text/plain"})
    assert value("IS_DEFINED({$body.temp})", text_body) is False
    assert value("{$body.temp} = 1", DEVICE) is UNDEFINED


def test_conditions_know_whether_they_read_the_body() -> None:
    assert parse_condition("$body.a = 1 OR key1 = 'x'").uses_body
    assert not parse_condition("key1 = 'x'").uses_body


def test_invalid_body_paths_are_refused_with_their_position() -> None:
    with pytest.raises(RouteSyntaxError) as raised:
        parse_condition("key1 = 'x' AND $body.a..b = 1")
    assert raised.value.position == 15
    assert "invalid $body path 'a..b'" in raised.value.reason
    with pytest.raises(RouteSyntaxError, match="invalid"):
        parse_condition("$body. = 1")


# --- operators and types ---


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("3 + 4 = 7", True),
        ("3 - 4 = -1", True),
        ("3 * 4 = 12", True),
        ("3 / 4 = 0.75", True),
        ("-7 % 3 = -1", True),  # C# remainder keeps the dividend's sign
        ("7 % -3 = 1", True),
        ("1 / 0 = 1e999", True),
        ("-1 / 0 < 0", True),
        ("IS_DEFINED(0 / 0)", False),
        ("IS_DEFINED(3 % 0)", False),
        ("(3 % 0 ?? 12.34) = 12.34", True),
        ("(none ?? 'hello') = 'hello'", True),
        ("(key1 ?? 'hello') = 'value1'", True),
        ("'a' || key1 || 'd' = 'avalue1d'", True),
        ("IS_DEFINED('a' || none)", False),
        ("'a' < 'b'", True),
        ("'B' < 'a'", True),  # ordinal
        ("true > false", True),
        ("-(3 + 4) = -7", True),
        ("AS_NUMBER(key2) * 3 = 9", True),
        ("AS_NUMBER(key1) * 3 = 9", UNDEFINED),
        ("0x10 = 16", True),
        ("10e1000 = 1/0", True),
        ("IS_DEFINED(e5)", False),
    ],
)
def test_operators(text: str, result: Value) -> None:
    assert value(text) is result


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        (
            "temperature > 30",
            12,
            "have string and number, expected string and string (properties are strings",
        ),
        ("30 < temperature", 3, "have number and string, expected number and number"),
        ("key1 = 3", 5, "AS_NUMBER"),
        ("3 + key1", 2, "have number and string, expected number and number"),
        ("3 + null", 2, "have number and null"),
        ("3 = undefined", 2, "have number and undefined"),
        ("'a' + 'b'", 4, "expected number and number"),
        ("1 || 'b'", 2, "expected string and string"),
        ("key1 ?? 3", 5, "have string and number"),
        ("- key1 = 1", 0, "invalid operand of -: have string, expected number"),
        ("NOT key1", 0, "NOT binds tighter than comparisons"),
        ("NOT $connectionModuleId = 'x'", 0, "write NOT (a = b)"),
        ("NOT undefined", 0, "have undefined, expected bool"),
        ("key1 AND true", 5, "invalid operand of AND: have string"),
        ("true OR 1", 5, "invalid operand of OR: have number"),
        ("$body.a = undefined", 8, "have any and undefined"),
        ("true = null", 5, "have bool and null"),
    ],
)
def test_type_errors_are_refused_when_compiled_as_edgehub_does(text: str, position: int, reason: str) -> None:
    with pytest.raises(RouteSyntaxError) as raised:
        parse_condition(text)
    assert raised.value.position == position
    assert reason in raised.value.reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no_such(1)", "unknown function 'no_such'"),
        ("twin_change_includes(a)", "twin change notifications are not routed here"),
        ("ABS(key1) = 1", "invalid arguments ABS(string); expected ABS(number)"),
        ("concat('a') = 'a'", "expected CONCAT(string, string, string, ...)"),
        ("substring('a') = 'a'", "SUBSTRING(string, number) or SUBSTRING(string, number, number)"),
        ("as_number(true) = 1", "AS_NUMBER(bool)"),
        ("contains(null, 'a')", "CONTAINS(null, string)"),
    ],
)
def test_function_errors_name_the_function(text: str, reason: str) -> None:
    with pytest.raises(RouteSyntaxError) as raised:
        parse_condition(text)
    assert raised.value.position == 0
    assert reason in raised.value.reason


def test_error_positions_count_from_the_start_of_the_given_text() -> None:
    with pytest.raises(RouteSyntaxError) as raised:
        parse_condition("   key1 = 3")
    assert raised.value.position == 8
    assert raised.value.text == "   key1 = 3"


# --- functions through conditions ---


@pytest.mark.parametrize(
    "text",
    [
        "ABS(-12) = 12",
        "abs(exp(1) - 2.718281) < 1e-6",
        "POWER(3, 2) = 9",
        "SQUARE(AS_NUMBER(key2)) = 9",
        "CEILING(-2.1) = -2",
        "FLOOR(-2.1) = -3",
        "SIGN(-3 / 0) = -1",
        "SQRT(4) = 2",
        "AS_NUMBER('10e10') = 10e10",
        "IS_BOOL(true)",
        "NOT IS_BOOL(key1)",
        "IS_NUMBER(12.34)",
        "NOT IS_NUMBER(3 / 0)",
        "IS_STRING(key1)",
        "IS_NULL(null)",
        "NOT IS_NULL(key1)",
        "IS_PRIMITIVE(key1)",
        "CONCAT('a', key1, 'd') = 'avalue1d'",
        "LENGTH(key3) = 6",
        "LOWER(key3) = 'value3'",
        "UPPER(key1) = 'VALUE1'",
        "SUBSTRING(key1, 1) = 'alue1'",
        "SUBSTRING('hello', 1, 4) = 'ello'",
        "INDEX_OF('lue1value1', key1) = 4",
        "STARTS_WITH(key1, 'val')",
        "ENDS_WITH(key1, 'e1')",
        "CONTAINS(key1, 'lue')",
        "NOT CONTAINS('abc', key1)",
    ],
)
def test_functions_in_conditions(text: str) -> None:
    assert value(text) is True


def test_functions_of_missing_properties_are_undefined() -> None:
    for text in ("STARTS_WITH(none, 'a')", "LENGTH(none) = 0", "SUBSTRING('abc', 4) = 'c'", "SQRT(-4) = -2"):
        assert value(text) is UNDEFINED, text


# --- compilation ---


def test_message_independent_conditions_are_folded_to_constants() -> None:
    assert parse_condition("1 + 2 = 3 AND LOWER('A') = 'a'").is_constant
    assert parse_condition("true OR key1 = 'x'").is_constant
    assert parse_condition("false AND $body.a = 1").is_constant
    assert not parse_condition("key1 = 'x' AND true").is_constant


def test_conditions_compare_by_their_tree() -> None:
    assert parse_condition("key1 = 'x'") == parse_condition('(key1) = "x"')
    assert hash(parse_condition("key1 = 'x'")) == hash(parse_condition("key1='x'"))
    assert parse_condition("key1 = 'x'") != parse_condition("key1 = 'y'")
    assert repr(parse_condition(" key1 = 'x' ")) == "RouteCondition(\"key1 = 'x'\")"


def test_a_condition_built_from_a_tree_prints_its_text() -> None:
    assert RouteCondition(parse_expression("a = 'b'")).text == "(a = 'b')"


# --- agreement with a reference evaluator (Hypothesis) ---
#
# Random well-typed conditions are printed as route text, compiled, and evaluated on random
# messages; a small tree-walking evaluator written here from the semantics above must agree.

U = UNDEFINED
STATIC_NULL = object()
"""The reference's `null` literal: unlike a JSON null, NOT null is true and x AND null is null."""


@dataclass(frozen=True)
class Context:
    """A message as the reference evaluator reads it."""

    properties: dict[str, str]
    system: dict[str, str]
    body: dict[str, object] | None
    message: Message = field(compare=False)


class Node(Protocol):
    def text(self) -> str: ...

    def evaluate(self, context: Context) -> object: ...


def literal_text(item: object) -> str:
    if item is STATIC_NULL:
        return "null"
    if item is U:
        return "undefined"
    if isinstance(item, bool):
        return str(item).lower()
    if isinstance(item, str):
        return "'" + item.replace("\\", "\\\\").replace("'", "''") + "'"
    return repr(item)


@dataclass(frozen=True)
class Constant:
    item: object

    def text(self) -> str:
        return literal_text(self.item)

    def evaluate(self, context: Context) -> object:
        return self.item


@dataclass(frozen=True)
class Property:
    name: str

    def text(self) -> str:
        return self.name

    def evaluate(self, context: Context) -> object:
        return context.properties.get(self.name.lower(), U)


@dataclass(frozen=True)
class To:
    written: str

    def text(self) -> str:
        return self.written

    def evaluate(self, context: Context) -> object:
        return context.system.get("to", U)


@dataclass(frozen=True)
class Body:
    key: str

    def text(self) -> str:
        return f"{{$body.{self.key}}}"

    def evaluate(self, context: Context) -> object:
        if context.body is None:
            return U
        return context.body.get(self.key, U)


@dataclass(frozen=True)
class Function:
    name: str
    arguments: tuple[Node, ...]
    reference: Callable[..., object]

    def text(self) -> str:
        return f"{self.name}({', '.join(argument.text() for argument in self.arguments)})"

    def evaluate(self, context: Context) -> object:
        return self.reference(*(argument.evaluate(context) for argument in self.arguments))


@dataclass(frozen=True)
class Operation:
    symbol: str
    operands: tuple[Node, ...]
    reference: Callable[..., object]

    def text(self) -> str:
        if len(self.operands) == 1:
            return f"({self.symbol} {self.operands[0].text()})"
        return "(" + f" {self.symbol} ".join(operand.text() for operand in self.operands) + ")"

    def evaluate(self, context: Context) -> object:
        return self.reference(*(operand.evaluate(context) for operand in self.operands))


def number(item: object) -> float | None:
    return item if type(item) is float else None


def ref_result(result: float) -> object:
    return U if math.isnan(result) else result


def ref_arithmetic(symbol: str) -> Callable[[object, object], object]:
    def run(a: object, b: object) -> object:
        x, y = number(a), number(b)
        if x is None or y is None:
            return U
        if symbol == "+":
            return ref_result(x + y)
        if symbol == "-":
            return ref_result(x - y)
        if symbol == "*":
            return ref_result(x * y)
        if symbol == "/":
            if y == 0:
                return U if x == 0 else math.copysign(math.inf, x) * math.copysign(1, y)
            return ref_result(x / y)
        if y == 0 or math.isinf(x):
            return U
        return ref_result(math.fmod(x, y))  # C#: the remainder has the dividend's sign

    return run


def kind(item: object) -> str:
    return {bool: "bool", float: "number", str: "string", type(None): "null"}.get(type(item), "other")


ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
    "<>": lambda x, y: x != y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def ref_compare(symbol: str) -> Callable[[object, object], object]:
    def run(a: object, b: object) -> object:
        if a is U or b is U or "other" in (kind(a), kind(b)):
            return U
        if kind(a) != kind(b):
            return {"=": False, "!=": True, "<>": True}.get(symbol, U)
        if kind(a) == "null":
            return symbol in ("=", "<=", ">=")
        return ORDERINGS[symbol](a, b)

    return run


def ref_and(*items: object) -> object:
    if any(item is STATIC_NULL for item in items):
        return STATIC_NULL
    if any(item is False for item in items):
        return False
    return True if all(item is True for item in items) else U


def ref_or(*items: object) -> object:
    known = [item for item in items if item is not STATIC_NULL]
    if not known:
        return STATIC_NULL
    if any(item is True for item in known):
        return True
    return False if all(item is False for item in known) else U


def ref_not(item: object) -> object:
    if item is STATIC_NULL:
        return True
    return {True: False, False: True}.get(item, U) if isinstance(item, bool) else U


def ref_as_number(item: object) -> object:
    if type(item) is str:
        try:
            return float(item)
        except ValueError:
            return U
    return item if type(item) is float else U


def ref_coalesce(a: object, b: object) -> object:
    return a if a is not U else b


def strings(operation: Callable[..., object]) -> Callable[..., object]:
    def run(*items: object) -> object:
        return operation(*items) if all(type(item) is str for item in items) else U

    return run


def ref_substring(text: object, start: object) -> object:
    at = number(start)
    if type(text) is not str or at is None or not 0 <= at <= len(text):
        return U
    return text[int(at) :]


def ref_sign(item: object) -> object:
    x = number(item)
    return U if x is None else float((x > 0) - (x < 0))


def ref_abs(item: object) -> object:
    x = number(item)
    return U if x is None else abs(x)


def ref_negate(item: object) -> object:
    x = number(item)
    return U if x is None else -x


PROPERTY_NAMES = st.sampled_from(["p1", "P1", "p2", "Num"])
BODY: st.SearchStrategy[Node] = st.builds(Body, st.sampled_from(["n", "s", "flag"]))
NUMBER_LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.builds(Constant, st.sampled_from([0.0, -7.0, -2.5, 3.0, 1000.0, 0.5])),
    PROPERTY_NAMES.map(lambda name: Function("AS_NUMBER", (Property(name),), ref_as_number)),
    BODY,
)
STRING_LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.builds(Constant, st.sampled_from(["", "a", "Hello", "it's", "3"])),
    st.builds(Property, PROPERTY_NAMES),
    st.builds(To, st.sampled_from(["$to", "{$TO}"])),
    BODY,
)
BOOL_LEAVES: st.SearchStrategy[Node] = st.one_of(st.builds(Constant, st.booleans()), BODY)


def pairs(
    left: st.SearchStrategy[Node], right: st.SearchStrategy[Node]
) -> st.SearchStrategy[tuple[Node, Node]]:
    return st.tuples(left, right)


def number_compounds(
    numbers: st.SearchStrategy[Node], texts: st.SearchStrategy[Node]
) -> st.SearchStrategy[Node]:
    arithmetic = st.tuples(st.sampled_from(["+", "-", "*", "/", "%"]), numbers, numbers).map(
        lambda t: Operation(t[0], (t[1], t[2]), ref_arithmetic(t[0]))
    )
    return st.one_of(
        arithmetic,
        arithmetic,
        arithmetic,
        numbers.map(lambda n: Operation("-", (n,), ref_negate)),
        numbers.map(lambda n: Function("ABS", (n,), ref_abs)),
        numbers.map(lambda n: Function("SIGN", (n,), ref_sign)),
        texts.map(lambda t: Function("LENGTH", (t,), strings(lambda s: float(len(s))))),
        pairs(numbers, numbers).map(lambda p: Operation("??", p, ref_coalesce)),
    )


def string_compounds(
    texts: st.SearchStrategy[Node], numbers: st.SearchStrategy[Node]
) -> st.SearchStrategy[Node]:
    join = strings(lambda a, b: a + b)
    return st.one_of(
        texts.map(lambda t: Function("LOWER", (t,), strings(str.lower))),
        pairs(texts, texts).map(lambda p: Function("CONCAT", p, join)),
        pairs(texts, texts).map(lambda p: Operation("||", p, join)),
        pairs(texts, numbers).map(lambda p: Function("SUBSTRING", p, ref_substring)),
        pairs(texts, texts).map(lambda p: Operation("??", p, ref_coalesce)),
    )


def comparisons(operands: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    symbols = st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="])
    return st.tuples(symbols, operands, operands).map(
        lambda t: Operation(t[0], (t[1], t[2]), ref_compare(t[0]))
    )


def chains(operands: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    """AND/OR chains; with a null operand their static type is null, so they never get compared."""
    items = st.lists(operands, min_size=2, max_size=4).map(tuple)
    return st.one_of(
        items.map(lambda operands: Operation("AND", operands, ref_and)),
        items.map(lambda operands: Operation("or", operands, ref_or)),
    )


def typed_strategies(
    depth: int,
) -> tuple[
    st.SearchStrategy[Node], st.SearchStrategy[Node], st.SearchStrategy[Node], st.SearchStrategy[Node]
]:
    """Numbers, strings, bools and logic chains, up to ``depth`` levels deep."""
    numbers, texts, bools = NUMBER_LEAVES, STRING_LEAVES, BOOL_LEAVES
    logic: st.SearchStrategy[Node] = st.nothing()
    for _ in range(depth):
        null_or_undefined = st.sampled_from([Constant(STATIC_NULL), Constant(U)])
        logic_operands = st.one_of(bools, logic, null_or_undefined)
        numbers, texts, bools, logic = (
            st.one_of(numbers, number_compounds(numbers, texts)),
            st.one_of(texts, string_compounds(texts, numbers)),
            st.one_of(
                bools,
                comparisons(numbers),
                comparisons(texts),
                comparisons(bools),
                st.one_of(bools, logic, st.just(Constant(STATIC_NULL))).map(
                    lambda b: Operation("NOT", (b,), ref_not)
                ),
                st.one_of(numbers, texts, bools, logic).map(
                    lambda n: Function("IS_DEFINED", (n,), lambda item: item is not U)
                ),
                st.one_of(numbers, texts).map(
                    lambda n: Function("IS_STRING", (n,), lambda item: type(item) is str)
                ),
                pairs(texts, texts).map(lambda p: Function("STARTS_WITH", p, strings(str.startswith))),
            ),
            chains(logic_operands),
        )
    return numbers, texts, bools, logic


NUMBERS, STRINGS, BOOLS, LOGIC = typed_strategies(3)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.sampled_from([0.0, 1.5, -3.0, 100.0, "3", "abc", ""]))


@st.composite
def contexts(draw: st.DrawFn) -> Context:
    property_values = st.sampled_from(["3", "-2.5", "1e3", "abc", "", "Hello"])
    properties = draw(st.dictionaries(st.sampled_from(["p1", "p2", "num"]), property_values))
    system = {"to": draw(st.sampled_from(["x", "Hello"]))} if draw(st.booleans()) else {}
    body_keys = {"n": JSON_SCALARS, "s": JSON_SCALARS, "flag": JSON_SCALARS}
    body = draw(st.none() | st.fixed_dictionaries({}, optional=body_keys))
    system_properties = dict(system)
    if body is not None:
        system_properties[SystemProperty.CONTENT_TYPE] = "application/json"
    raw = json.dumps(body if body is not None else {"n": 1}).encode()
    return Context(properties, system, body, Message(raw, properties, system_properties))


def same(compiled: object, reference: object) -> bool:
    if reference is STATIC_NULL:
        return compiled is None
    if compiled is U or reference is U:
        return compiled is reference
    return type(compiled) is type(reference) and compiled == reference


@settings(max_examples=300, deadline=None)
@given(st.one_of(NUMBERS, BOOLS, LOGIC, STRINGS), st.lists(contexts(), min_size=4, max_size=8))
def test_compiled_conditions_agree_with_a_reference_evaluator(tree: Node, messages: list[Context]) -> None:
    condition = parse_condition(tree.text())
    for context in messages:
        compiled, expected = condition.value(context.message), tree.evaluate(context)
        assert same(compiled, expected), (tree.text(), context, compiled, expected)


NUMBERS_MESSAGE = Message(b"", {"a": "-7", "b": "3", "z": "0", "h": "2.5", "big": "1e308"})
ARITHMETIC_LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.builds(Constant, st.sampled_from([-7.0, -2.5, 0.0, 3.0, 0.5, 1e308])),
    st.sampled_from(["a", "b", "z", "h", "big", "missing"]).map(
        lambda name: Function("AS_NUMBER", (Property(name),), ref_as_number)
    ),
)


def arithmetic(inner: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.tuples(st.sampled_from(["+", "-", "*", "/", "%"]), inner, inner).map(
        lambda t: Operation(t[0], (t[1], t[2]), ref_arithmetic(t[0]))
    )


@settings(max_examples=150)
@given(st.recursive(ARITHMETIC_LEAVES, arithmetic, max_leaves=6))
def test_arithmetic_agrees_with_ieee_reference(tree: Node) -> None:
    context = Context(dict(NUMBERS_MESSAGE.properties), {}, None, NUMBERS_MESSAGE)
    assert same(parse_condition(tree.text()).value(NUMBERS_MESSAGE), tree.evaluate(context)), tree.text()


LOGIC_LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.builds(Constant, st.sampled_from([True, False, STATIC_NULL])),
    st.builds(Body, st.just("flag")),
    st.tuples(PROPERTY_NAMES, st.sampled_from(["3", "abc"])).map(
        lambda t: Operation("=", (Property(t[0]), Constant(t[1])), ref_compare("="))
    ),
)


def logic_extensions(inner: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(chains(inner), inner.map(lambda operand: Operation("NOT", (operand,), ref_not)))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(LOGIC_LEAVES, logic_extensions, max_leaves=8), st.lists(contexts(), min_size=4, max_size=8)
)
def test_logic_agrees_with_a_kleene_reference(tree: Node, messages: list[Context]) -> None:
    condition = parse_condition(tree.text())
    for context in messages:
        compiled, expected = condition.value(context.message), tree.evaluate(context)
        assert same(compiled, expected), (tree.text(), context, compiled, expected)

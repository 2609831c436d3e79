"""Tests for edgehub.routing.parser: route parts, precedence as edgeHub's grammar, error positions."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub.errors import RouteSyntaxError
from edgehub.routing.parser import MAX_DEPTH, parse_expression, parse_route_syntax
from edgehub.routing.syntax import (
    AppProperty,
    Binary,
    BodyPath,
    Call,
    Literal,
    Logical,
    SystemPropertyRef,
    Unary,
    to_text,
)
from edgehub.routing.values import UNDEFINED

# --- route parts ---


@pytest.mark.parametrize(
    "source",
    [
        "/*",
        "/messages",
        "/messages/*",
        "/messages/modules",
        "/messages/modules/*",
        "/messages/modules/filter",
        "/messages/modules/filter/*",
        "/messages/modules/filter/outputs/*",
        "/messages/modules/filter/outputs/output1",
        "/twinChangeNotifications",
    ],
)
def test_every_source_form_parses(source: str) -> None:
    syntax = parse_route_syntax(f"FROM {source} INTO $upstream")
    assert syntax.source == source
    assert syntax.source_position == 5
    assert syntax.condition is None


def test_source_white_space_is_dropped_as_edgehub_does() -> None:
    assert parse_route_syntax("FROM /messages / modules /* INTO $upstream").source == "/messages/modules/*"


def test_numeric_and_keyword_like_path_segments_are_accepted() -> None:
    assert parse_route_syntax("FROM /messages/modules/m1/outputs/1 INTO $upstream").source == (
        "/messages/modules/m1/outputs/1"
    )


@pytest.mark.parametrize(
    ("route", "function", "sink"),
    [
        ("FROM /* INTO $upstream", None, "$upstream"),
        ("FROM /* INTO $Upstream", None, "$Upstream"),
        ('FROM /* INTO BrokeredEndpoint("/modules/m/inputs/i")', "BrokeredEndpoint", "/modules/m/inputs/i"),
        ("FROM /* INTO brokeredendpoint('/modules/m/inputs/i')", "brokeredendpoint", "/modules/m/inputs/i"),
    ],
)
def test_endpoint_forms(route: str, function: str | None, sink: str) -> None:
    syntax = parse_route_syntax(route)
    assert (syntax.sink_function, syntax.sink) == (function, sink)
    assert syntax.sink_position == route.index("INTO") + 5


def test_keywords_are_case_insensitive_and_select_star_is_optional() -> None:
    plain = parse_route_syntax("from /messages/* where a = 'x' into $upstream")
    selected = parse_route_syntax("  SELECT * FROM /messages/* WHERE a = 'x' INTO $upstream  ")
    assert plain.condition == selected.condition == Binary("=", AppProperty("a"), Literal("x"))


def test_condition_text_is_kept_as_written() -> None:
    syntax = parse_route_syntax("FROM /messages/*  WHERE   a = 'x'  AND  b <> \"y\"   INTO $upstream")
    assert syntax.condition_text == "a = 'x'  AND  b <> \"y\""


# --- conditions ---


def test_primaries() -> None:
    assert parse_expression("temperature") == AppProperty("temperature")
    assert parse_expression("$contentType") == SystemPropertyRef("contentType")
    assert parse_expression("{$contentType}") == SystemPropertyRef("contentType", escaped=True)
    assert parse_expression("{ $body.a }") == BodyPath("a", escaped=True)
    assert parse_expression("$BODY.a.b[0]") == BodyPath("a.b[0]")
    assert parse_expression("undefined") == Literal(UNDEFINED)
    assert parse_expression("0xFF") == Literal(255.0)
    assert parse_expression("0xFFFFFFFFFFFFFFFF") == Literal(-1.0)  # long.TryParse: two's complement
    assert parse_expression("0x10000000000000000") == Literal(UNDEFINED)
    assert parse_expression("e5") == Literal(UNDEFINED)  # edgeHub's REAL rule, not a number
    assert parse_expression("1e999") == Literal(float("inf"))
    assert parse_expression("f()") == Call("f", ())
    assert parse_expression("CONCAT('a', b)") == Call("CONCAT", (Literal("a"), AppProperty("b")))


def test_comparison_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    a, b, c = (Binary("=", AppProperty(name), Literal(name)) for name in "abc")
    assert parse_expression("a = 'a' OR b = 'b' AND c = 'c'") == Logical("OR", (a, Logical("AND", (b, c))))


def test_not_binds_tighter_than_everything_as_in_edgehub() -> None:
    assert parse_expression("NOT a = 'x'") == Binary("=", Unary("NOT", AppProperty("a")), Literal("x"))
    assert parse_expression("NOT true AND false") == Logical(
        "AND", (Unary("NOT", Literal(True)), Literal(False))
    )


def test_arithmetic_precedence_and_left_associativity() -> None:
    one, two, three = Literal(1.0), Literal(2.0), Literal(3.0)
    assert parse_expression("1 + 2 * 3") == Binary("+", one, Binary("*", two, three))
    assert parse_expression("1 - 2 - 3") == Binary("-", Binary("-", one, two), three)
    assert parse_expression("(1 + 2) * 3") == Binary("*", Binary("+", one, two), three)
    assert parse_expression("- (1) * 2") == Binary("*", Unary("-", one), two)


def test_relational_binds_tighter_than_equality_and_coalesce_is_loosest() -> None:
    assert parse_expression("1 < 2 = true") == Binary(
        "=", Binary("<", Literal(1.0), Literal(2.0)), Literal(True)
    )
    assert parse_expression("a ?? b OR c") == Binary(
        "??", AppProperty("a"), Logical("OR", (AppProperty("b"), AppProperty("c")))
    )


def test_concat_binds_like_addition() -> None:
    assert parse_expression("'a' || b = 'ab'") == Binary(
        "=", Binary("||", Literal("a"), AppProperty("b")), Literal("ab")
    )


def test_and_chains_are_one_node_but_parentheses_are_kept() -> None:
    t = Literal(True)
    assert parse_expression("true AND true AND true") == Logical("AND", (t, t, t))
    assert parse_expression("(true AND true) AND true") == Logical("AND", (Logical("AND", (t, t)), t))


def test_long_or_chains_do_not_count_as_nesting() -> None:
    text = " OR ".join(f"$connectionDeviceId = 'd{i}'" for i in range(500))
    tree = parse_expression(text)
    assert isinstance(tree, Logical)
    assert len(tree.operands) == 500


def test_too_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(RouteSyntaxError, match="nested too deeply"):
        parse_expression("(" * 5000 + "true" + ")" * 5000)
    with pytest.raises(RouteSyntaxError, match="nested too deeply"):
        parse_expression("NOT " * (MAX_DEPTH + 1) + "true")
    with pytest.raises(RouteSyntaxError, match="nested too deeply"):
        parse_expression(" + ".join(["1"] * (MAX_DEPTH + 2)))
    assert parse_expression("NOT " * MAX_DEPTH + "true") is not None


# --- errors ---


@pytest.mark.parametrize(
    ("route", "position", "reason"),
    [
        ("", 0, "empty route"),
        ("FORM /messages INTO $upstream", 0, "expected FROM"),
        ("SELECT FROM /messages INTO $upstream", 7, "expected '*' after SELECT"),
        ("FROM INTO $upstream", 5, "expected a source"),
        ("FROM /messages/ INTO $upstream", 16, "expected a name or '*'"),
        ("FROM /messages WHERE INTO $upstream", 21, "expected a condition but found INTO"),
        ("FROM /messages WHERE temp == 100 INTO $upstream", 27, "unexpected '='"),
        ("FROM /messages WHERE temp = 'high' INTO", 39, "expected $upstream"),
        ("FROM /messages WHERE (a = 'b' INTO $upstream", 30, "expected ')' for the '(' at position 21"),
        ("FROM /messages WHERE a = 'b') INTO $upstream", 28, "expected INTO"),
        ("FROM /messages WHERE a = 'b INTO $upstream", 25, "unterminated string"),
        ("FROM /messages WHERE a = @ INTO $upstream", 25, "invalid symbol '@'"),
        ("FROM /messages WHERE a[0] = 'x' INTO $upstream", 21, "'[' and ']' are allowed only in $body paths"),
        ("FROM /messages WHERE 3 -2 = 1 INTO $upstream", 23, "expected INTO but found '-2'"),
        ("FROM /messages INTO $upstream extra", 30, "end of route after the endpoint"),
        ('FROM /messages INTO BrokeredEndpoint("/modules/m/inputs/i"', 58, "expected ')'"),
        ('FROM /messages INTO BrokeredEndpoint("/modules/m/inputs/i)', 37, "unterminated string"),
        ('FROM /messages INTO BrokeredEndpoint ""/modules/m/inputs/i"")', 37, "expected '('"),
        ('FROM /messages INTO BrokeredEndpoint(""/modules/m/inputs/i"")', 39, "expected ')'"),
        ('FROM /messages INTO "/modules/m/inputs/i"', 20, "expected $upstream"),
        ("FROM /messages WHERE {contentType} = 'x' INTO $upstream", 22, "expected a system property"),
        ("FROM /messages WHERE f(1,) INTO $upstream", 25, "expected a value but found ')'"),
    ],
)
def test_syntax_errors_name_the_zero_based_position(route: str, position: int, reason: str) -> None:
    with pytest.raises(RouteSyntaxError) as raised:
        parse_route_syntax(route)
    assert raised.value.position == position
    assert reason in raised.value.reason
    assert raised.value.text == route
    assert str(raised.value).endswith(f"at position {position}")


# --- properties ---

_ROUTE_WORDS = st.sampled_from(
    [
        "FROM",
        "WHERE",
        "INTO",
        "SELECT",
        "*",
        "/",
        "/messages/*",
        "$upstream",
        "AND",
        "OR",
        "NOT",
        "(",
        ")",
        ",",
        "=",
        "<>",
        "!=",
        "<",
        ">=",
        "+",
        "-",
        "||",
        "??",
        "{",
        "}",
        "'s'",
        '"s',
        "'",
        "1",
        "-2.5e3",
        "0x1F",
        "true",
        "null",
        "undefined",
        "a",
        "$body.a[0]",
        "$body.",
        "$x",
        "IS_DEFINED",
        'BrokeredEndpoint("/modules/m/inputs/i")',
        "@",
        "[",
        "]",
        "/*",
        "*/",
    ]
)


def error_position(parse: Callable[[str], object], text: str) -> int | None:
    """Where ``parse`` refused ``text``, or None; any other exception fails the test."""
    try:
        parse(text)
    except RouteSyntaxError as error:
        return error.position
    return None


@given(st.text(max_size=80))
def test_parser_never_crashes_on_arbitrary_text(text: str) -> None:
    for parse in (parse_route_syntax, parse_expression):
        position = error_position(parse, text)
        assert position is None or 0 <= position <= len(text)


@given(st.lists(_ROUTE_WORDS, max_size=25).map(" ".join))
def test_parser_never_crashes_on_route_shaped_noise(text: str) -> None:
    for parse in (parse_route_syntax, parse_expression):
        position = error_position(parse, text)
        assert position is None or 0 <= position <= len(text)


_NAMES = st.sampled_from(["temp", "Level", "site_2", "a-b", "x.y", "$contentType", "{$to}", "$body.a.b[1]"])
_STRINGS = st.text(max_size=8).map(lambda text: "'" + text.replace("\\", "\\\\").replace("'", "''") + "'")
_NUMBERS = st.sampled_from(["0", "42", "-7", "3.25", ".5", "1e3", "-2.5E-2", "0x1f"])
_LEAVES = st.one_of(_NAMES, _STRINGS, _NUMBERS, st.sampled_from(["true", "false", "null", "undefined"]))
_OPERATORS = st.sampled_from(
    ["*", "/", "%", "+", "-", "||", "<", "<=", ">", ">=", "=", "!=", "<>", "AND", "or", "??"]
)


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, _OPERATORS, inner).map(" ".join),
        inner.map(lambda text: f"({text})"),
        inner.map(lambda text: f"NOT {text}"),
        inner.map(lambda text: f"- {text}"),
        st.tuples(st.sampled_from(["LOWER", "concat", "Is_Defined"]), st.lists(inner, max_size=3)).map(
            lambda call: f"{call[0]}({', '.join(call[1])})"
        ),
    )


_CONDITIONS = st.recursive(_LEAVES, _compound, max_leaves=12)


@settings(max_examples=200)
@given(_CONDITIONS)
def test_printing_a_parsed_condition_parses_back_to_the_same_tree(text: str) -> None:
    tree = parse_expression(text)
    assert parse_expression(to_text(tree)) == tree

"""Tests for edgehub.routing.syntax: printing condition trees back as route text."""

from __future__ import annotations

import math

import pytest

from edgehub.routing.parser import parse_expression
from edgehub.routing.syntax import (
    AppProperty,
    Binary,
    BodyPath,
    Call,
    Expression,
    Literal,
    LiteralValue,
    Logical,
    SystemPropertyRef,
    Unary,
    to_text,
)
from edgehub.routing.values import UNDEFINED


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("it's a \\ test", "'it\\'s a \\\\ test'"),
        (1.5, "1.5"),
        (-2.0, "-2.0"),
        (math.inf, "1e999"),
        (-math.inf, "-1e999"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (UNDEFINED, "undefined"),
    ],
)
def test_built_literals_print_as_route_literals(value: LiteralValue, text: str) -> None:
    assert to_text(Literal(value)) == text
    assert parse_expression(text) == Literal(value)


def test_parsed_literals_print_as_written() -> None:
    assert to_text(parse_expression("0x1F")) == "0x1F"
    assert to_text(parse_expression('"double"')) == '"double"'


def test_operations_are_fully_parenthesized() -> None:
    tree = Logical(
        "OR",
        (
            Binary("=", AppProperty("a"), Literal("x")),
            Unary("NOT", Call("IS_DEFINED", (SystemPropertyRef("connectionModuleId"),))),
            Binary(">", BodyPath("t[0]"), Unary("-", Literal(1.0))),
        ),
    )
    assert to_text(tree) == "((a = 'x') OR (NOT IS_DEFINED($connectionModuleId)) OR ($body.t[0] > (- 1.0)))"


@pytest.mark.parametrize(
    "tree",
    [
        SystemPropertyRef("contentType", escaped=True),
        BodyPath("a.b", escaped=True),
        Call("CONCAT", (Literal("a"), AppProperty("b"), Literal("c"))),
        Binary("??", AppProperty("a"), Literal("b")),
        Logical("AND", (Logical("AND", (Literal(True), Literal(False))), Literal(True))),
    ],
)
def test_printed_trees_parse_back_equal(tree: Expression) -> None:
    assert parse_expression(to_text(tree)) == tree

"""Tests for edgehub.routing.lexer: tokens split as edgeHub's ANTLR lexer splits them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.routing.lexer import Token, TokenKind, string_value, tokenize


def kinds(text: str) -> list[tuple[TokenKind, str]]:
    return [(token.kind, token.text) for token in tokenize(text)[:-1]]


def test_route_splits_into_keywords_path_and_endpoint() -> None:
    assert kinds('FROM /messages/* INTO BrokeredEndpoint("/modules/m/inputs/i")') == [
        (TokenKind.FROM, "FROM"),
        (TokenKind.SLASH, "/"),
        (TokenKind.ID, "messages"),
        (TokenKind.SLASH, "/"),
        (TokenKind.STAR, "*"),
        (TokenKind.INTO, "INTO"),
        (TokenKind.ID, "BrokeredEndpoint"),
        (TokenKind.LPAREN, "("),
        (TokenKind.STRING, '"/modules/m/inputs/i"'),
        (TokenKind.RPAREN, ")"),
    ]


@pytest.mark.parametrize("word", ["from", "FROM", "From", "fRoM"])
def test_keywords_are_case_insensitive(word: str) -> None:
    assert kinds(word) == [(TokenKind.FROM, word)]


def test_true_false_null_are_lowercase_only_else_names() -> None:
    assert kinds("true false null undefined True NULL") == [
        (TokenKind.TRUE, "true"),
        (TokenKind.FALSE, "false"),
        (TokenKind.NULL, "null"),
        (TokenKind.UNDEFINED, "undefined"),
        (TokenKind.ID, "True"),
        (TokenKind.ID, "NULL"),
    ]


def test_a_name_keeps_dashes_and_operators_glued_to_it_as_edgehub_does() -> None:
    # edgeHub's ID excludes only ()<>@,;:\"/[]?={} and white space.
    assert kinds("temp-1 a+b x*2 a!=b") == [
        (TokenKind.ID, "temp-1"),
        (TokenKind.ID, "a+b"),
        (TokenKind.ID, "x*2"),
        (TokenKind.ID, "a!"),
        (TokenKind.EQ, "="),
        (TokenKind.ID, "b"),
    ]


def test_spaced_operators_are_operators() -> None:
    assert [kind for kind, _ in kinds("a + b - c * d / e % f || g ?? h")][1::2] == [
        TokenKind.PLUS,
        TokenKind.MINUS,
        TokenKind.STAR,
        TokenKind.SLASH,
        TokenKind.PERCENT,
        TokenKind.CONCAT,
        TokenKind.COALESCE,
    ]


def test_comparison_operators_take_the_longest_form() -> None:
    assert [kind for kind, _ in kinds("a<=b>=c<>d != e<f>g=h")][1::2] == [
        TokenKind.LE,
        TokenKind.GE,
        TokenKind.NE_SQL,
        TokenKind.NE,
        TokenKind.LT,
        TokenKind.GT,
        TokenKind.EQ,
    ]


def test_numbers_integer_negative_real_hex_exponent() -> None:
    assert kinds("42 -7 3.25 -.5 1e5 2.5E-3 0x1F") == [
        (TokenKind.INTEGER, "42"),
        (TokenKind.INTEGER, "-7"),
        (TokenKind.REAL, "3.25"),
        (TokenKind.REAL, "-.5"),
        (TokenKind.REAL, "1e5"),
        (TokenKind.REAL, "2.5E-3"),
        (TokenKind.HEX, "0x1F"),
    ]


def test_minus_before_a_digit_is_part_of_the_number_as_in_edgehub() -> None:
    assert kinds("3 -2") == [(TokenKind.INTEGER, "3"), (TokenKind.INTEGER, "-2")]
    assert kinds("3 - 2") == [(TokenKind.INTEGER, "3"), (TokenKind.MINUS, "-"), (TokenKind.INTEGER, "2")]


def test_system_property_and_body_path_are_one_token() -> None:
    assert kinds("$contentType $body.a.b[0]") == [
        (TokenKind.SYS_PROP, "$contentType"),
        (TokenKind.SYS_PROP, "$body.a.b[0]"),
    ]


def test_brackets_outside_a_system_property_make_an_unusable_path_token() -> None:
    assert kinds("a[0]") == [(TokenKind.QUERY_PATH, "a[0]")]


def test_whitespace_and_closed_comments_are_dropped() -> None:
    assert kinds(" a\t/* note */\r\nb ") == [(TokenKind.ID, "a"), (TokenKind.ID, "b")]


def test_an_unclosed_comment_is_a_slash_and_a_star() -> None:
    assert kinds("/messages/*") == [
        (TokenKind.SLASH, "/"),
        (TokenKind.ID, "messages"),
        (TokenKind.SLASH, "/"),
        (TokenKind.STAR, "*"),
    ]


@pytest.mark.parametrize("symbol", ["@", ";", ":", "\\", "?"])
def test_stray_symbols_become_unknown_tokens(symbol: str) -> None:
    assert kinds(symbol) == [(TokenKind.UNKNOWN, symbol)]


def test_positions_are_zero_based_offsets() -> None:
    tokens = tokenize("  ab = 'x'")
    assert [(token.position, token.end) for token in tokens] == [(2, 4), (5, 6), (7, 10), (10, 10)]
    assert tokens[-1].kind is TokenKind.EOF


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'plain'", "plain"),
        ('"double"', "double"),
        ("'it''s'", "it's"),
        ("'a\\'b'", "a'b"),
        ('"a\\"b"', 'a"b'),
        ("'back\\\\slash'", "back\\slash"),
        ("'\\u00e9t\\u00E9'", "été"),
        ("\"it''s\"", "it''s"),
        ("'\\''''", "''"),
    ],
)
def test_string_values_resolve_escapes_and_doubled_quotes(text: str, value: str) -> None:
    [token] = tokenize(text)[:-1]
    assert token.kind is TokenKind.STRING
    assert string_value(token) == value


def test_unknown_escape_leaves_the_string_unterminated() -> None:
    assert kinds("'a\\nb'")[0] == (TokenKind.UNTERMINATED_STRING, "'a")


def test_unterminated_string_keeps_its_text() -> None:
    [token] = tokenize("'abc")[:-1]
    assert token.kind is TokenKind.UNTERMINATED_STRING
    assert string_value(token) == "abc"


def test_a_string_glued_to_name_characters_is_a_name_as_in_edgehub() -> None:
    assert kinds("'a'x") == [(TokenKind.ID, "'a'x")]


@given(st.text(max_size=60))
def test_tokens_cover_the_text_in_order(text: str) -> None:
    tokens: list[Token] = tokenize(text)
    assert tokens[-1].kind is TokenKind.EOF
    ends = [token.end for token in tokens]
    assert ends == sorted(ends)
    for token in tokens:
        assert text[token.position : token.end] == token.text

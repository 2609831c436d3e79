"""Parses route text into its parts and a condition syntax tree (edgeHub's Route.g4/Condition.g4).

Owns the grammar and operator precedence; it must not type-check, evaluate or resolve
endpoints. Every failure is a RouteSyntaxError with the 0-based position of the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NoReturn

from edgehub.errors import RouteSyntaxError
from edgehub.routing.lexer import Token, TokenKind, string_value, tokenize
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
)
from edgehub.routing.values import UNDEFINED

MAX_DEPTH: Final = 100
"""Deepest nesting accepted in a condition; AND/OR chains of any length count as one level."""

# edgeHub's Condition.g4 lists its alternatives in this order, so ANTLR gives them this
# precedence (higher binds tighter). Unary '-' and NOT come before every binary operator
# there, so they bind tightest: `NOT a = b` is `(NOT a) = b`, exactly as in edgeHub.
_BINARY: Final[dict[TokenKind, tuple[str, int]]] = {
    TokenKind.STAR: ("*", 7),
    TokenKind.SLASH: ("/", 7),
    TokenKind.PERCENT: ("%", 7),
    TokenKind.PLUS: ("+", 6),
    TokenKind.MINUS: ("-", 6),
    TokenKind.CONCAT: ("||", 6),
    TokenKind.LT: ("<", 5),
    TokenKind.LE: ("<=", 5),
    TokenKind.GT: (">", 5),
    TokenKind.GE: (">=", 5),
    TokenKind.EQ: ("=", 4),
    TokenKind.NE: ("!=", 4),
    TokenKind.NE_SQL: ("<>", 4),
    TokenKind.AND: ("AND", 3),
    TokenKind.OR: ("OR", 2),
    TokenKind.COALESCE: ("??", 1),
}
_LOGICAL: Final = frozenset({"AND", "OR"})
_KEYWORD_LITERALS: Final[dict[TokenKind, LiteralValue]] = {
    TokenKind.TRUE: True,
    TokenKind.FALSE: False,
    TokenKind.NULL: None,
    TokenKind.UNDEFINED: UNDEFINED,
}
# Words accepted as a source path segment. edgeHub takes only names and '*'; a module or
# output called '1' or 'null' is accepted here too.
_PATH_WORDS: Final = frozenset(
    {
        TokenKind.ID,
        TokenKind.SYS_PROP,
        TokenKind.INTEGER,
        TokenKind.REAL,
        TokenKind.HEX,
        TokenKind.TRUE,
        TokenKind.FALSE,
        TokenKind.NULL,
        TokenKind.UNDEFINED,
        TokenKind.AND,
        TokenKind.OR,
        TokenKind.NOT,
    }
)
_BODY_PREFIX: Final = "body."


@dataclass(frozen=True, slots=True)
class RouteSyntax:
    """The parts of ``[SELECT *] FROM <source> [WHERE <condition>] INTO <sink>``."""

    source: str
    """The source path without white space, e.g. ``/messages/modules/filter/*``."""
    source_position: int
    condition: Expression | None
    condition_text: str
    """The condition exactly as written (empty without WHERE)."""
    sink_function: str | None
    """``BrokeredEndpoint`` as written, or None for a system endpoint (``$upstream``)."""
    sink: str
    """``$upstream`` as written, or the function's string argument."""
    sink_position: int


def parse_route_syntax(text: str) -> RouteSyntax:
    """Parse a whole route; raises RouteSyntaxError."""
    return _Parser(text).route()


def parse_expression(text: str) -> Expression:
    """Parse a condition on its own (positions relative to ``text``); raises RouteSyntaxError."""
    parser = _Parser(text)
    expression = parser.condition()
    parser.expect(TokenKind.EOF, "end of condition")
    return expression


def _describe(token: Token) -> str:
    return "end of route" if token.kind is TokenKind.EOF else f"'{token.text}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0

    # --- token access ---

    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not TokenKind.EOF:
            self.index += 1
        return token

    def accept(self, kind: TokenKind) -> Token | None:
        return self.advance() if self.peek().kind is kind else None

    def expect(self, kind: TokenKind, wanted: str) -> Token:
        token = self.peek()
        if token.kind is not kind:
            self.fail(f"expected {wanted} but found {_describe(token)}", token)
        return self.advance()

    def fail(self, reason: str, token: Token) -> NoReturn:
        raise RouteSyntaxError(reason, token.position, self.text)

    # --- route ---

    def route(self) -> RouteSyntax:
        if self.peek().kind is TokenKind.EOF:
            self.fail("empty route", self.peek())
        if self.accept(TokenKind.SELECT):
            self.expect(TokenKind.STAR, "'*' after SELECT")
        self.expect(TokenKind.FROM, "FROM")
        source_position = self.peek().position
        source = self.source()
        condition: Expression | None = None
        condition_text = ""
        if self.accept(TokenKind.WHERE):
            start = self.peek().position
            condition = self.condition()
            condition_text = self.text[start : self.tokens[self.index - 1].end]
        self.expect(TokenKind.INTO, "INTO")
        sink_position = self.peek().position
        sink_function, sink = self.sink()
        # edgeHub's grammar has no EOF here and ignores what follows; we refuse it.
        self.expect(TokenKind.EOF, "end of route after the endpoint")
        return RouteSyntax(
            source, source_position, condition, condition_text, sink_function, sink, sink_position
        )

    def source(self) -> str:
        found = self.peek()
        if found.kind is not TokenKind.SLASH:
            self.fail(f"expected a source such as /messages/* but found {_describe(found)}", found)
        segments: list[str] = []
        while self.accept(TokenKind.SLASH):
            token = self.advance()
            if token.kind is TokenKind.PLUS and segments and segments[0].lower() == "topics":
                segments.append("+")  # /topics/{MQTT filter}: '+' is a level ('#' lexes as a name)
                continue
            if token.kind is not TokenKind.STAR and token.kind not in _PATH_WORDS:
                self.fail(f"expected a name or '*' after '/' but found {_describe(token)}", token)
            segments.append(token.text)
        return "/" + "/".join(segments)

    def sink(self) -> tuple[str | None, str]:
        token = self.advance()
        if token.kind is TokenKind.SYS_PROP:
            return None, token.text
        looks_like_call = self.peek().kind in (TokenKind.LPAREN, TokenKind.STRING)
        if token.kind is not TokenKind.ID or not looks_like_call:
            self.fail(
                f'expected $upstream or BrokeredEndpoint("/modules/<module>/inputs/<input>") '
                f"but found {_describe(token)}",
                token,
            )
        self.expect(TokenKind.LPAREN, f"'(' after {token.text}")
        address = self.peek()
        if address.kind is TokenKind.UNTERMINATED_STRING:
            self.fail("unterminated string", address)
        self.expect(TokenKind.STRING, "a quoted endpoint address")
        self.expect(TokenKind.RPAREN, "')'")
        return token.text, string_value(address)

    # --- condition ---

    def condition(self) -> Expression:
        return self.binary(1)[0]

    def enter(self, token: Token) -> None:
        # Bounds the parser's own recursion (parentheses, NOT NOT ...), so no input can
        # exhaust the Python stack; the tree depth is bounded separately below.
        self.nesting += 1
        if self.nesting > 2 * MAX_DEPTH:
            self.too_deep(token)

    def too_deep(self, token: Token) -> NoReturn:
        self.fail(f"condition nested too deeply (more than {MAX_DEPTH} levels)", token)

    def binary(self, min_precedence: int) -> tuple[Expression, int]:
        """Precedence climbing; returns the tree and its depth."""
        self.enter(self.peek())
        left, depth = self.unary()
        chain: Logical | None = None
        while (operator := _BINARY.get(self.peek().kind)) is not None and operator[1] >= min_precedence:
            symbol, precedence = operator
            token = self.advance()
            right, right_depth = self.binary(precedence + 1)  # left-associative, as ANTLR
            if symbol in _LOGICAL and chain is not None and chain.operator == symbol:
                # a AND b AND c is one n-ary node: long chains add no depth
                chain = left = Logical(symbol, (*chain.operands, right), chain.position)
                depth = max(depth, right_depth + 1)
            elif symbol in _LOGICAL:
                chain = left = Logical(symbol, (left, right), token.position)
                depth = max(depth, right_depth) + 1
            else:
                chain = None
                left = Binary(symbol, left, right, token.position)
                depth = max(depth, right_depth) + 1
            if depth > MAX_DEPTH:
                self.too_deep(token)
        self.nesting -= 1
        return left, depth

    def unary(self) -> tuple[Expression, int]:
        token = self.peek()
        if token.kind is not TokenKind.MINUS and token.kind is not TokenKind.NOT:
            return self.primary()
        self.advance()
        self.enter(token)
        operand, depth = self.unary()
        self.nesting -= 1
        if depth + 1 > MAX_DEPTH:
            self.too_deep(token)
        return Unary("-" if token.kind is TokenKind.MINUS else "NOT", operand, token.position), depth + 1

    def primary(self) -> tuple[Expression, int]:
        token = self.advance()
        kind = token.kind
        if kind is TokenKind.LPAREN:
            inner = self.binary(1)
            found = self.peek()
            if found.kind is not TokenKind.RPAREN:
                opened = token.position
                self.fail(f"expected ')' for the '(' at position {opened}, found {_describe(found)}", found)
            self.advance()
            return inner
        if kind is TokenKind.ID:
            if self.peek().kind is TokenKind.LPAREN:
                return self.call(token)
            return AppProperty(token.text, token.position), 0
        if kind is TokenKind.SYS_PROP:
            return _system_property(token.text[1:], escaped=False, position=token.position), 0
        if kind is TokenKind.LBRACE:
            name = self.expect(TokenKind.SYS_PROP, "a system property such as $contentType after '{'")
            self.expect(TokenKind.RBRACE, "'}'")
            return _system_property(name.text[1:], escaped=True, position=token.position), 0
        literal = _literal(token)
        if literal is None:
            self.fail(_unexpected(token), token)
        return literal, 0

    def call(self, name: Token) -> tuple[Expression, int]:
        self.advance()  # '('
        arguments: list[Expression] = []
        depth = 0
        if self.peek().kind is not TokenKind.RPAREN:
            while True:
                argument, argument_depth = self.binary(1)
                arguments.append(argument)
                depth = max(depth, argument_depth)
                if not self.accept(TokenKind.COMMA):
                    break
        self.expect(TokenKind.RPAREN, f"',' or ')' in the arguments of {name.text}")
        if depth + 1 > MAX_DEPTH:
            self.too_deep(name)
        return Call(name.text, tuple(arguments), name.position), depth + 1


def _system_property(name: str, *, escaped: bool, position: int) -> Expression:
    # `$body.<path>` reads the JSON body (edgeHub: the prefix is case-insensitive).
    if name[: len(_BODY_PREFIX)].lower() == _BODY_PREFIX:
        return BodyPath(name[len(_BODY_PREFIX) :], escaped, position)
    return SystemPropertyRef(name, escaped, position)


def _literal(token: Token) -> Literal | None:
    kind = token.kind
    if kind is TokenKind.STRING:
        return Literal(string_value(token), token.text, token.position)
    if kind in _KEYWORD_LITERALS:
        return Literal(_KEYWORD_LITERALS[kind], token.text, token.position)
    if kind is TokenKind.INTEGER or kind is TokenKind.REAL:
        return Literal(_float(token.text), token.text, token.position)
    if kind is TokenKind.HEX:
        return Literal(_hex(token.text[2:]), token.text, token.position)
    return None


def _float(text: str) -> float | LiteralValue:
    # double.TryParse: a huge literal is ±Infinity; one without digits ('e5') is undefined.
    try:
        return float(text)
    except ValueError:
        return UNDEFINED


def _hex(digits: str) -> LiteralValue:
    # long.TryParse(HexNumber): at most 64 bits, read as two's complement; else undefined.
    value = int(digits, 16)
    if value >= 1 << 64:
        return UNDEFINED
    return float(value - (1 << 64) if value >= 1 << 63 else value)


def _unexpected(token: Token) -> str:
    reasons = {
        TokenKind.UNTERMINATED_STRING: "unterminated string",
        TokenKind.UNKNOWN: f"invalid symbol '{token.text}'",
        TokenKind.RPAREN: "expected a value but found ')'",
        TokenKind.QUERY_PATH: f"unexpected '{token.text}' ('[' and ']' are allowed only in $body paths)",
        TokenKind.EOF: "expected a condition but found end of route",
        TokenKind.INTO: "expected a condition but found INTO",
    }
    return reasons.get(token.kind, f"unexpected {_describe(token)}")

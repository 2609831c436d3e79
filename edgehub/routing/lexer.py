"""Tokens of the route language, split exactly as edgeHub's ANTLR lexer splits them.

Owns the token rules (GrammarLexer.g4 of Microsoft.Azure.Devices.Routing.Core); it must
not know the grammar: an unknown character becomes an UNKNOWN token for the parser to refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final


class TokenKind(Enum):
    """Token kinds, in edgeHub's rule order: on equal length the earlier kind wins."""

    LBRACE = "'{'"
    RBRACE = "'}'"
    SELECT = "SELECT"
    FROM = "FROM"
    WHERE = "WHERE"
    INTO = "INTO"
    STRING = "string"
    UNTERMINATED_STRING = "unterminated string"
    INTEGER = "integer"
    HEX = "hex integer"
    REAL = "real number"
    TRUE = "true"
    FALSE = "false"
    NULL = "null"
    UNDEFINED = "undefined"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    PLUS = "'+'"
    MINUS = "'-'"
    STAR = "'*'"
    SLASH = "'/'"
    PERCENT = "'%'"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    EQ = "'='"
    NE = "'!='"
    NE_SQL = "'<>'"
    LE = "'<='"
    GE = "'>='"
    GT = "'>'"
    LT = "'<'"
    CONCAT = "'||'"
    COALESCE = "'??'"
    SYS_PROP = "system property"
    ID = "name"
    QUERY_PATH = "path"
    WS = "whitespace"
    COMMENT = "comment"
    UNKNOWN = "symbol"
    EOF = "end of route"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    position: int
    """0-based offset of the first character in the text that was tokenized."""

    @property
    def end(self) -> int:
        return self.position + len(self.text)


# edgeHub's ID excludes ()<>@,;:\"/[]?={} and space, tab, CR, LF; everything else
# (letters, digits, '-', '+', '*', '.', '$', '\'', '!', ...) may appear in a name, so
# `temp-1` is one name, as in edgeHub. SYS_PROP/QUERY_PATH also allow '[' and ']'.
_ID_CHARS: Final = r"[^()<>@,;:\\\"/\[\]?={} \t\n\r]"
_PATH_CHARS: Final = r"[^()<>@,;:\\\"/?={} \t\n\r]"


def _keyword(word: str) -> str:
    # [Ss][Ee]... as ANTLR writes it; re.IGNORECASE would also accept U+017F for 's'.
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


def _string(quote: str) -> str:
    # ESC is \" \' \\ or \uXXXX (edgeHub); a doubled quote ('it''s') is accepted too,
    # as in SQL and IoT Hub queries. Possessive loop: no backtracking into an escape.
    return rf"{quote}(?:\\(?:[\"'\\]|u[0-9A-Fa-f]{{4}})|{quote}{quote}|[^{quote}\\])*+"


_RULES: Final[tuple[tuple[TokenKind, re.Pattern[str]], ...]] = tuple(
    (kind, re.compile(pattern, re.DOTALL))
    for kind, pattern in (
        (TokenKind.LBRACE, r"\{"),
        (TokenKind.RBRACE, r"\}"),
        (TokenKind.SELECT, _keyword("select")),
        (TokenKind.FROM, _keyword("from")),
        (TokenKind.WHERE, _keyword("where")),
        (TokenKind.INTO, _keyword("into")),
        (TokenKind.STRING, f"{_string(chr(34))}\"|{_string(chr(39))}'"),
        (TokenKind.UNTERMINATED_STRING, f"{_string(chr(34))}|{_string(chr(39))}"),
        (TokenKind.INTEGER, r"-?[0-9]+"),
        (TokenKind.HEX, r"0[Xx][0-9A-Fa-f]+"),
        (TokenKind.REAL, r"-?[0-9]*\.[0-9]+(?:[Ee][+-]?[0-9]+)?|-?[0-9]*[Ee][+-]?[0-9]+"),
        (TokenKind.TRUE, r"true"),
        (TokenKind.FALSE, r"false"),
        (TokenKind.NULL, r"null"),
        (TokenKind.UNDEFINED, r"undefined"),
        (TokenKind.LPAREN, r"\("),
        (TokenKind.RPAREN, r"\)"),
        (TokenKind.COMMA, r","),
        (TokenKind.PLUS, r"\+"),
        (TokenKind.MINUS, r"-"),
        (TokenKind.STAR, r"\*"),
        (TokenKind.SLASH, r"/"),
        (TokenKind.PERCENT, r"%"),
        (TokenKind.AND, _keyword("and")),
        (TokenKind.OR, _keyword("or")),
        (TokenKind.NOT, _keyword("not")),
        (TokenKind.EQ, r"="),
        (TokenKind.NE, r"!="),
        (TokenKind.NE_SQL, r"<>"),
        (TokenKind.LE, r"<="),
        (TokenKind.GE, r">="),
        (TokenKind.GT, r">"),
        (TokenKind.LT, r"<"),
        (TokenKind.CONCAT, r"\|\|"),
        (TokenKind.COALESCE, r"\?\?"),
        (TokenKind.SYS_PROP, rf"\${_PATH_CHARS}+"),
        (TokenKind.ID, f"{_ID_CHARS}+"),
        (TokenKind.QUERY_PATH, f"{_PATH_CHARS}+"),
        (TokenKind.WS, r"[ \t\r\n]+"),
        (TokenKind.COMMENT, r"/\*.*?\*/"),
        (TokenKind.UNKNOWN, r"."),
    )
)

_HIDDEN: Final = frozenset({TokenKind.WS, TokenKind.COMMENT})


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens (whitespace and /* comments */ dropped), ending with EOF.

    Longest match wins; on a tie the earlier rule wins, as in ANTLR. Never raises.
    """
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        best_kind, best_length = TokenKind.UNKNOWN, 0
        for kind, pattern in _RULES:
            found = pattern.match(text, position)
            if found is not None and found.end() - position > best_length:
                best_kind, best_length = kind, found.end() - position
        if best_kind not in _HIDDEN:
            tokens.append(Token(best_kind, text[position : position + best_length], position))
        position += best_length
    tokens.append(Token(TokenKind.EOF, "", len(text)))
    return tokens


_ESCAPES: Final = {
    quote: re.compile(rf"\\(?:u([0-9A-Fa-f]{{4}})|([\"'\\]))|({quote}{quote})") for quote in "'\""
}


def string_value(token: Token) -> str:
    """The value of a STRING token: quotes removed, escapes and doubled quotes resolved."""
    quote = token.text[0]
    body = token.text[1:-1] if token.kind is TokenKind.STRING else token.text[1:]
    return _ESCAPES[quote].sub(_unescape, body)


def _unescape(found: re.Match[str]) -> str:
    code, escaped, doubled = found.groups()
    if code is not None:
        return chr(int(code, 16))
    return escaped if escaped is not None else doubled[0]

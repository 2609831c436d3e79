"""The syntax tree of a route condition, and printing it back as route text.

Frozen value types only; no parsing (parser.py), typing or evaluation (condition.py) here.
Positions are 0-based offsets of the node's operator or name, kept out of equality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from edgehub.routing.values import UNDEFINED, Undefined

LiteralValue: TypeAlias = str | float | bool | Undefined | None


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, number, true/false, null or undefined; ``text`` is as written (empty if built)."""

    value: LiteralValue
    text: str = field(default="", compare=False)
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class AppProperty:
    """A bare name: an application property, looked up case-insensitively (edgeHub)."""

    name: str
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class SystemPropertyRef:
    """``$name`` (an application property named ``$name`` wins, as in edgeHub) or
    ``{$name}`` (``escaped``: the system property only)."""

    name: str
    escaped: bool = False
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class BodyPath:
    """``$body.a.b[0]``: a value in a JSON body; ``text`` is the path after ``$body.``."""

    text: str
    escaped: bool = False
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Unary:
    operator: str
    """``-`` or ``NOT``."""
    operand: Expression
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Binary:
    operator: str
    """One of ``* / % + - || < <= > >= = != <> ??``."""
    left: Expression
    right: Expression
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Logical:
    """A chain ``a AND b AND c`` (or OR): n-ary, so long chains never recurse deeply."""

    operator: str
    """``AND`` or ``OR``."""
    operands: tuple[Expression, ...]
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    """A built-in function call; ``name`` as written (functions are case-insensitive)."""

    name: str
    arguments: tuple[Expression, ...]
    position: int = field(default=0, compare=False)


Expression: TypeAlias = Literal | AppProperty | SystemPropertyRef | BodyPath | Unary | Binary | Logical | Call

_LARGEST_LITERAL: Final = "1e999"


def to_text(expression: Expression) -> str:
    """Route text for ``expression``; every operation parenthesized, so it parses back the same."""
    match expression:
        case Literal(value=value, text=text):
            return text or _literal_text(value)
        case AppProperty(name=name):
            return name
        case SystemPropertyRef(name=name, escaped=escaped):
            return "{$" + name + "}" if escaped else "$" + name
        case BodyPath(text=text, escaped=escaped):
            return "{$body." + text + "}" if escaped else "$body." + text
        case Unary(operator=operator, operand=operand):
            # A space keeps '-' from gluing to what follows ('-x' is a name in edgeHub).
            return f"({operator} {to_text(operand)})"
        case Binary(operator=operator, left=left, right=right):
            return f"({to_text(left)} {operator} {to_text(right)})"
        case Logical(operator=operator, operands=operands):
            return "(" + f" {operator} ".join(to_text(operand) for operand in operands) + ")"
        case Call(name=name, arguments=arguments):
            return f"{name}(" + ", ".join(to_text(argument) for argument in arguments) + ")"


def _literal_text(value: LiteralValue) -> str:
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    assert isinstance(value, float)
    if math.isinf(value):
        return _LARGEST_LITERAL if value > 0 else "-" + _LARGEST_LITERAL
    return repr(value)

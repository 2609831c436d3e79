"""Run-time values of route conditions and the view of one message that conditions read.

Owns undefined, property lookup and the lazily parsed JSON body (parsed at most once per
message); it must not parse route text or decide routes.

Values are ``str``, ``float`` (never NaN: NaN is undefined, as in edgeHub), ``bool``,
``None`` (null), ``dict``/``list`` (JSON objects and arrays from ``$body``) or UNDEFINED.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, Final, TypeAlias

from edgehub.message import Message, SystemProperty


class Undefined(Enum):
    """The type of UNDEFINED: a missing property, a failed conversion, NaN."""

    UNDEFINED = "undefined"

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = Undefined.UNDEFINED

Value: TypeAlias = object
"""Any run-time value (see the module docstring)."""


class ValueType(Enum):
    """The static type the compiler gives an expression, as edgeHub's RouteCompiler does."""

    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    NULL = "null"
    UNDEFINED = "undefined"
    ANY = "any"
    """A $body value: its type is known only at run time (edgeHub's QueryValue)."""


SUPPORTED_BY_ANY: Final = frozenset({ValueType.STRING, ValueType.NUMBER, ValueType.BOOL, ValueType.NULL})
"""Types a $body value may stand in for (edgeHub's QueryValue.IsSupportedType)."""

_JSON_CONTENT_TYPE: Final = "application/json"
# IoT Hub / edgeHub accept these encodings for $body queries (Routing.Core Constants);
# an absent contentEncoding means UTF-8 here (edgeHub refuses the query instead).
_JSON_ENCODINGS: Final = {"utf-8": "utf-8-sig", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}


class MessageView:
    """One message as conditions see it: case-insensitive property lookup, JSON body.

    Built once per message by the router and shared by every route's condition, so the
    lower-cased property maps and the JSON body are computed at most once.
    """

    __slots__ = (
        "_body",
        "_body_parsed",
        "_dollar_properties",
        "_folded_properties",
        "_folded_system",
        "message",
        "properties",
        "system_properties",
    )

    def __init__(self, message: Message) -> None:
        self.message = message
        self.properties = message.properties
        self.system_properties = message.system_properties
        self._folded_properties: dict[str, str] | None = None
        self._folded_system: dict[str, str] | None = None
        self._dollar_properties: dict[str, str] | None = None
        self._body: dict[str, object] | None = None
        self._body_parsed = False

    def application_property(self, folded_name: str) -> str | Undefined:
        """Case-insensitive lookup (edgeHub's property bags use OrdinalIgnoreCase).

        Callers try the exact name on ``properties`` first; this is the slow path.
        """
        folded = self._folded_properties
        if folded is None:
            folded = self._folded_properties = _fold(self.properties)
        return folded.get(folded_name, UNDEFINED)

    def dollar_property(self, folded_name: str) -> str | Undefined:
        """An application property named like ``$name`` (case-insensitive); usually none
        exist, so this is the cheap check before reading the system property."""
        dollar = self._dollar_properties
        if dollar is None:
            dollar = self._dollar_properties = {
                name.lower(): value for name, value in self.properties.items() if name[:1] == "$"
            }
        return dollar.get(folded_name, UNDEFINED) if dollar else UNDEFINED

    def system_property(self, folded_name: str) -> str | Undefined:
        folded = self._folded_system
        if folded is None:
            folded = self._folded_system = _fold(self.system_properties)
        return folded.get(folded_name, UNDEFINED)

    def body(self) -> dict[str, object] | None:
        """The JSON body as a dict, or None when it cannot be queried (IoT Hub rules:
        contentType application/json, contentEncoding UTF-8/16/32, a JSON object)."""
        if not self._body_parsed:
            self._body = self._parse_body()
            self._body_parsed = True
        return self._body

    def _parse_body(self) -> dict[str, object] | None:
        content_type = self._system(SystemProperty.CONTENT_TYPE)
        if content_type is UNDEFINED or content_type.partition(";")[0].strip().lower() != _JSON_CONTENT_TYPE:
            return None
        encoding = self._system(SystemProperty.CONTENT_ENCODING)
        codec = _JSON_ENCODINGS.get("utf-8" if encoding is UNDEFINED else encoding.strip().lower())
        if codec is None:
            return None
        try:
            parsed = json.loads(self.message.body.decode(codec).lstrip("\ufeff"), parse_int=float)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            return None
        return parsed if type(parsed) is dict else None

    def _system(self, name: str) -> str | Undefined:
        value = self.system_properties.get(name)
        return value if value is not None else self.system_property(name.lower())


def _fold(properties: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in properties.items()}


# --- $body paths (edgeHub JsonPath.g4: name ('[' digits ']')? ('.' name ...)*) ---

_PATH_SEGMENT: Final = re.compile(r"([^()<>@,;:\\\"/\[\]?={}.\s]+)(?:\[([0-9]+)\])?")

PathStep: TypeAlias = tuple[str, int | None]


def parse_body_path(text: str) -> tuple[PathStep, ...] | None:
    """``a.b[0].c`` → (("a", None), ("b", 0), ("c", None)); None if not a supported path."""
    steps: list[PathStep] = []
    for segment in text.split("."):
        found = _PATH_SEGMENT.fullmatch(segment)
        if found is None:
            return None
        index = found.group(2)
        steps.append((found.group(1), None if index is None else int(index)))
    return tuple(steps)


def read_body_path(body: dict[str, object] | None, steps: tuple[PathStep, ...]) -> Value:
    """The value at ``steps`` in ``body``; UNDEFINED when absent or the body is not JSON."""
    current: object = body
    for name, index in steps:
        if type(current) is not dict:
            return UNDEFINED
        current = current.get(name, UNDEFINED)
        if index is not None:
            if type(current) is not list or index >= len(current):
                return UNDEFINED
            current = current[index]
    if type(current) is float and current != current:  # NaN from a JSON 'NaN' literal
        return UNDEFINED
    return current


# --- comparisons across types ($body values) ---

_RANK: Final[dict[type, int]] = {bool: 1, float: 2, str: 3, type(None): 4}
"""edgeHub's QueryValueType order; values of different ranks are never equal."""


def compare_any(operator: str, left: Value, right: Value) -> bool | Undefined:
    """``left <operator> right`` when either side may be a $body value of any type.

    Same types compare as usual. Different types are unequal (= false, != true, as edgeHub);
    ordering them is undefined (edgeHub orders by type, so '40' > 30 would be true there).
    JSON objects/arrays and undefined give undefined (edgeHub maps objects to undefined).
    """
    left_rank = _RANK.get(type(left))
    right_rank = _RANK.get(type(right))
    if left_rank is None or right_rank is None:
        return UNDEFINED
    if left_rank != right_rank:
        if operator == "=":
            return False
        return True if operator in ("!=", "<>") else UNDEFINED
    if left_rank == _RANK[type(None)]:
        return operator in ("=", "<=", ">=")
    return COMPARE[operator](left, right)


# Operands share one ordered type (str, float or bool): the callers check it.


def _eq(a: object, b: object) -> bool:
    return a == b


def _ne(a: object, b: object) -> bool:
    return a != b


def _lt(a: Any, b: Any) -> bool:
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return bool(a <= b)


def _gt(a: Any, b: Any) -> bool:
    return bool(a > b)


def _ge(a: Any, b: Any) -> bool:
    return bool(a >= b)


COMPARE: Final = {"=": _eq, "!=": _ne, "<>": _ne, "<": _lt, "<=": _le, ">": _gt, ">=": _ge}


# --- numbers ---

# .NET double.TryParse(NumberStyles.Any, InvariantCulture), which AS_NUMBER uses in edgeHub:
# surrounding white space, a leading or trailing sign or parentheses, ',' group
# separators, a decimal point, an exponent; "Infinity" and "NaN" (NaN is undefined here).
_DOTNET_NUMBER: Final = re.compile(
    r"[\t-\r ]*(?P<open>\()?(?P<sign>[+-])?"
    r"(?P<int>[0-9][0-9,]*)?(?:\.(?P<frac>[0-9]*))?(?:[Ee](?P<exp>[+-]?[0-9]+))?"
    r"(?P<tail>[+-])?(?P<close>\))?[\t-\r ]*"
)
_DOTNET_INFINITY: Final = re.compile(
    r"[\t-\r ]*(?P<sign>[+-])?(?:[Ii][Nn][Ff][Ii][Nn][Ii][Tt][Yy]|\u221e)[\t-\r ]*"
)


_PLAIN_NUMBER: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def parse_number(text: str) -> float | Undefined:
    """A string as a number the way edgeHub's AS_NUMBER reads it, or UNDEFINED."""
    if _PLAIN_NUMBER.fullmatch(text):  # the common case, cheaply
        return float(text)
    found = _DOTNET_NUMBER.fullmatch(text)
    if found is None:
        infinity = _DOTNET_INFINITY.fullmatch(text)
        if infinity is None:
            return UNDEFINED
        return -math.inf if infinity.group("sign") == "-" else math.inf
    digits, fraction = found.group("int") or "", found.group("frac") or ""
    signs = (found.group("sign"), found.group("tail"))
    if not (digits or fraction) or (found.group("open") is None) != (found.group("close") is None):
        return UNDEFINED
    parenthesized = found.group("open") is not None
    if (signs[0] is not None and signs[1] is not None) or (parenthesized and signs != (None, None)):
        return UNDEFINED
    negative = "-" in signs or parenthesized
    value = float(f"{digits.replace(',', '') or '0'}.{fraction or '0'}e{found.group('exp') or '0'}")
    return -value if negative else value


def number_or_undefined(value: float) -> float | Undefined:
    """NaN is undefined (edgeHub uses double.NaN as the undefined number)."""
    return UNDEFINED if value != value else value

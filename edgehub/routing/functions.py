"""The built-in functions of route conditions: their signatures and run-time behaviour.

Owns the function table (edgeHub Routing.Core query/builtins plus IoT Hub's IS_OBJECT,
IS_ARRAY and IS_PRIMITIVE); it must not parse or compile conditions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from edgehub.routing.values import (
    SUPPORTED_BY_ANY,
    UNDEFINED,
    Undefined,
    Value,
    ValueType,
    number_or_undefined,
    parse_number,
)

S: Final = ValueType.STRING
N: Final = ValueType.NUMBER
B: Final = ValueType.BOOL


@dataclass(frozen=True, slots=True)
class Overload:
    """One accepted argument list; ``parameters`` None means any ``arity`` arguments."""

    parameters: tuple[ValueType, ...] | None
    result: ValueType
    run: Callable[..., Value]
    arity: int = 1
    variadic: bool = False
    """The last parameter repeats; at least ``len(parameters) - 1`` arguments."""
    accepts_any: bool = True
    """A $body value (type ANY) may stand for a parameter (edgeHub IsQueryValueSupported)."""

    def accepts(self, arguments: tuple[ValueType, ...]) -> bool:
        parameters = self.parameters
        if parameters is None:
            return len(arguments) == self.arity
        if self.variadic:
            fixed = len(parameters) - 1
            if len(arguments) < fixed:
                return False
            parameters = parameters[:fixed] + parameters[fixed:] * (len(arguments) - fixed)
        if len(arguments) != len(parameters):
            return False
        return all(
            given is wanted or (self.accepts_any and given is ValueType.ANY and wanted in SUPPORTED_BY_ANY)
            for given, wanted in zip(arguments, parameters, strict=True)
        )


def resolve(name: str, arguments: tuple[ValueType, ...]) -> Overload | Undefined | None:
    """The first overload of ``name`` accepting ``arguments`` (edgeHub tries them in order);
    None if none does; UNDEFINED if there is no such function."""
    overloads = BUILTINS.get(name.lower())
    if overloads is None:
        return UNDEFINED
    return next((overload for overload in overloads if overload.accepts(arguments)), None)


def signatures(name: str) -> list[str]:
    """Human-readable accepted argument lists, for error messages."""
    texts = []
    for overload in BUILTINS.get(name.lower(), ()):
        if overload.parameters is None:
            texts.append(", ".join(["any"] * overload.arity))
        else:
            names = [parameter.value for parameter in overload.parameters]
            if overload.variadic:
                names[-1] += ", ..."
            texts.append(", ".join(names))
    return [f"{name.upper()}({text})" for text in texts]


# --- mathematical functions: a number argument, or undefined (C# System.Math semantics) ---


def _math(operation: Callable[[float], float]) -> Callable[[Value], Value]:
    def run(value: Value) -> Value:
        if type(value) is not float:
            return UNDEFINED
        return number_or_undefined(operation(value))

    return run


def _exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _power(base: Value, exponent: Value) -> Value:
    if type(base) is not float or type(exponent) is not float:
        return UNDEFINED
    return number_or_undefined(_pow(base, exponent))


def _pow(base: float, exponent: float) -> float:
    # Math.Pow returns ±Infinity on overflow and for 0 ** negative, NaN on a domain error.
    odd = exponent.is_integer() and exponent % 2 == 1
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return -math.inf if base < 0 and odd else math.inf
    except ValueError:
        if base == 0:
            return math.copysign(math.inf, base) if odd else math.inf
        return math.nan


def _whole(operation: Callable[[float], int]) -> Callable[[float], float]:
    # Math.Ceiling/Floor keep infinities and the sign of a zero result (ceiling(-0.5) is -0).
    return lambda value: value if math.isinf(value) else math.copysign(float(operation(value)), value)


def _sign(value: float) -> float:
    return float((value > 0) - (value < 0))


def _sqrt(value: float) -> float:
    return math.sqrt(value) if value >= 0 else math.nan


# --- type checking functions ---


def _is_bool(value: Value) -> Value:
    return UNDEFINED if value is UNDEFINED else type(value) is bool


def _is_number(value: Value) -> bool:
    return type(value) is float and math.isfinite(value)


def _is_primitive(value: Value) -> bool:
    return type(value) in (str, float, bool) or value is None


def _as_number(value: Value) -> Value:
    if type(value) is str:
        return parse_number(value)
    return value if type(value) is float else UNDEFINED


# --- string functions: ordinal, as edgeHub (lengths and indexes count code points) ---


def _concat(*values: Value) -> Value:
    if all(type(value) is str for value in values):
        return "".join(str(value) for value in values)
    return UNDEFINED


def _string(operation: Callable[[str], Value]) -> Callable[[Value], Value]:
    def run(value: Value) -> Value:
        return operation(value) if type(value) is str else UNDEFINED

    return run


def _two_strings(operation: Callable[[str, str], Value]) -> Callable[[Value, Value], Value]:
    def run(text: Value, fragment: Value) -> Value:
        if type(text) is not str or type(fragment) is not str:
            return UNDEFINED
        return operation(text, fragment)

    return run


def _substring_from(text: Value, start: Value) -> Value:
    # edgeHub: 0 <= start <= length of text; a fractional start is truncated.
    if type(text) is not str or type(start) is not float or not 0 <= start <= len(text):
        return UNDEFINED
    return text[int(start) :]


def _substring(text: Value, start: Value, length: Value) -> Value:
    # edgeHub: 0 <= start < length of text, 0 <= length <= length of text - start.
    if type(text) is not str or type(start) is not float or type(length) is not float:
        return UNDEFINED
    if not (0 <= start < len(text) and 0 <= length <= len(text) - start):
        return UNDEFINED
    return text[int(start) : int(start) + int(length)]


def _constant(value: Value) -> Callable[[Value], Value]:
    return lambda _: value


def _math_builtin(operation: Callable[[float], float]) -> tuple[Overload, ...]:
    return (Overload((N,), N, _math(operation)),)


BUILTINS: Final[dict[str, tuple[Overload, ...]]] = {
    # mathematical
    "abs": _math_builtin(abs),
    "exp": _math_builtin(_exp),
    "power": (Overload((N, N), N, _power),),
    "square": _math_builtin(lambda value: _pow(value, 2.0)),
    "ceiling": _math_builtin(_whole(math.ceil)),
    "floor": _math_builtin(_whole(math.floor)),
    "sign": _math_builtin(_sign),
    "sqrt": _math_builtin(_sqrt),
    # type checking; IS_OBJECT, IS_ARRAY, IS_PRIMITIVE are IoT Hub's (edgeHub lacks them)
    "as_number": (Overload((S,), N, _as_number), Overload((N,), N, _as_number, accepts_any=False)),
    "is_bool": (Overload((B,), B, _is_bool), Overload(None, B, _constant(False))),
    "is_defined": (Overload(None, B, lambda value: value is not UNDEFINED),),
    "is_null": (Overload(None, B, lambda value: value is None),),
    "is_number": (Overload(None, B, _is_number),),
    "is_string": (Overload(None, B, lambda value: type(value) is str),),
    "is_object": (Overload(None, B, lambda value: type(value) is dict),),
    "is_array": (Overload(None, B, lambda value: type(value) is list),),
    "is_primitive": (Overload(None, B, _is_primitive),),
    # strings
    "concat": (Overload((S, S, S), S, _concat, variadic=True),),
    "length": (Overload((S,), N, _string(lambda text: float(len(text)))),),
    "lower": (Overload((S,), S, _string(str.lower)),),
    "upper": (Overload((S,), S, _string(str.upper)),),
    "substring": (Overload((S, N), S, _substring_from), Overload((S, N, N), S, _substring)),
    "index_of": (Overload((S, S), N, _two_strings(lambda text, fragment: float(text.find(fragment)))),),
    "starts_with": (Overload((S, S), B, _two_strings(str.startswith)),),
    "ends_with": (Overload((S, S), B, _two_strings(str.endswith)),),
    "contains": (Overload((S, S), B, _two_strings(lambda text, fragment: fragment in text)),),
}
"""Lower-cased name → overloads, tried in order (as edgeHub's BuiltinExecutors)."""

"""The typed values and operators a compiled route condition is made of: constants folded at
compile time, closures otherwise, with edgeHub's three-valued semantics (undefined propagates,
Kleene AND/OR, IEEE 754 arithmetic as C#). Used by condition.py's compiler; knows no syntax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from edgehub.routing.values import (
    COMPARE,
    UNDEFINED,
    MessageView,
    Value,
    ValueType,
    compare_any,
)

Evaluator = Callable[[MessageView], Value]

_TYPED_COMPARISONS: Final = frozenset({ValueType.STRING, ValueType.NUMBER, ValueType.BOOL})


@dataclass(frozen=True, slots=True)
class Compiled:
    """A typed expression: a closure, or (``run`` None) a constant ``value``."""

    type: ValueType
    run: Evaluator | None = None
    value: Value = UNDEFINED

    def evaluator(self) -> Evaluator:
        if self.run is not None:
            return self.run
        value = self.value
        return lambda _: value


def truth(value: Value) -> Compiled:
    """A constant result of a comparison or logical operator: typed bool even if undefined."""
    return Compiled(ValueType.BOOL, None, value)


_LITERAL_TYPES: Final[dict[type, ValueType]] = {
    str: ValueType.STRING,
    float: ValueType.NUMBER,
    bool: ValueType.BOOL,
    type(None): ValueType.NULL,
    type(UNDEFINED): ValueType.UNDEFINED,
}


def literal(value: Value) -> Compiled:
    return Compiled(_LITERAL_TYPES[type(value)], None, value)


def fold(result: ValueType, operation: Callable[..., Value], *operands: Compiled) -> Compiled:
    """Apply ``operation`` to the operands' values, at compile time if they are constants."""
    if all(operand.run is None for operand in operands):
        return Compiled(result, None, operation(*(operand.value for operand in operands)))
    if len(operands) == 1:
        only = operands[0].evaluator()
        return Compiled(result, lambda view: operation(only(view)))
    if len(operands) == 2:  # the common binary case, without *args
        first, second = operands[0].evaluator(), operands[1].evaluator()
        return Compiled(result, lambda view: operation(first(view), second(view)))
    evaluators = [operand.evaluator() for operand in operands]
    return Compiled(result, lambda view: operation(*[evaluate(view) for evaluate in evaluators]))


# --- operators (values are checked at run time too: $body values have any type) ---


def negate(value: Value) -> Value:
    return -value if type(value) is float else UNDEFINED


def logical_not(value: Value) -> Value:
    if value is True:
        return False
    return True if value is False else UNDEFINED


def _number(value: float) -> Value:
    return UNDEFINED if value != value else value  # NaN is undefined


def _add(left: Value, right: Value) -> Value:
    if type(left) is not float or type(right) is not float:
        return UNDEFINED
    return _number(left + right)


def _subtract(left: Value, right: Value) -> Value:
    if type(left) is not float or type(right) is not float:
        return UNDEFINED
    return _number(left - right)


def _multiply(left: Value, right: Value) -> Value:
    if type(left) is not float or type(right) is not float:
        return UNDEFINED
    return _number(left * right)


def _divide(left: Value, right: Value) -> Value:
    # IEEE 754 as C#: x/0 is ±Infinity, 0/0 is NaN (undefined).
    if type(left) is not float or type(right) is not float:
        return UNDEFINED
    if right == 0:
        return UNDEFINED if left == 0 else math.copysign(math.inf, left) * math.copysign(1.0, right)
    return _number(left / right)


def _modulo(left: Value, right: Value) -> Value:
    # C# % on doubles truncates (fmod): -7 % 3 is -1; x % 0 and inf % y are NaN.
    if type(left) is not float or type(right) is not float:
        return UNDEFINED
    try:
        return _number(math.fmod(left, right))
    except ValueError:
        return UNDEFINED


def concat(left: Value, right: Value) -> Value:
    if type(left) is not str or type(right) is not str:
        return UNDEFINED
    return left + right


ARITHMETIC: Final[dict[str, Callable[[Value, Value], Value]]] = {
    "+": _add,
    "-": _subtract,
    "*": _multiply,
    "/": _divide,
    "%": _modulo,
}


_MIRRORED: Final = {"=": "=", "!=": "!=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def comparison(operator: str, left: Compiled, right: Compiled) -> Compiled:
    if left.type is not right.type or left.type not in _TYPED_COMPARISONS:
        if left.type is ValueType.NULL is right.type:
            return truth(operator in ("=", "<=", ">="))  # null = null is true
        if left.type is ValueType.UNDEFINED is right.type:
            return truth(UNDEFINED)
        return fold(ValueType.BOOL, lambda a, b: compare_any(operator, a, b), left, right)
    # Same string, number or bool types: undefined if either side is, else compare
    # (strings ordinally, as edgeHub).
    if left.run is None and right.run is None:
        compare = COMPARE[operator]
        undefined = left.value is UNDEFINED or right.value is UNDEFINED
        return truth(UNDEFINED if undefined else compare(left.value, right.value))
    if left.run is None:
        return _against_constant(_MIRRORED[operator], right.evaluator(), left.value)
    if right.run is None:
        return _against_constant(operator, left.run, right.value)
    return Compiled(ValueType.BOOL, _typed_compare(COMPARE[operator], left.run, right.run))


def _typed_compare(compare: Callable[[Value, Value], bool], first: Evaluator, second: Evaluator) -> Evaluator:
    def run(view: MessageView) -> Value:
        a = first(view)
        if a is UNDEFINED:
            return UNDEFINED
        b = second(view)
        return UNDEFINED if b is UNDEFINED else compare(a, b)

    return run


def _against_constant(operator: str, evaluate: Evaluator, constant: Value) -> Compiled:
    """``value <operator> constant``: the common `property = 'text'` case, one closure."""
    if constant is UNDEFINED:
        return truth(UNDEFINED)
    if operator == "=":

        def equal(view: MessageView) -> Value:
            value = evaluate(view)
            return UNDEFINED if value is UNDEFINED else value == constant

        return Compiled(ValueType.BOOL, equal)
    compare = COMPARE[operator]

    def run(view: MessageView) -> Value:
        value = evaluate(view)
        return UNDEFINED if value is UNDEFINED else compare(value, constant)

    return Compiled(ValueType.BOOL, run)


def coalesce(left: Compiled, right: Compiled) -> Compiled:
    # edgeHub: left ?? right is left when it is defined, else right.
    static = left.type if left.type is right.type else ValueType.ANY
    if left.run is None:
        chosen = right if left.value is UNDEFINED else left
        return Compiled(static, chosen.run, chosen.value)
    first, second = left.run, right.evaluator()

    def run(view: MessageView) -> Value:
        value = first(view)
        return value if value is not UNDEFINED else second(view)

    return Compiled(static, run)


def logical_and(operands: list[Compiled]) -> Compiled:
    # Kleene logic: false wins, then undefined (edgeHub Bool &); evaluation stops at false.
    if any(operand.run is None and operand.value is False for operand in operands):
        return truth(False)
    live = [operand for operand in operands if not (operand.run is None and operand.value is True)]
    if not live:
        return truth(True)
    if all(operand.run is None for operand in live):
        return truth(UNDEFINED)  # only undefined constants are left
    return Compiled(ValueType.BOOL, _all([operand.evaluator() for operand in live]))


def _all(evaluators: list[Evaluator]) -> Evaluator:
    def run(view: MessageView) -> Value:
        result: Value = True
        for evaluate in evaluators:
            value = evaluate(view)
            if value is False:
                return False
            if value is not True:
                result = UNDEFINED
        return result

    return run


def logical_or(operands: list[Compiled]) -> Compiled:
    # Kleene logic: true wins, then undefined (edgeHub Bool |); evaluation stops at true.
    if any(operand.run is None and operand.value is True for operand in operands):
        return truth(True)
    live = [operand for operand in operands if not (operand.run is None and operand.value is False)]
    if not live:
        return truth(False)
    if all(operand.run is None for operand in live):
        return truth(UNDEFINED)  # only undefined constants are left
    evaluators = [operand.evaluator() for operand in live]

    def run(view: MessageView) -> Value:
        result: Value = False
        for evaluate in evaluators:
            value = evaluate(view)
            if value is True:
                return True
            if value is not False:
                result = UNDEFINED
        return result

    return Compiled(ValueType.BOOL, run)

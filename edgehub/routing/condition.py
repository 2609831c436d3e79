"""Compiles a condition syntax tree once into Python closures: type checks, folds constants.

Owns the static typing and three-valued semantics of edgeHub's RouteCompiler (operand
types are checked when the route is loaded, not per message); it must not parse text
(parser.py) or choose endpoints (router.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from edgehub.errors import RouteSyntaxError
from edgehub.message import Message
from edgehub.routing import functions
from edgehub.routing.parser import parse_expression
from edgehub.routing.syntax import (
    AppProperty,
    Binary,
    BodyPath,
    Call,
    Expression,
    Literal,
    Logical,
    SystemPropertyRef,
    Unary,
    to_text,
)
from edgehub.routing.values import (
    COMPARE,
    SUPPORTED_BY_ANY,
    UNDEFINED,
    MessageView,
    Undefined,
    Value,
    ValueType,
    compare_any,
    parse_body_path,
    read_body_path,
)

Evaluator = Callable[[MessageView], Value]

_NUMERIC: Final = frozenset({ValueType.NUMBER, ValueType.ANY})
_TEXTUAL: Final = frozenset({ValueType.STRING, ValueType.ANY})
_LOGICAL_OPERANDS: Final = frozenset({ValueType.BOOL, ValueType.NULL, ValueType.UNDEFINED, ValueType.ANY})
_TYPED_COMPARISONS: Final = frozenset({ValueType.STRING, ValueType.NUMBER, ValueType.BOOL})
_STRING_NUMBER: Final = frozenset({ValueType.STRING, ValueType.NUMBER})


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A typed expression: a closure, or (``run`` None) a constant ``value``."""

    type: ValueType
    run: Evaluator | None = None
    value: Value = UNDEFINED

    def evaluator(self) -> Evaluator:
        if self.run is not None:
            return self.run
        value = self.value
        return lambda _: value


def _truth(value: Value) -> _Compiled:
    """A constant result of a comparison or logical operator: typed bool even if undefined."""
    return _Compiled(ValueType.BOOL, None, value)


_LITERAL_TYPES: Final[dict[type, ValueType]] = {
    str: ValueType.STRING,
    float: ValueType.NUMBER,
    bool: ValueType.BOOL,
    type(None): ValueType.NULL,
    type(UNDEFINED): ValueType.UNDEFINED,
}


def _literal(value: Value) -> _Compiled:
    return _Compiled(_LITERAL_TYPES[type(value)], None, value)


class RouteCondition:
    """A compiled WHERE clause. A message matches only if the condition is true:
    false, null and undefined all mean no match (IoT Hub / edgeHub)."""

    __slots__ = ("_compiled", "evaluator", "expression", "text", "uses_body")

    def __init__(
        self, expression: Expression, text: str = "", *,
        source: str | None = None, twin_changes: bool = False,
    ) -> None:
        """Type-check and compile ``expression``; ``source`` is the text its positions
        refer to (the whole route), ``text`` the condition as written (default: printed).
        ``twin_changes``: the route takes ``/twinChangeNotifications``, so TWIN_CHANGE_INCLUDES
        is allowed (edgeHub: only there)."""
        self.expression = expression
        self.text = text or to_text(expression)
        compiler = _Compiler(self.text if source is None else source, twin_changes=twin_changes)
        self._compiled = compiler.compile(expression)
        self.uses_body = compiler.uses_body
        self.evaluator: Evaluator = self._compiled.evaluator()
        """The compiled closure: MessageView → value (a match only when it is True)."""

    @property
    def is_constant(self) -> bool:
        """True when the value does not depend on the message (``WHERE true``, ``1 = 2``)."""
        return self._compiled.run is None

    def value(self, message: Message) -> Value:
        """The condition's three-valued result (True, False, None for null, UNDEFINED, ...)."""
        return self.evaluator(MessageView(message))

    def matches(self, message: Message) -> bool:
        return self.evaluator(MessageView(message)) is True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteCondition) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(self.expression)

    def __repr__(self) -> str:
        return f"RouteCondition({self.text!r})"


def parse_condition(text: str) -> RouteCondition:
    """Parse and compile a condition on its own; raises RouteSyntaxError."""
    return RouteCondition(parse_expression(text), text.strip(), source=text)


class _Compiler:
    def __init__(self, source: str, *, twin_changes: bool = False) -> None:
        self.source = source
        self.twin_changes = twin_changes
        self.uses_body = False

    def fail(self, reason: str, position: int) -> RouteSyntaxError:
        return RouteSyntaxError(reason, position, self.source)

    def compile(self, node: Expression) -> _Compiled:
        match node:
            case Literal(value=value):
                return _literal(value)
            case AppProperty(name=name):
                return _Compiled(ValueType.STRING, _application_property(name))
            case SystemPropertyRef():
                return _system_property(node)
            case BodyPath():
                return self.body_path(node)
            case Unary():
                return self.unary(node)
            case Binary():
                return self.binary(node)
            case Logical():
                return self.logical(node)
            case Call():
                return self.call(node)

    def body_path(self, node: BodyPath) -> _Compiled:
        steps = parse_body_path(node.text)
        if steps is None:
            reason = f"invalid $body path '{node.text}' (expected names, '.' and [index])"
            raise self.fail(reason, node.position)
        self.uses_body = True

        def run(view: MessageView) -> Value:
            return read_body_path(view.body(), steps)

        if node.escaped or "[" in node.text:
            return _Compiled(ValueType.ANY, run)
        # edgeHub: an application property literally named "$body.x" wins over the body.
        return _Compiled(ValueType.ANY, _property_or(_application_property("$body." + node.text), run))

    def unary(self, node: Unary) -> _Compiled:
        operand = self.compile(node.operand)
        if node.operator == "-":
            if operand.type not in _NUMERIC:
                raise self.operand_error(node, operand.type, "number")
            return _fold(operand.type, _negate, operand)
        if operand.type is ValueType.NULL:
            return _truth(True)  # NOT null is true in edgeHub
        if operand.type not in (ValueType.BOOL, ValueType.ANY):
            raise self.operand_error(node, operand.type, "bool")
        return _fold(ValueType.BOOL, _not, operand)

    def operand_error(self, node: Unary | Logical, given: ValueType, expected: str) -> RouteSyntaxError:
        reason = f"invalid operand of {node.operator}: have {given.value}, expected {expected}"
        if node.operator == "NOT" and given in _STRING_NUMBER:
            reason += " (NOT binds tighter than comparisons, as in edgeHub: write NOT (a = b))"
        return self.fail(reason, node.position)

    def binary(self, node: Binary) -> _Compiled:
        left, right = self.compile(node.left), self.compile(node.right)
        operator = node.operator
        if operator in _ARITHMETIC:
            return self.arithmetic(node, left, right, _NUMERIC, ValueType.NUMBER)
        if operator == "||":
            return self.arithmetic(node, left, right, _TEXTUAL, ValueType.STRING)
        if not _comparable(left.type, right.type):
            raise self.operands_error(node, left.type, right.type, f"{left.type.value} and {left.type.value}")
        if operator == "??":
            return _coalesce(left, right)
        return _comparison(operator, left, right)

    def arithmetic(
        self,
        node: Binary,
        left: _Compiled,
        right: _Compiled,
        accepted: frozenset[ValueType],
        result: ValueType,
    ) -> _Compiled:
        if left.type not in accepted or right.type not in accepted:
            expected = f"{result.value} and {result.value}"
            raise self.operands_error(node, left.type, right.type, expected)
        both = result if left.type is right.type is result else ValueType.ANY
        return _fold(both, _ARITHMETIC.get(node.operator, _concat), left, right)

    def operands_error(
        self, node: Binary, left: ValueType, right: ValueType, expected: str
    ) -> RouteSyntaxError:
        given = f"{left.value} and {right.value}"
        reason = f"invalid operands of '{node.operator}': have {given}, expected {expected}"
        if {left, right} == _STRING_NUMBER:
            reason += " (properties are strings: compare numbers with AS_NUMBER(property))"
        return self.fail(reason, node.position)

    def logical(self, node: Logical) -> _Compiled:
        operands = [self.compile(operand) for operand in node.operands]
        for operand in operands:
            if operand.type not in _LOGICAL_OPERANDS:
                raise self.operand_error(node, operand.type, "bool")
        if node.operator == "AND":
            # edgeHub: anything AND null is null (a non-match, and NOT of it is true)
            if any(operand.type is ValueType.NULL for operand in operands):
                return _Compiled(ValueType.NULL, None, None)
            return _and(operands)
        remaining = [operand for operand in operands if operand.type is not ValueType.NULL]
        if not remaining:
            return _Compiled(ValueType.NULL, None, None)
        return _or(remaining)  # edgeHub: null OR x is x

    def call(self, node: Call) -> _Compiled:
        if self.twin_changes and node.name.lower() == TWIN_CHANGE_INCLUDES:
            return self.twin_change_includes(node)
        arguments = [self.compile(argument) for argument in node.arguments]
        types = tuple(argument.type for argument in arguments)
        overload = functions.resolve(node.name, types)
        if overload is UNDEFINED:
            twin = node.name.lower() == "twin_change_includes"
            hint = " (twin change notifications are not routed here)" if twin else ""
            raise self.fail(f"unknown function '{node.name}'{hint}", node.position)
        if overload is None:
            given = f"{node.name.upper()}({', '.join(type_.value for type_ in types)})"
            accepted = " or ".join(functions.signatures(node.name))
            raise self.fail(f"invalid arguments {given}; expected {accepted}", node.position)
        return _fold(overload.result, overload.run, *arguments)

    def twin_change_includes(self, node: Call) -> _Compiled:
        """``TWIN_CHANGE_INCLUDES(properties.reported.a.b)``: true when the notification's body
        holds the path with a non-null value, false when it does not, undefined when the body
        is not JSON (edgeHub Routing.Core TwinChangeIncludes; TwinChangeJsonPathValidator)."""
        argument = node.arguments[0] if len(node.arguments) == 1 else None
        if not isinstance(argument, AppProperty):  # edgeHub takes the argument's text as a JSON path
            reason = f"{node.name.upper()} takes one path such as properties.reported.name"
            raise self.fail(reason, node.position)
        path = argument.name
        steps = parse_body_path(path)
        if steps is None or any(index is not None for _, index in steps) or not path.lower().startswith(
            TWIN_CHANGE_PREFIXES
        ):
            prefixes = ", ".join(f"'{prefix}'" for prefix in TWIN_CHANGE_PREFIXES)
            raise self.fail(f"'{path}' is not supported. Supported prefixes: {prefixes}", node.position)
        self.uses_body = True

        def run(view: MessageView) -> Value:
            body = view.body()
            if body is None:
                return UNDEFINED
            value = read_body_path(body, steps)
            return value is not UNDEFINED and value is not None

        return _Compiled(ValueType.BOOL, run)


TWIN_CHANGE_INCLUDES: Final = "twin_change_includes"
TWIN_CHANGE_PREFIXES: Final = ("properties.reported.", "properties.desired.", "tags.")
"""Paths TWIN_CHANGE_INCLUDES accepts (edgeHub TwinChangeJsonPathValidator, case-insensitive)."""


def _comparable(left: ValueType, right: ValueType) -> bool:
    # edgeHub CheckOperands: the same type, or a $body value against a supported type.
    return (
        left is right
        or (left is ValueType.ANY and right in SUPPORTED_BY_ANY)
        or (right is ValueType.ANY and left in SUPPORTED_BY_ANY)
    )


def _fold(result: ValueType, operation: Callable[..., Value], *operands: _Compiled) -> _Compiled:
    """Apply ``operation`` to the operands' values, at compile time if they are constants."""
    if all(operand.run is None for operand in operands):
        return _Compiled(result, None, operation(*(operand.value for operand in operands)))
    if len(operands) == 1:
        only = operands[0].evaluator()
        return _Compiled(result, lambda view: operation(only(view)))
    if len(operands) == 2:  # the common binary case, without *args
        first, second = operands[0].evaluator(), operands[1].evaluator()
        return _Compiled(result, lambda view: operation(first(view), second(view)))
    evaluators = [operand.evaluator() for operand in operands]
    return _Compiled(result, lambda view: operation(*[evaluate(view) for evaluate in evaluators]))


# --- property access ---


def _application_property(name: str) -> Evaluator:
    folded = name.lower()

    def run(view: MessageView) -> Value:
        value = view.properties.get(name)
        return value if value is not None else view.application_property(folded)

    return run


def _system_only(name: str) -> Evaluator:
    folded = name.lower()

    def run(view: MessageView) -> Value:
        value = view.system_properties.get(name)
        return value if value is not None else view.system_property(folded)

    return run


def _property_or(first: Evaluator, otherwise: Evaluator) -> Evaluator:
    def run(view: MessageView) -> Value:
        value = first(view)
        return value if value is not UNDEFINED else otherwise(view)

    return run


def _system_property(node: SystemPropertyRef) -> _Compiled:
    # $name: system property `name` (edgehub.message.SystemProperty keys, case-insensitive);
    # edgeHub lets an application property literally named "$name" win unless written {$name}.
    if "[" in node.name or "]" in node.name:
        return _literal(UNDEFINED)  # edgeHub: not a property name
    system = _system_only(node.name)
    if node.escaped:
        return _Compiled(ValueType.STRING, system)
    name, folded, shadow = node.name, node.name.lower(), "$" + node.name
    shadow_folded = shadow.lower()

    def run(view: MessageView) -> Value:
        value: str | Undefined | None = view.properties.get(shadow)
        if value is None:
            value = view.dollar_property(shadow_folded)
            if value is UNDEFINED:
                value = view.system_properties.get(name)
                if value is None:
                    return view.system_property(folded)
        return value

    return _Compiled(ValueType.STRING, run)


# --- operators (values are checked at run time too: $body values have any type) ---


def _negate(value: Value) -> Value:
    return -value if type(value) is float else UNDEFINED


def _not(value: Value) -> Value:
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


def _concat(left: Value, right: Value) -> Value:
    if type(left) is not str or type(right) is not str:
        return UNDEFINED
    return left + right


_ARITHMETIC: Final[dict[str, Callable[[Value, Value], Value]]] = {
    "+": _add,
    "-": _subtract,
    "*": _multiply,
    "/": _divide,
    "%": _modulo,
}


_MIRRORED: Final = {"=": "=", "!=": "!=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _comparison(operator: str, left: _Compiled, right: _Compiled) -> _Compiled:
    if left.type is not right.type or left.type not in _TYPED_COMPARISONS:
        if left.type is ValueType.NULL is right.type:
            return _truth(operator in ("=", "<=", ">="))  # null = null is true
        if left.type is ValueType.UNDEFINED is right.type:
            return _truth(UNDEFINED)
        return _fold(ValueType.BOOL, lambda a, b: compare_any(operator, a, b), left, right)
    # Same string, number or bool types: undefined if either side is, else compare
    # (strings ordinally, as edgeHub).
    if left.run is None and right.run is None:
        compare = COMPARE[operator]
        undefined = left.value is UNDEFINED or right.value is UNDEFINED
        return _truth(UNDEFINED if undefined else compare(left.value, right.value))
    if left.run is None:
        return _against_constant(_MIRRORED[operator], right.evaluator(), left.value)
    if right.run is None:
        return _against_constant(operator, left.run, right.value)
    return _Compiled(ValueType.BOOL, _typed_compare(COMPARE[operator], left.run, right.run))


def _typed_compare(compare: Callable[[Value, Value], bool], first: Evaluator, second: Evaluator) -> Evaluator:
    def run(view: MessageView) -> Value:
        a = first(view)
        if a is UNDEFINED:
            return UNDEFINED
        b = second(view)
        return UNDEFINED if b is UNDEFINED else compare(a, b)

    return run


def _against_constant(operator: str, evaluate: Evaluator, constant: Value) -> _Compiled:
    """``value <operator> constant``: the common `property = 'text'` case, one closure."""
    if constant is UNDEFINED:
        return _truth(UNDEFINED)
    if operator == "=":

        def equal(view: MessageView) -> Value:
            value = evaluate(view)
            return UNDEFINED if value is UNDEFINED else value == constant

        return _Compiled(ValueType.BOOL, equal)
    compare = COMPARE[operator]

    def run(view: MessageView) -> Value:
        value = evaluate(view)
        return UNDEFINED if value is UNDEFINED else compare(value, constant)

    return _Compiled(ValueType.BOOL, run)


def _coalesce(left: _Compiled, right: _Compiled) -> _Compiled:
    # edgeHub: left ?? right is left when it is defined, else right.
    static = left.type if left.type is right.type else ValueType.ANY
    if left.run is None:
        chosen = right if left.value is UNDEFINED else left
        return _Compiled(static, chosen.run, chosen.value)
    first, second = left.run, right.evaluator()

    def run(view: MessageView) -> Value:
        value = first(view)
        return value if value is not UNDEFINED else second(view)

    return _Compiled(static, run)


def _and(operands: list[_Compiled]) -> _Compiled:
    # Kleene logic: false wins, then undefined (edgeHub Bool &); evaluation stops at false.
    if any(operand.run is None and operand.value is False for operand in operands):
        return _truth(False)
    live = [operand for operand in operands if not (operand.run is None and operand.value is True)]
    if not live:
        return _truth(True)
    if all(operand.run is None for operand in live):
        return _truth(UNDEFINED)  # only undefined constants are left
    return _Compiled(ValueType.BOOL, _all([operand.evaluator() for operand in live]))


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


def _or(operands: list[_Compiled]) -> _Compiled:
    # Kleene logic: true wins, then undefined (edgeHub Bool |); evaluation stops at true.
    if any(operand.run is None and operand.value is True for operand in operands):
        return _truth(True)
    live = [operand for operand in operands if not (operand.run is None and operand.value is False)]
    if not live:
        return _truth(False)
    if all(operand.run is None for operand in live):
        return _truth(UNDEFINED)  # only undefined constants are left
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

    return _Compiled(ValueType.BOOL, run)

"""Compiles a condition syntax tree once into Python closures: type checks, folds constants.

Owns the static typing and three-valued semantics of edgeHub's RouteCompiler (operand
types are checked when the route is loaded, not per message); it must not parse text
(parser.py) or choose endpoints (router.py); the values and operators it composes are operators.py.
"""

from __future__ import annotations

from typing import Final

from edgehub.errors import RouteSyntaxError
from edgehub.message import Message
from edgehub.routing import functions
from edgehub.routing.operators import (
    ARITHMETIC,
    Compiled,
    coalesce,
    comparison,
    concat,
    fold,
    literal,
    logical_and,
    logical_not,
    logical_or,
    negate,
    truth,
)
from edgehub.routing.operators import Evaluator as Evaluator
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
    SUPPORTED_BY_ANY,
    UNDEFINED,
    MessageView,
    Undefined,
    Value,
    ValueType,
    parse_body_path,
    read_body_path,
)

_NUMERIC: Final = frozenset({ValueType.NUMBER, ValueType.ANY})
_TEXTUAL: Final = frozenset({ValueType.STRING, ValueType.ANY})
_LOGICAL_OPERANDS: Final = frozenset({ValueType.BOOL, ValueType.NULL, ValueType.UNDEFINED, ValueType.ANY})
_TYPED_COMPARISONS: Final = frozenset({ValueType.STRING, ValueType.NUMBER, ValueType.BOOL})
_STRING_NUMBER: Final = frozenset({ValueType.STRING, ValueType.NUMBER})


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

    def compile(self, node: Expression) -> Compiled:
        match node:
            case Literal(value=value):
                return literal(value)
            case AppProperty(name=name):
                return Compiled(ValueType.STRING, _application_property(name))
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

    def body_path(self, node: BodyPath) -> Compiled:
        steps = parse_body_path(node.text)
        if steps is None:
            reason = f"invalid $body path '{node.text}' (expected names, '.' and [index])"
            raise self.fail(reason, node.position)
        self.uses_body = True

        def run(view: MessageView) -> Value:
            return read_body_path(view.body(), steps)

        if node.escaped or "[" in node.text:
            return Compiled(ValueType.ANY, run)
        # edgeHub: an application property literally named "$body.x" wins over the body.
        return Compiled(ValueType.ANY, _propertylogical_or(_application_property("$body." + node.text), run))

    def unary(self, node: Unary) -> Compiled:
        operand = self.compile(node.operand)
        if node.operator == "-":
            if operand.type not in _NUMERIC:
                raise self.operand_error(node, operand.type, "number")
            return fold(operand.type, negate, operand)
        if operand.type is ValueType.NULL:
            return truth(True)  # NOT null is true in edgeHub
        if operand.type not in (ValueType.BOOL, ValueType.ANY):
            raise self.operand_error(node, operand.type, "bool")
        return fold(ValueType.BOOL, logical_not, operand)

    def operand_error(self, node: Unary | Logical, given: ValueType, expected: str) -> RouteSyntaxError:
        reason = f"invalid operand of {node.operator}: have {given.value}, expected {expected}"
        if node.operator == "NOT" and given in _STRING_NUMBER:
            reason += " (NOT binds tighter than comparisons, as in edgeHub: write NOT (a = b))"
        return self.fail(reason, node.position)

    def binary(self, node: Binary) -> Compiled:
        left, right = self.compile(node.left), self.compile(node.right)
        operator = node.operator
        if operator in ARITHMETIC:
            return self.arithmetic(node, left, right, _NUMERIC, ValueType.NUMBER)
        if operator == "||":
            return self.arithmetic(node, left, right, _TEXTUAL, ValueType.STRING)
        if not _comparable(left.type, right.type):
            raise self.operands_error(node, left.type, right.type, f"{left.type.value} and {left.type.value}")
        if operator == "??":
            return coalesce(left, right)
        return comparison(operator, left, right)

    def arithmetic(
        self,
        node: Binary,
        left: Compiled,
        right: Compiled,
        accepted: frozenset[ValueType],
        result: ValueType,
    ) -> Compiled:
        if left.type not in accepted or right.type not in accepted:
            expected = f"{result.value} and {result.value}"
            raise self.operands_error(node, left.type, right.type, expected)
        both = result if left.type is right.type is result else ValueType.ANY
        return fold(both, ARITHMETIC.get(node.operator, concat), left, right)

    def operands_error(
        self, node: Binary, left: ValueType, right: ValueType, expected: str
    ) -> RouteSyntaxError:
        given = f"{left.value} and {right.value}"
        reason = f"invalid operands of '{node.operator}': have {given}, expected {expected}"
        if {left, right} == _STRING_NUMBER:
            reason += " (properties are strings: compare numbers with AS_NUMBER(property))"
        return self.fail(reason, node.position)

    def logical(self, node: Logical) -> Compiled:
        operands = [self.compile(operand) for operand in node.operands]
        for operand in operands:
            if operand.type not in _LOGICAL_OPERANDS:
                raise self.operand_error(node, operand.type, "bool")
        if node.operator == "AND":
            # edgeHub: anything AND null is null (a non-match, and NOT of it is true)
            if any(operand.type is ValueType.NULL for operand in operands):
                return Compiled(ValueType.NULL, None, None)
            return logical_and(operands)
        remaining = [operand for operand in operands if operand.type is not ValueType.NULL]
        if not remaining:
            return Compiled(ValueType.NULL, None, None)
        return logical_or(remaining)  # edgeHub: null OR x is x

    def call(self, node: Call) -> Compiled:
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
        return fold(overload.result, overload.run, *arguments)

    def twin_change_includes(self, node: Call) -> Compiled:
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

        return Compiled(ValueType.BOOL, run)


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


def _propertylogical_or(first: Evaluator, otherwise: Evaluator) -> Evaluator:
    def run(view: MessageView) -> Value:
        value = first(view)
        return value if value is not UNDEFINED else otherwise(view)

    return run


def _system_property(node: SystemPropertyRef) -> Compiled:
    # $name: system property `name` (edgehub.message.SystemProperty keys, case-insensitive);
    # edgeHub lets an application property literally named "$name" win unless written {$name}.
    if "[" in node.name or "]" in node.name:
        return literal(UNDEFINED)  # edgeHub: not a property name
    system = _system_only(node.name)
    if node.escaped:
        return Compiled(ValueType.STRING, system)
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

    return Compiled(ValueType.STRING, run)

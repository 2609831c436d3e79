"""The typed setting machinery under edgehub.settings: one ``Spec`` per field, text parsers and
checks that raise ValueError with a sentence a user can act on, and the frozen-dataclass glue.

Standard library only (pydantic cost the hub about 16 MiB of memory); owns no setting itself and
reads no environment: edgehub.settings declares the fields and matches variable names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from edgehub.errors import ConfigError

T = TypeVar("T")
Problem = tuple[str, str]
"""(variable, reason), as ConfigError carries them."""

Parser = Callable[[object], Any]
"""Turns a variable's text (or a value given to the constructor) into the field's value; raises
ValueError with the reason. Checks of the value itself are parsers too, chained with ``then``."""

_SPEC: Final = "edgehub.setting"


@dataclass(frozen=True, slots=True)
class Spec:
    """What a field of a settings dataclass is: its variable, how its text is read, its meaning."""

    variable: str
    parse: Parser
    description: str
    shown_default: str | None = None
    """How ``describe_settings`` shows a default that is computed or platform-dependent."""
    group: type | None = None
    """The settings dataclass of a group field (``mqttSettings``), None for a plain setting."""
    secret: bool = False
    """A problem never shows the text given (it holds a key)."""


def setting(default: T, variable: str, description: str, parse: Parser, *, shown: str | None = None,
            secret: bool = False) -> T:
    """A dataclass field read from ``variable`` by ``parse``; ``default`` is shown by ``describe_settings``
    unless ``shown`` says it better."""
    spec = Spec(variable, parse, description, shown, secret=secret)
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def group(kind: Callable[[], T], variable: str) -> T:
    """A dataclass field holding a group of settings (``mqttSettings__*``), its defaults by default."""
    spec = Spec(variable, _as_instance(kind), "", group=cast(type, kind))
    return dataclasses.field(default_factory=kind, metadata={_SPEC: spec})


def specs(cls: type | object) -> Iterator[tuple[str, Spec]]:
    """(attribute name, Spec) of every setting of a settings dataclass, in declaration order."""
    for item in dataclasses.fields(cast(Any, cls)):
        if (spec := item.metadata.get(_SPEC)) is not None:
            yield item.name, spec


def default_of(cls: type, name: str) -> object:
    """The declared default of field ``name`` (None for a default computed at construction)."""
    item = next(f for f in dataclasses.fields(cls) if f.name == name)
    return None if item.default is dataclasses.MISSING else item.default


def parse_fields(instance: object) -> list[Problem]:
    """Parse and check every setting field of a frozen dataclass in place (from ``__post_init__``);
    the problems, each named by the field's variable. A None default stays None unchecked."""
    given = {name: getattr(instance, name) for name, _ in specs(instance)}
    values, problems = parse_values(type(instance), given)
    for name, value in values.items():
        object.__setattr__(instance, name, value)
    return problems


def parse_values(cls: type, given: Mapping[str, object]) -> tuple[dict[str, Any], list[Problem]]:
    """The fields of settings dataclass ``cls`` in ``given`` parsed and checked, and the problems
    of the others, named by their variables, in declaration order."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, spec in specs(cls):
        if name not in given:
            continue
        value = given[name]
        if value is None or (spec.group is not None and isinstance(value, spec.group)):
            values[name] = value
            continue
        try:
            values[name] = spec.parse(value)
        except ValueError as exc:
            problems.append((spec.variable, str(exc) if spec.secret else shown_reason(str(exc), value)))
    return values, problems


def shown_reason(reason: str, given: object) -> str:
    """``reason`` followed by the text the user gave, so the problem shows what was read."""
    return f"{reason} (got {given!r})" if isinstance(given, str) else reason


def refuse(problems: list[Problem]) -> None:
    """Raise ConfigError when there is any problem."""
    if problems:
        raise ConfigError(problems)


# --- parsers of text (values of the right type pass through to the checks) -----------------------

_WHOLE: Final = re.compile(r"[+-]?\d+")
_TRUE: Final = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE: Final = frozenset({"0", "off", "f", "false", "n", "no"})


def as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    raise ValueError("must be true or false")


def as_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value)
    raise ValueError("must be a whole number")


def as_float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError("must be a number")


def as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("must be text")


def as_path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise ValueError("must be a path")


def choice(values: Iterable[T], aliases: Mapping[str, T] | None = None) -> Callable[[object], T]:
    """Case-insensitive parsing of an enumeration (its members, or literal strings), refusing
    anything else with the allowed values."""
    canonical = list(values)
    by_name: dict[str, T] = {str(value).lower(): value for value in canonical} | dict(aliases or {})

    def parse(value: object) -> T:
        if isinstance(value, str) and (known := by_name.get(value.strip().lower())) is not None:
            return known
        raise ValueError(f"must be one of {', '.join(map(str, canonical))}")

    return parse


def then(parse: Callable[[object], T], *checks: Callable[[T], T]) -> Callable[[object], T]:
    """``parse``, then each check of the parsed value in turn."""

    def parse_and_check(value: object) -> T:
        parsed = parse(value)
        for check in checks:
            parsed = check(parsed)
        return parsed

    return parse_and_check


def _as_instance(kind: Callable[[], T]) -> Parser:
    def parse(value: object) -> object:
        raise ValueError(f"must be a {getattr(kind, '__name__', 'group')}")

    return parse


# --- value checks ---------------------------------------------------------------------------------


def port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number between 0 and 65535")
    return value


def positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be a positive whole number")
    return value


def positive_seconds(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def existing_file(path: Path) -> Path:
    if not path.exists():
        raise ValueError("no such file")
    if not path.is_file():
        raise ValueError("not a regular file")
    if not os.access(path, os.R_OK):
        raise ValueError("the file is not readable")
    return path


def format_default(value: object) -> str:
    """A default as a user writes it in the environment (``true``, ``Amqp``, ``30``; ``—`` for none)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

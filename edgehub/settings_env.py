"""Environment variables → the fields of a settings dataclass (edgehub.settings_fields), and its
documentation table; generic over the class, so edgehub.settings only declares.

Matching: names case-insensitive, ``__`` (or .NET's ``:``) into a group field, an empty value is
the default, the first set name of a setting's aliases wins, unknown names inside a group are
problems and unknown names elsewhere are ignored. No I/O; reads only the mapping it is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from edgehub.errors import ConfigError
from edgehub.settings_fields import Problem, Spec, default_of, format_default, parse_values, refuse, specs

T = TypeVar("T")
Aliases = Mapping[str, tuple[str, ...]]


@dataclass(slots=True)
class _Given:
    """The environment sorted by setting: texts per field of the class and of each group, and the
    variable each top-level text was read from (an alias, maybe)."""

    top: dict[str, str]
    groups: dict[str, dict[str, str]]
    read_from: dict[str, str]
    problems: list[Problem]


def load(cls: type[T], environ: Mapping[str, str], aliases: Aliases) -> T:
    """An instance of settings dataclass ``cls`` from ``environ``; ConfigError listing every
    problem, each named as the user set it (``IOTEDGE_DEVICEID`` when only the alias is set).
    Checks across fields (``cls.__post_init__``) run only once every field is valid."""
    given = _sort_environment(cls, environ, aliases)
    problems = given.problems
    groups: dict[str, Any] = {}
    for name, spec in _group_specs(cls):
        assert spec.group is not None
        values, found = parse_values(spec.group, given.groups[name])
        problems.extend((f"{spec.variable}__{variable}", reason) for variable, reason in found)
        groups[name] = spec.group(**values)
    values, found = parse_values(cls, given.top)
    problems.extend((given.read_from.get(variable, variable), reason) for variable, reason in found)
    refuse(problems)
    try:
        return cls(**values, **groups)
    except ConfigError as exc:
        raise ConfigError([(given.read_from.get(v, v), reason) for v, reason in exc.problems]) from None


def describe(cls: type, aliases: Aliases) -> list[tuple[str, str, str]]:
    """``(variable, default, meaning)`` for every setting of ``cls``, in declaration order."""
    rows: list[tuple[str, str, str]] = []
    for name, spec in specs(cls):
        if spec.group is None:
            also = aliases.get(spec.variable, ())
            meaning = spec.description + (f" (also read as {', '.join(also)})" if also else "")
            rows.append((spec.variable, _shown_default(cls, name, spec), meaning))
            continue
        kind = spec.group
        rows.extend(
            (f"{spec.variable}__{inner.variable}", _shown_default(kind, inner_name, inner), inner.description)
            for inner_name, inner in specs(kind)
        )
    return rows


def _sort_environment(cls: type, environ: Mapping[str, str], aliases: Aliases) -> _Given:
    texts = {name.replace(":", "__").lower(): value for name, value in environ.items() if value}
    shown = {name.replace(":", "__").lower(): name.replace(":", "__") for name in environ}
    given = _Given({}, {name: {} for name, _ in _group_specs(cls)}, {},
                   list(_whole_group_problems(cls, environ)))
    taken: set[str] = set()
    for name, spec in specs(cls):
        if spec.group is not None:
            continue
        names = (spec.variable, *aliases.get(spec.variable, ()))
        for variable in names:
            if (text := texts.get(variable.lower())) is not None:
                given.top[name] = text
                given.read_from[spec.variable] = variable
                break
        taken.update(variable.lower() for variable in names)
    for name, spec in _group_specs(cls):
        prefix = spec.variable.lower() + "__"
        inner = {variable.lower(): attribute for attribute, variable in _inner_variables(spec)}
        for key, text in texts.items():
            if key in taken or not key.startswith(prefix):
                continue
            if (attribute := inner.get(key.removeprefix(prefix))) is not None:
                given.groups[name][attribute] = text
            else:
                known = ", ".join(_group_variables(spec))
                given.problems.append((f"{spec.variable}__{shown[key][len(prefix):]}",
                                       f"unknown setting (known: {known})"))
    return given


def _whole_group_problems(cls: type, environ: Mapping[str, str]) -> Iterator[Problem]:
    """A group name set on its own (``mqttSettings=…``) is not a setting; say which ones are."""
    groups = {spec.variable.lower(): spec for _, spec in _group_specs(cls)}
    for variable in environ:
        if (spec := groups.get(variable.lower())) is not None:
            yield variable, f"set the individual settings instead: {', '.join(_group_variables(spec))}"


def _group_specs(cls: type) -> Iterator[tuple[str, Spec]]:
    return ((name, spec) for name, spec in specs(cls) if spec.group is not None)


def _inner_variables(spec: Spec) -> Iterator[tuple[str, str]]:
    """(attribute, variable) of each setting of a group field's dataclass."""
    assert spec.group is not None
    for attribute, inner in specs(spec.group):
        yield attribute, inner.variable


def _group_variables(spec: Spec) -> list[str]:
    """``mqttSettings__enabled``, ``mqttSettings__port``... for a group field."""
    return [f"{spec.variable}__{variable}" for _, variable in _inner_variables(spec)]


def _shown_default(cls: type, name: str, spec: Spec) -> str:
    return spec.shown_default if spec.shown_default is not None else format_default(default_of(cls, name))

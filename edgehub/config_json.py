"""Reading a JSON config document with every problem located: duplicate keys, non-finite numbers,
typed accessors that report ``(JSON path, reason)`` instead of raising.

Plumbing only: what a config file means lives in edgehub.config_file. No file or environment access.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final


class NonFiniteNumberError(ValueError):
    """NaN or Infinity in the file: Python's json accepts them, JSON does not."""


def refuse_constant(name: str) -> object:
    raise NonFiniteNumberError(name)


class JsonObject(dict[str, object]):
    """A JSON object that remembers keys it saw twice (json keeps only the last silently)."""

    duplicate_keys: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, object]]) -> JsonObject:
        obj = cls(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            duplicates: dict[str, None] = {}
            for key, _ in pairs:
                if key in seen:
                    duplicates[key] = None
                seen.add(key)
            obj.duplicate_keys = tuple(duplicates)
        return obj


class Report:
    """Problems (refuse the file) and warnings (accepted, ignored), each with its location."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def problem(self, location: str, reason: str) -> None:
        self.problems.append((location, reason))

    def warn(self, location: str, reason: str) -> None:
        self.warnings.append((location, reason))


_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_$-]+")


def child_path(path: str, key: str) -> str:
    """``path.key``, or ``path["odd key"]`` when the key has dots, spaces or the like."""
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


def shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def kind_of(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return shown(value)


def json_object(value: object, path: str, report: Report) -> Mapping[str, object] | None:
    if not isinstance(value, dict):
        report.problem(path, f"must be a JSON object (got {kind_of(value)})")
        return None
    if isinstance(value, JsonObject):
        for key in value.duplicate_keys:
            report.problem(child_path(path, key), "appears more than once (JSON keeps only the last)")
    return value


def unknown_keys(obj: Mapping[str, object], path: str, known: tuple[str, ...], report: Report) -> None:
    for key in obj:
        if key not in known:
            report.problem(child_path(path, key), f"unknown key (known: {', '.join(known)})")


def json_integer(
    value: object, path: str, report: Report, *, low: int, high: int, expected: str,
) -> int | None:
    """A JSON whole number within [low, high] (7200.0 counts as 7200), else a problem and None."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
    ):
        report.problem(path, f"must be {expected} (got {kind_of(value)})")
        return None
    number = int(value)
    if not low <= number <= high:
        report.problem(path, f"must be {expected} (got {number})")
        return None
    return number


def json_text(value: object, path: str, report: Report) -> str | None:
    if not isinstance(value, str) or not value.strip():
        report.problem(path, f"must be a non-empty string (got {kind_of(value)})")
        return None
    return value

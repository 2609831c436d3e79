"""Twin property documents: IoT Hub's bounds, JSON merge patches, diffs and ``$version``.

Pure functions over decoded JSON (sans-I/O: no asyncio, no store, no protocol); a refusal
raises TwinError(400, reason) before anything is built, so a caller changes nothing then.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from edgehub.twins.port import JsonObject, TwinError

# Bounds of IoT Hub twins ("Understand and use device twins in IoT Hub", sections "Tags and
# properties format" and "Device twin size"; edgeHub's ReportedPropertiesValidator uses the
# same numbers, "taken from IoTHub"):
MAX_PROPERTIES_BYTES: Final = 32 * 1024
"""properties/desired and properties/reported: 32 KB each, without $version/$metadata."""
MAX_DEPTH: Final = 10
"""Maximum depth of JSON objects (and arrays) in desired and reported properties, the root
being depth 0 (edgeHub: an object or array deeper than 10 is refused)."""
MAX_KEY_BYTES: Final = 1024
"""Keys are UTF-8, case-sensitive, up to 1 KB."""
MAX_STRING_BYTES: Final = 4 * 1024
"""String values: up to 4 KB (UTF-8)."""
MAX_SAFE_INTEGER: Final = 2**52 - 1
MIN_SAFE_INTEGER: Final = -(2**52)
"""Integer range edgeHub enforces (its validator: "taken from IoTHub")."""
FORBIDDEN_KEY_CHARACTERS: Final = frozenset(".$ #")
"""IoT Hub excludes '.', '$' and SP (and control characters); edgeHub also reserves '#'."""

VERSION: Final = "$version"
METADATA: Final = "$metadata"
_READ_ONLY: Final = (VERSION, METADATA)
"""Top-level read-only members of a collection; ignored in input (IoT Hub sets them)."""

BAD_REQUEST: Final = 400
"""IoT Hub and edgeHub answer every invalid patch, an oversized one included, with 400."""

FIRST_VERSION: Final = 1
"""The ``$version`` of a collection never changed (an IoT Hub twin starts at 1)."""


def _is_control(character: str) -> bool:
    """General category Cc: the C0 codes, DEL and the C1 codes, a set Unicode never changes
    (checked here without unicodedata, whose tables a hub would keep: 0.1 MiB)."""
    code = ord(character)
    return code <= 0x1F or 0x7F <= code <= 0x9F


def _key_problem(key: str) -> str | None:
    if not key:
        return "property names must not be empty"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"property name {key[:10]!r}... is longer than {MAX_KEY_BYTES} bytes"
    for character in key:
        if character in FORBIDDEN_KEY_CHARACTERS or _is_control(character):
            return f"property name {key!r} contains the invalid character {character!r}"
    return None


def _check_value(value: object, path: str, depth: int, *, in_array: bool, patch: bool) -> None:
    """Raise TwinError for a value IoT Hub refuses; ``depth`` is the nesting of ``value``."""
    if value is None:
        if in_array:
            raise TwinError(BAD_REQUEST, f"{path}: arrays cannot hold null")
        if not patch:
            raise TwinError(BAD_REQUEST, f"{path}: null is only allowed in a patch (it removes a key)")
        return
    if isinstance(value, Mapping | list):
        _check_container(value, path, depth, in_array=in_array, patch=patch)
        return
    _check_scalar(value, path)


def _check_scalar(value: object, path: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise TwinError(
                BAD_REQUEST, f"{path}: {value} is outside {MIN_SAFE_INTEGER}..{MAX_SAFE_INTEGER}"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TwinError(BAD_REQUEST, f"{path}: {value} is not a JSON number")
        return
    if isinstance(value, str):
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_STRING_BYTES:
            raise TwinError(BAD_REQUEST, f"{path}: a string of {size} bytes is over {MAX_STRING_BYTES}")
        return
    raise TwinError(BAD_REQUEST, f"{path}: {type(value).__name__} is not a JSON value")


def _check_container(
    value: Mapping[Any, Any] | list[Any], path: str, depth: int, *, in_array: bool, patch: bool,
) -> None:
    if depth > MAX_DEPTH:
        raise TwinError(BAD_REQUEST, f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1, in_array=True, patch=patch)
        return
    for key, item in value.items():
        if not isinstance(key, str) or (problem := _key_problem(key)) is not None:
            raise TwinError(BAD_REQUEST, f"{path}: {problem or 'property names are strings'}")
        # objects inside arrays hold no null either (edgeHub)
        _check_value(item, f"{path}.{key}", depth + 1, in_array=False, patch=patch and not in_array)


def strip_read_only(collection: Mapping[str, Any]) -> JsonObject:
    """``collection`` without its top-level ``$version`` and ``$metadata`` (IoT Hub ignores
    them in input and sets them itself)."""
    return {key: value for key, value in collection.items() if key not in _READ_ONLY}


def check_patch(patch: object, what: str = "reported") -> JsonObject:
    """The patch without read-only members, after IoT Hub's checks of every key and value
    (null allowed: it removes a key). Raises TwinError(400); sizes are checked on the result."""
    if not isinstance(patch, Mapping):
        raise TwinError(BAD_REQUEST, f"a {what} properties patch must be a JSON object")
    cleaned = strip_read_only(patch)
    _check_value(cleaned, what, 0, in_array=False, patch=True)
    return cleaned


def check_document(document: object, what: str = "desired") -> JsonObject:
    """A whole collection (no nulls), checked as ``check_patch`` and for size; a copy without
    read-only members. Raises TwinError(400)."""
    if not isinstance(document, Mapping):
        raise TwinError(BAD_REQUEST, f"{what} properties must be a JSON object")
    cleaned = strip_read_only(document)
    _check_value(cleaned, what, 0, in_array=False, patch=False)
    check_size(cleaned, what)
    return copy_object(cleaned)


def twin_size(value: object) -> int:
    """IoT Hub's size of a collection: the UTF-8 length of every key and string value
    (control characters not counted), 8 bytes per number, 4 per boolean, nested
    objects and arrays as the sum of what they hold."""
    if isinstance(value, bool):
        return 4
    if isinstance(value, int | float):
        return 8
    if isinstance(value, str):
        return _text_size(value)
    if isinstance(value, Mapping):
        return sum(_text_size(key) + twin_size(item) for key, item in value.items())
    if isinstance(value, list):
        return sum(twin_size(item) for item in value)
    return 0  # null


def _text_size(text: str) -> int:
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(len(c.encode("utf-8", "surrogatepass")) for c in text if not _is_control(c))


def check_size(collection: Mapping[str, Any], what: str) -> None:
    size = twin_size(collection)
    if size > MAX_PROPERTIES_BYTES:
        raise TwinError(BAD_REQUEST, f"{what} properties would be {size} bytes, over {MAX_PROPERTIES_BYTES}")


def copy_json(value: Any) -> Any:
    """A deep copy of decoded JSON (dicts and lists rebuilt, scalars shared)."""
    if isinstance(value, Mapping):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def copy_object(value: Mapping[str, Any]) -> JsonObject:
    """``copy_json`` of an object, typed as one."""
    return {key: copy_json(item) for key, item in value.items()}


def merge_patch(document: Mapping[str, Any], patch: Mapping[str, Any]) -> JsonObject:
    """RFC 7396 JSON merge patch as IoT Hub applies twin patches: a null removes the key,
    an object merges into an object, anything else replaces. Returns a new document."""
    merged = copy_object(document)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            merged[key] = copy_json(value)
    return merged


def combine_patches(first: Mapping[str, Any], second: Mapping[str, Any]) -> JsonObject:
    """One patch with the effect of ``first`` then ``second`` (JSON merge patches; a null is kept,
    so the combined patch still removes that key)."""
    merged = dict(first)
    for key, value in second.items():
        previous = merged.get(key)
        if isinstance(value, dict) and isinstance(previous, dict):
            merged[key] = combine_patches(previous, value)
        else:
            merged[key] = value
    return merged


def json_equal(left: object, right: object) -> bool:
    """Equality of decoded JSON values where true is not 1 (Python's ``==`` says it is)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(json_equal(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, Mapping | list) or isinstance(right, Mapping | list):
        return False
    return bool(left == right)  # 1 and 1.0 are the same JSON number; "1" is not 1


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> JsonObject:
    """The smallest merge patch taking ``old`` to ``new``: removed keys as null, changed
    values in full, objects compared key by key. Empty when they are equal."""
    patch: JsonObject = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = copy_json(value)
            continue
        before = old[key]
        if isinstance(before, Mapping) and isinstance(value, Mapping):
            inner = diff(before, value)
            if inner:
                patch[key] = inner
        elif not json_equal(before, value):
            patch[key] = copy_json(value)
    return patch


def with_version(collection: Mapping[str, Any], version: int) -> JsonObject:
    """A copy of ``collection`` with its ``$version`` (as GET twin and desired patches carry it)."""
    shown = copy_object(strip_read_only(collection))
    shown[VERSION] = version
    return shown


def version_of(collection: Mapping[str, Any]) -> int | None:
    """The integer ``$version`` of a collection or patch from upstream, or None."""
    version = collection.get(VERSION)
    if isinstance(version, int) and not isinstance(version, bool):
        return version
    return None


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON, as twins go on the wire and into the store."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads_patch(payload: bytes, what: str = "reported") -> JsonObject:
    """Decode and check a patch from a client (UTF-8 JSON object); raises TwinError(400)."""
    try:
        decoded = json.loads(payload.decode("utf-8-sig"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TwinError(BAD_REQUEST, f"the {what} properties patch is not JSON: {exc}") from None
    return check_patch(decoded, what)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")

"""Twin documents: IoT Hub's bounds refuse with 400 and a reason; merge patch, diff and $version."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.twins.document import (
    MAX_DEPTH,
    MAX_KEY_BYTES,
    MAX_PROPERTIES_BYTES,
    MAX_SAFE_INTEGER,
    MAX_STRING_BYTES,
    check_document,
    check_patch,
    diff,
    json_equal,
    loads_patch,
    merge_patch,
    twin_size,
    version_of,
    with_version,
)
from edgehub.twins.port import TwinError


def refusal(patch: object) -> str:
    with pytest.raises(TwinError) as caught:
        check_patch(patch)
    assert caught.value.status == 400
    return caught.value.reason


def nested(levels: int) -> dict[str, Any]:
    """A patch with ``levels`` objects nested below its root."""
    document: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        document = {"level": document}
    return document


# --- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a.b", "$x", "a b", "tab\there", "nul\x00", "c1\x85", "hash#"])
def test_key_with_a_forbidden_character_is_refused(key: str) -> None:
    assert "invalid character" in refusal({"ok": {key: 1}})


def test_key_of_1_kb_is_accepted_and_longer_refused() -> None:
    check_patch({"k" * MAX_KEY_BYTES: 1})
    assert "longer than" in refusal({"k" * (MAX_KEY_BYTES - 1) + "é": 1})


def test_string_value_of_4_kb_is_accepted_and_longer_refused() -> None:
    check_patch({"s": "x" * MAX_STRING_BYTES})
    assert "over 4096" in refusal({"s": "x" * MAX_STRING_BYTES + "y"})


def test_objects_nest_ten_levels_below_the_root_and_no_deeper() -> None:
    # edgeHub's ReportedPropertiesValidator: the root is depth 0, an object deeper than 10 is refused
    check_patch(nested(MAX_DEPTH))
    assert "deeper than 10" in refusal(nested(MAX_DEPTH + 1))


def test_integers_beyond_two_to_the_52_are_refused() -> None:
    check_patch({"n": MAX_SAFE_INTEGER, "m": -MAX_SAFE_INTEGER - 1, "f": 1e300})
    assert "outside" in refusal({"n": MAX_SAFE_INTEGER + 1})


def test_arrays_are_allowed_without_null() -> None:
    check_patch({"a": [1, "x", {"b": True}, [2]]})
    assert "null" in refusal({"a": [1, None]})
    assert "null" in refusal({"a": [{"b": None}]})


def test_patch_must_be_an_object_and_hold_only_json() -> None:
    assert "JSON object" in refusal([1])
    assert "not a JSON" in refusal({"x": float("nan")})
    assert "not a JSON value" in refusal({"x": {1, 2}})


def test_read_only_members_of_a_patch_are_ignored() -> None:
    assert check_patch({"$version": 9, "$metadata": {}, "a": 1}) == {"a": 1}


def test_null_removes_in_a_patch_but_a_document_holds_none() -> None:
    assert check_patch({"a": None}) == {"a": None}
    with pytest.raises(TwinError, match="only allowed in a patch"):
        check_document({"a": None})


def test_document_over_32_kb_is_refused_with_400() -> None:
    half = "x" * 4000
    fits = {f"k{n}": half for n in range(8)}
    assert twin_size(fits) <= MAX_PROPERTIES_BYTES
    check_document(fits)
    with pytest.raises(TwinError) as caught:
        check_document({**fits, "k8": half})
    assert caught.value.status == 400
    assert "over 32768" in caught.value.reason


def test_size_counts_keys_strings_numbers_and_booleans_as_iot_hub() -> None:
    assert twin_size({"ab": "cde", "n": 1, "f": 2.5, "b": True, "o": {"x": [1, "yz"]}}) == (
        2 + 3 + 1 + 8 + 1 + 8 + 1 + 4 + 1 + 1 + 8 + 2
    )
    assert twin_size({"é": "\x01ü"}) == 2 + 2  # control characters are not counted


def test_loads_patch_refuses_text_that_is_not_json() -> None:
    assert loads_patch(b'{"a": 1}') == {"a": 1}
    for payload in (b"{", b"\xff", b"NaN", b'{"a": Infinity}'):
        with pytest.raises(TwinError, match=r"not JSON|JSON object"):
            loads_patch(payload)


# --- merge, diff, versions ------------------------------------------------------------------


def test_merge_patch_removes_nulls_merges_objects_and_replaces_the_rest() -> None:
    document = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": "x"}
    patch = {"a": None, "b": {"c": None, "g": 4}, "e": [3], "f": {"h": None, "i": 5}}
    assert merge_patch(document, patch) == {"b": {"d": 3, "g": 4}, "e": [3], "f": {"i": 5}}
    assert document == {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": "x"}  # not changed


def test_diff_holds_only_changes_with_removed_keys_as_null() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "same": [1], "flag": 1}
    new = {"b": {"c": 2, "d": 4}, "same": [1], "flag": True, "new": "x"}
    assert diff(old, new) == {"a": None, "b": {"d": 4}, "flag": True, "new": "x"}
    assert diff(new, new) == {}


def test_json_equality_tells_true_from_one() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal({"a": [1]}, {"a": [True]})
    assert not json_equal("1", 1)


def test_version_is_shown_and_read_back() -> None:
    shown = with_version({"a": 1, "$version": 3}, 7)
    assert shown == {"a": 1, "$version": 7}
    assert version_of(shown) == 7
    assert version_of({"$version": True}) is None
    assert version_of({}) is None


_keys = st.text(
    st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters=".$ #"), min_size=1, max_size=4,
)
_scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)
_present = _scalars.filter(lambda value: value is not None)
_documents = st.recursive(
    st.dictionaries(_keys, _present, max_size=4),
    lambda inner: st.dictionaries(_keys, inner | _present, max_size=3),
    max_leaves=20,
)


@given(_documents, _documents)
def test_applying_the_diff_of_two_documents_gives_the_second(
    old: dict[str, Any], new: dict[str, Any],
) -> None:
    patch = diff(old, new)
    assert json_equal(merge_patch(old, patch), new)
    assert (patch == {}) == json_equal(old, new)


@given(_documents, _documents)
def test_a_merge_patch_applied_twice_changes_nothing_more(
    document: dict[str, Any], patch: dict[str, Any],
) -> None:
    once = merge_patch(document, patch)
    assert json_equal(merge_patch(once, patch), once)

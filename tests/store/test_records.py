"""Key and record layouts: exact round trips, and keys that sort the way queues and expiry need."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.message import DEFAULT_PRIORITY, Message
from edgehub.store.base import QueueKey
from edgehub.store.records import (
    EXPIRY_KEY,
    U64,
    decode_expiry_value,
    decode_message,
    decode_record_refs,
    encode_record,
    expiry_value,
    parse_queue_prefix,
    queue_prefix,
)

endpoints = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=30)
queues = st.builds(QueueKey, endpoints, st.integers(0, 0xFFFFFFFF))
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
messages = st.builds(
    Message,
    st.binary(max_size=300),
    st.dictionaries(texts, texts, max_size=5),
    st.dictionaries(texts, texts, max_size=5),
    st.integers(0, 2**63),
)
refs = st.lists(st.tuples(queues.map(queue_prefix), st.integers(0, 2**64 - 1)), min_size=1, max_size=4)


@given(queues)
def test_queue_prefix_round_trips(queue: QueueKey) -> None:
    assert parse_queue_prefix(queue_prefix(queue)) == queue


@given(messages, refs)
def test_record_round_trips_message_and_refs(message: Message, message_refs: list[tuple[bytes, int]]) -> None:
    max_expiry = max(expiry for _, expiry in message_refs)
    record, refs_end = encode_record(message, message_refs, max_expiry)
    assert decode_message(record) == message
    assert decode_record_refs(record) == message_refs
    head = expiry_value(record, refs_end, len(record) + 8)
    assert decode_expiry_value(head) == (len(record) + 8, message.enqueued_ms, max_expiry, message_refs)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_queue_keys_sort_by_id(first: int, second: int) -> None:
    prefix = queue_prefix(QueueKey("e", 1))
    assert (prefix + U64.pack(first) < prefix + U64.pack(second)) == (first < second)


@given(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
       st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))
def test_expiry_keys_sort_by_time_then_id(first: tuple[int, int], second: tuple[int, int]) -> None:
    assert (EXPIRY_KEY.pack(*first) < EXPIRY_KEY.pack(*second)) == (first < second)


def test_default_priority_fits_the_key() -> None:
    assert parse_queue_prefix(queue_prefix(QueueKey("$upstream"))).priority == DEFAULT_PRIORITY


@pytest.mark.parametrize("bad", [b"", b"abc", b"name\x01\x00\x00\x00\x01"])
def test_malformed_prefix_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="not a queue prefix"):
        parse_queue_prefix(bad)


@pytest.mark.parametrize(
    "properties",
    [{"a\x00b": "c"}, {"k": "\x00"}, {"\x00": ""}, {"lone": "\udc80 surrogate"}, {"": ""}],
)
def test_unusual_property_strings_round_trip(properties: dict[str, str]) -> None:
    message = Message(b"body", properties, {"connectionDeviceId": "d\x00"}, 7)
    record, _ = encode_record(message, [(queue_prefix(QueueKey("q")), 9)], 9)
    assert decode_message(record) == message

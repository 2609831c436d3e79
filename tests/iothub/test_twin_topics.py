"""Tests of edgehub.iothub.twin_topics: both dialects parse back what they build."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.iothub.twin_topics import (
    Feed,
    Operation,
    ServiceFeed,
    ServiceRequest,
    desired_patch_topic,
    feed_filter,
    method_name,
    method_request_topic,
    method_response_topic,
    parse_feed,
    parse_request,
    parse_response,
    twin_request_topic,
    twin_response_topic,
)
from edgehub.message import Identity

ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
targets = st.one_of(st.none(), st.builds(Identity, ids, st.one_of(st.none(), ids)))
rids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("$iothub/twin/GET/?$rid=1", ServiceRequest(Operation.GET_TWIN, None, "1")),
        (
            "$iothub/twin/PATCH/properties/reported/?$rid=a&$version=3",
            ServiceRequest(Operation.PATCH_REPORTED, None, "a"),
        ),
        ("$iothub/methods/res/200/?$rid=x", ServiceRequest(Operation.METHOD_RESPONSE, None, "x", 200)),
        ("$iothub/d1/m1/twin/get/?$rid=2", ServiceRequest(Operation.GET_TWIN, Identity("d1", "m1"), "2")),
        ("$iothub/d1/twin/reported/?$rid=2", ServiceRequest(Operation.PATCH_REPORTED, Identity("d1"), "2")),
        ("$iothub/twin/GET/", None),  # no $rid
        ("$iothub/twin/DELETE/?$rid=1", None),
        ("devices/d/messages/events/", None),
        ("$iothub/methods/res/abc/?$rid=1", None),
    ],
)
def test_request_topics_parse_as_iot_hub_and_edgehub_define_them(
    topic: str,
    expected: ServiceRequest | None,
) -> None:
    assert parse_request(topic) == expected


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("$iothub/twin/res/#", ServiceFeed(Feed.TWIN_RESPONSES, None)),
        ("$iothub/twin/PATCH/properties/desired/#", ServiceFeed(Feed.DESIRED_PATCHES, None)),
        ("$iothub/methods/POST/#", ServiceFeed(Feed.METHOD_REQUESTS, None)),
        ("$iothub/d/m/twin/desired/#", ServiceFeed(Feed.DESIRED_PATCHES, Identity("d", "m"))),
        ("$iothub/+/methods/post/#", None),
        ("$iothub/#", None),
    ],
)
def test_feed_filters_parse(topic_filter: str, expected: ServiceFeed | None) -> None:
    assert parse_feed(topic_filter) == expected


@given(st.sampled_from(list(Feed)), targets)
def test_feed_filters_round_trip(feed: Feed, target: Identity | None) -> None:
    assert parse_feed(feed_filter(feed, target)) == ServiceFeed(feed, target)


@given(st.sampled_from([Operation.GET_TWIN, Operation.PATCH_REPORTED]), rids, targets)
def test_twin_request_topics_round_trip(operation: Operation, rid: str, target: Identity | None) -> None:
    assert parse_request(twin_request_topic(operation, rid, target)) == ServiceRequest(operation, target, rid)


@given(st.integers(100, 599), rids, targets)
def test_method_responses_and_twin_responses_round_trip(
    status: int, rid: str, target: Identity | None
) -> None:
    assert parse_request(method_response_topic(status, rid, target)) == ServiceRequest(
        Operation.METHOD_RESPONSE, target, rid, status
    )
    assert parse_response(twin_response_topic(status, rid, target, 4)) == (
        Feed.TWIN_RESPONSES,
        target,
        rid,
        status,
    )


@given(st.integers(1, 10**9), targets)
def test_desired_patch_topics_round_trip(version: int, target: Identity | None) -> None:
    assert parse_response(desired_patch_topic(version, target)) == (
        Feed.DESIRED_PATCHES,
        target,
        str(version),
        0,
    )


@given(ids, rids, targets)
def test_method_request_topics_round_trip(name: str, rid: str, target: Identity | None) -> None:
    topic = method_request_topic(name, rid, target)
    assert parse_response(topic) == (Feed.METHOD_REQUESTS, target, rid, 0)
    assert method_name(topic) == name


def test_reported_response_carries_the_new_version() -> None:
    assert twin_response_topic(204, "5", version=12) == "$iothub/twin/res/204/?$rid=5&$version=12"

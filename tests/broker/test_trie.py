"""Tests of edgehub.broker.trie against the naive matcher (edgehub.mqtt.topic_filters), and of
topic name and filter validation (edgehub.broker.topics)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub.broker.topics import filter_covers, filter_problem, parse_shared, topic_name_problem
from edgehub.broker.trie import SubscriptionTrie
from edgehub.mqtt.topic_filters import filter_matches

_LEVELS = st.sampled_from(["a", "b", "", "$SYS", "sport", "x y"])
_FILTER_LEVELS = st.sampled_from(["a", "b", "", "$SYS", "sport", "+"])
topics = st.lists(_LEVELS, min_size=1, max_size=5).map("/".join)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(_FILTER_LEVELS, min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@settings(max_examples=300, deadline=None)
@given(st.lists(filters(), max_size=12, unique=True), st.lists(topics, min_size=1, max_size=8))
def test_trie_matches_exactly_what_the_naive_matcher_matches(
    subscribed: list[str], published: list[str],
) -> None:
    trie: SubscriptionTrie[str, int] = SubscriptionTrie()
    for index, topic_filter in enumerate(subscribed):
        trie.add(topic_filter, topic_filter, index)
    for topic in published:
        found = sorted(key for key, _ in trie.match(topic))
        assert found == sorted(f for f in subscribed if filter_matches(f, topic)), topic


@settings(max_examples=200, deadline=None)
@given(st.lists(filters(), min_size=1, max_size=10, unique=True), st.data())
def test_removed_filters_never_match_and_the_rest_still_do(
    subscribed: list[str], data: st.DataObject,
) -> None:
    trie: SubscriptionTrie[str, None] = SubscriptionTrie()
    for topic_filter in subscribed:
        trie.add(topic_filter, topic_filter, None)
    gone = data.draw(st.lists(st.sampled_from(subscribed), unique=True))
    for topic_filter in gone:
        assert trie.remove(topic_filter, topic_filter)
        assert not trie.remove(topic_filter, topic_filter)
    assert len(trie) == len(subscribed) - len(gone)
    topic = data.draw(topics)
    expected = sorted(f for f in subscribed if f not in gone and filter_matches(f, topic))
    assert sorted(key for key, _ in trie.match(topic)) == expected


def test_dollar_topics_are_not_matched_by_leading_wildcards() -> None:
    trie: SubscriptionTrie[str, None] = SubscriptionTrie()
    for topic_filter in ("#", "+/info", "$SYS/#", "$SYS/+"):
        trie.add(topic_filter, topic_filter, None)
    assert sorted(k for k, _ in trie.match("$SYS/info")) == ["$SYS/#", "$SYS/+"]  # [MQTT-4.7.2-1]
    assert sorted(k for k, _ in trie.match("a/info")) == ["#", "+/info"]


def test_hash_matches_the_parent_level_and_plus_one_level_only() -> None:
    assert filter_matches("sport/#", "sport")  # [MQTT-4.7.1-2]
    assert filter_matches("sport/+", "sport/")
    assert not filter_matches("sport/+", "sport")
    assert not filter_matches("sport/+", "sport/a/b")
    assert filter_matches("+/+", "/finance")


def test_pruned_branches_leave_an_empty_trie() -> None:
    trie: SubscriptionTrie[str, None] = SubscriptionTrie()
    trie.add("a/b/c/#", "k", None)
    assert trie.remove("a/b/c/#", "k")
    assert len(trie) == 0
    assert list(trie.match("a/b/c")) == []


def test_invalid_filters_are_named() -> None:
    assert filter_problem("a/#/b") == "'#' must be the last level, alone"
    assert filter_problem("a#") == "'#' must be the last level, alone"
    assert filter_problem("a/b+") == "'+' must fill a whole level"
    assert filter_problem("") == "empty topic filter"
    assert filter_problem("$share/g") is not None
    assert filter_problem("$share/g+/a") is not None
    assert filter_problem("$share/g/a/#") is None
    assert filter_problem("a/+/#") is None


def test_topic_names_refuse_wildcards_and_nul() -> None:
    assert topic_name_problem("a/+") == "wildcard in a topic name"
    assert topic_name_problem("a/#") == "wildcard in a topic name"
    assert topic_name_problem("a\x00") is not None
    assert topic_name_problem("") == "empty topic name"
    assert topic_name_problem("a/b") is None


def test_shared_filters_split_into_group_and_filter() -> None:
    shared = parse_shared("$share/workers/jobs/+")
    assert shared is not None
    assert (shared.group, shared.topic_filter) == ("workers", "jobs/+")
    assert parse_shared("jobs/+") is None


def test_filter_covers_needs_a_wildcard_as_wide() -> None:
    assert filter_covers("a/#", "a/+/c")
    assert filter_covers("a/+", "a/b")
    assert not filter_covers("a/+", "a/#")
    assert not filter_covers("a/b", "a/+")
    assert not filter_covers("#", "$SYS/x")
    assert filter_covers("#", "a")

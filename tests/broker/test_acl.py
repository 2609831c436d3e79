"""Tests of edgehub.broker.acl: first matching rule decides, substitutions, the config section."""

from __future__ import annotations

from edgehub.broker.acl import Acl, AclRule, Action, Client, parse_acl

ANON = Client("plc-7", "", anonymous=True)
DASH = Client("dashboard", "dashboard", anonymous=False)


def rules(*entries: dict[str, object]) -> Acl:
    parsed, problems = parse_acl(list(entries), "acl")
    assert problems == []
    return Acl(parsed)


def test_no_rules_allow_every_generic_topic() -> None:
    assert Acl().may_publish(ANON, "any/thing")
    assert Acl().may_subscribe(ANON, "#")


def test_with_rules_what_no_rule_allows_is_denied() -> None:
    acl = rules({"allow": "publish", "identity": "$anonymous", "topic": "factory/#"})
    assert acl.may_publish(ANON, "factory/line1/temp")
    assert not acl.may_publish(ANON, "office/temp")
    assert not acl.may_subscribe(ANON, "factory/#")  # publish only


def test_first_matching_rule_wins() -> None:
    acl = rules(
        {"deny": "all", "identity": "*", "topic": "factory/secret/#"},
        {"allow": "all", "identity": "*", "topic": "factory/#"},
    )
    assert not acl.may_publish(DASH, "factory/secret/key")
    assert acl.may_publish(DASH, "factory/line1")
    # a subscription that overlaps a denied branch is refused as a whole
    assert not acl.may_subscribe(DASH, "factory/#")
    assert acl.may_subscribe(DASH, "factory/line1/+")


def test_allow_on_subscribe_must_cover_the_whole_filter() -> None:
    acl = rules({"allow": "subscribe", "identity": "dashboard", "topic": "factory/+/temp"})
    assert acl.may_subscribe(DASH, "factory/line1/temp")
    assert acl.may_subscribe(DASH, "factory/+/temp")
    assert not acl.may_subscribe(DASH, "factory/#")
    assert not acl.may_subscribe(ANON, "factory/line1/temp")  # names an identity: not anonymous


def test_client_id_and_user_name_substitutions() -> None:
    acl = rules(
        {"allow": "publish", "identity": "*", "topic": "clients/%c/#"},
        {"allow": "subscribe", "identity": "$authenticated", "topic": "users/%u/#"},
    )
    assert acl.may_publish(ANON, "clients/plc-7/status")
    assert not acl.may_publish(ANON, "clients/other/status")
    assert acl.may_subscribe(DASH, "users/dashboard/#")
    assert not acl.may_subscribe(ANON, "users//#")  # empty %u never matches


def test_a_wildcard_in_a_client_id_does_not_widen_a_rule() -> None:
    acl = rules({"allow": "publish", "identity": "*", "topic": "clients/%c"})
    assert not acl.may_publish(Client("+", "", anonymous=True), "clients/x")


def test_shared_subscriptions_are_judged_by_the_filter_they_share() -> None:
    acl = rules({"allow": "subscribe", "identity": "*", "topic": "jobs/#"})
    assert acl.may_subscribe(ANON, "$share/workers/jobs/+")
    assert not acl.may_subscribe(ANON, "$share/workers/other/+")


def test_bad_rules_are_reported_with_their_location() -> None:
    _, problems = parse_acl([
        {"allow": "publish", "topic": "a/#/b"},
        {"allow": "publish", "deny": "publish", "topic": "a"},
        {"allow": "read", "topic": "a"},
        {"allow": "publish"},
        {"allow": "publish", "topic": "a", "who": "x"},
        "rule",
    ], "acl")
    locations = [location for location, _ in problems]
    assert locations == ["acl[0].topic", "acl[1]", "acl[2].allow", "acl[3].topic", "acl[4].who", "acl[5]"]
    assert "'#' must be the last level" in problems[0][1]
    assert parse_acl({"allow": "x"}, "acl")[1] == [("acl", "must be a list of rules")]


def test_rule_values() -> None:
    parsed, _ = parse_acl([{"deny": "ALL", "identity": "d1", "topic": "x/%u"}], "acl")
    assert parsed == [AclRule(False, "d1", Action.BOTH, "x/%u")]

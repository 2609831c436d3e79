"""Access control for generic topics: ordered allow/deny rules per identity (or anonymous),
action and topic filter, with ``%c`` (client id) and ``%u`` (user name) substitutions.

Pure policy: rules in, decisions out; the config file section ``acl`` is parsed here too
(edgehub.config_file reports its problems). IoT Hub topics never reach these rules: their
built-in rules are edgehub.auth.authorize's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from edgehub.broker.topics import filter_covers, filter_matches, filter_problem, parse_shared

ANYONE: Final = "*"
AUTHENTICATED: Final = "$authenticated"
ANONYMOUS: Final = "$anonymous"


class Action(enum.Flag):
    PUBLISH = enum.auto()
    SUBSCRIBE = enum.auto()
    BOTH = PUBLISH | SUBSCRIBE


@dataclass(frozen=True, slots=True)
class Client:
    """Who asks: the client id, the user name the rules see as ``%u`` (a registry identity's id,
    or an anonymous client's CONNECT user name, possibly empty) and whether it is anonymous."""

    client_id: str
    username: str
    anonymous: bool


@dataclass(frozen=True, slots=True)
class AclRule:
    """``allow`` (else deny) ``actions`` on ``topic`` (a filter, ``%c``/``%u`` substituted) for
    ``who``: an identity id, ``*`` (everyone), ``$authenticated`` or ``$anonymous``."""

    allow: bool
    who: str
    actions: Action
    topic: str

    def applies_to(self, client: Client) -> bool:
        who = self.who
        if who == ANYONE:
            return True
        if who == ANONYMOUS:
            return client.anonymous
        if who == AUTHENTICATED:
            return not client.anonymous
        return not client.anonymous and who == client.username

    def topic_for(self, client: Client) -> str | None:
        """The rule's filter for ``client``; None when a substitution is empty or would put a
        wildcard or level separator in (a client id ``+`` must not widen the rule)."""
        topic = self.topic
        if "%" not in topic:
            return topic
        for token, value in (("%c", client.client_id), ("%u", client.username)):
            if token in topic:
                if not value or any(c in value for c in "+#/"):
                    return None
                topic = topic.replace(token, value)
        return topic


class Acl:
    """Rules in order, the first that applies to the client, action and topic decides.

    No rules at all: every generic topic is allowed (the broker is open to whoever may connect,
    see ``mqttSettings__allowAnonymous``). With rules, what no rule allows is denied.
    """

    __slots__ = ("rules",)

    def __init__(self, rules: Sequence[AclRule] = ()) -> None:
        self.rules = tuple(rules)

    def may_publish(self, client: Client, topic: str) -> bool:
        return self._decide(client, Action.PUBLISH, topic, subscribe=False)

    def may_subscribe(self, client: Client, topic_filter: str) -> bool:
        shared = parse_shared(topic_filter)
        return self._decide(client, Action.SUBSCRIBE, shared.topic_filter if shared else topic_filter,
                            subscribe=True)

    def _decide(self, client: Client, action: Action, topic: str, *, subscribe: bool) -> bool:
        if not self.rules:
            return True
        for rule in self.rules:
            if not (rule.actions & action) or not rule.applies_to(client):
                continue
            rule_filter = rule.topic_for(client)
            if rule_filter is None:
                continue
            if subscribe:
                # allow: the rule must cover all the subscription can match; deny: any overlap.
                hit = filter_covers(rule_filter, topic) if rule.allow else _overlaps(rule_filter, topic)
            else:
                hit = filter_matches(rule_filter, topic)
            if hit:
                return rule.allow
        return False


def _overlaps(a: str, b: str) -> bool:
    """Whether some topic matches both filters."""
    a_levels, b_levels = a.split("/"), b.split("/")
    for i in range(max(len(a_levels), len(b_levels))):
        x = a_levels[i] if i < len(a_levels) else None
        y = b_levels[i] if i < len(b_levels) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and x != "+" and y != "+":
            return False
    return True


_ACTIONS: Final = {"publish": Action.PUBLISH, "subscribe": Action.SUBSCRIBE, "all": Action.BOTH}


def parse_acl(value: object, path: str) -> tuple[list[AclRule], list[tuple[str, str]]]:
    """The config file's ``acl`` list: ``[{"allow"|"deny": "publish"|"subscribe"|"all",
    "identity": "<id>"|"*"|"$authenticated"|"$anonymous", "topic": "<filter>"}, ...]``.
    Returns the rules and (location, reason) problems."""
    rules: list[AclRule] = []
    problems: list[tuple[str, str]] = []
    if value is None:
        return rules, problems
    if not isinstance(value, list):
        return rules, [(path, "must be a list of rules")]
    for index, entry in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            problems.append((where, "a rule must be an object"))
            continue
        rule, problem = _rule(entry, where)
        if problem is not None:
            problems.append(problem)
        elif rule is not None:
            rules.append(rule)
    return rules, problems


def _rule(entry: Mapping[str, object], where: str) -> tuple[AclRule | None, tuple[str, str] | None]:
    unknown = set(entry) - {"allow", "deny", "identity", "topic"}
    if unknown:
        return None, (f"{where}.{sorted(unknown)[0]}", "unknown key (known: allow, deny, identity, topic)")
    if ("allow" in entry) == ("deny" in entry):
        return None, (where, "needs exactly one of allow or deny")
    allow = "allow" in entry
    action = entry["allow" if allow else "deny"]
    if not isinstance(action, str) or action.lower() not in _ACTIONS:
        return None, (f"{where}.{'allow' if allow else 'deny'}", "must be publish, subscribe or all")
    who = entry.get("identity", ANYONE)
    if not isinstance(who, str) or not who:
        return None, (f"{where}.identity", "must be an identity id, *, $authenticated or $anonymous")
    topic = entry.get("topic")
    if not isinstance(topic, str):
        return None, (f"{where}.topic", "must be a topic filter (string)")
    problem = filter_problem(topic.replace("%c", "c").replace("%u", "u"))
    if problem is not None or topic.startswith("$share/"):
        why = problem or "a rule names the filter, not a share"
        return None, (f"{where}.topic", f"invalid topic filter: {why}")
    return AclRule(allow, who, _ACTIONS[action.lower()], topic), None

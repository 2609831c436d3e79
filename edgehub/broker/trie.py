"""The subscription trie: topic filters by level, so a publish walks the levels of its topic
and the matching filters' branches only, never every filter (MQTT 5 §4.7).

Pure data structure, generic in what a subscription carries; it knows nothing of sessions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class _Node(Generic[K, V]):
    __slots__ = ("children", "exact", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K, V]] = {}
        self.exact: dict[K, V] = {}
        """Subscriptions whose filter ends at this node."""
        self.rest: dict[K, V] = {}
        """Subscriptions whose filter ends with ``#`` below this node (this level and deeper)."""


class SubscriptionTrie(Generic[K, V]):
    """Filter → {subscriber key: value}; ``match(topic)`` yields every (key, value) of a matching
    filter, once per filter (a subscriber with two matching filters appears twice)."""

    __slots__ = ("_count", "_root")

    def __init__(self) -> None:
        self._root: _Node[K, V] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, key: K, value: V) -> None:
        """Subscribe ``key`` with ``topic_filter`` (a valid, non-shared filter); replaces its value."""
        node = self._root
        levels = topic_filter.split("/")
        for level in levels[:-1]:
            node = node.children.setdefault(level, _Node())
        last = levels[-1]
        if last == "#":
            table = node.rest
        else:
            node = node.children.setdefault(last, _Node())
            table = node.exact
        if key not in table:
            self._count += 1
        table[key] = value

    def remove(self, topic_filter: str, key: K) -> bool:
        """Unsubscribe ``key`` from ``topic_filter``; prunes empty branches. False when absent."""
        path: list[tuple[_Node[K, V], str]] = []
        node = self._root
        levels = topic_filter.split("/")
        for level in levels[:-1]:
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        last = levels[-1]
        if last == "#":
            table = node.rest
        else:
            child = node.children.get(last)
            if child is None:
                return False
            path.append((node, last))
            node = child
            table = node.exact
        if table.pop(key, _MISSING) is _MISSING:
            return False
        self._count -= 1
        while path and not (node.children or node.exact or node.rest):
            parent, level = path.pop()
            del parent.children[level]
            node = parent
        return True

    def match(self, topic: str) -> Iterator[tuple[K, V]]:
        """Every subscription whose filter matches ``topic`` (a topic name)."""
        levels = topic.split("/")
        depth = len(levels)
        dollar = topic.startswith("$")
        stack: list[tuple[_Node[K, V], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            # '#' also matches the parent level ("a/#" matches "a"); never a '$' topic from the root.
            if node.rest and not (dollar and i == 0):
                yield from node.rest.items()
            if i == depth:
                yield from node.exact.items()
                continue
            children = node.children
            if not children:
                continue
            child = children.get(levels[i])
            if child is not None:
                stack.append((child, i + 1))
            if not (dollar and i == 0):
                wildcard = children.get("+")
                if wildcard is not None:
                    stack.append((wildcard, i + 1))


_MISSING = object()

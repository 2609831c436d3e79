"""Tests of edgehub.upstream.twin_sync: twins and method calls across the upstream link, in virtual
time against a fake parent connection that answers (or, like a plain broker, does not)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from edgehub.message import Identity
from edgehub.testing.clock import FakeClock, settle
from edgehub.twins.port import JsonObject, MethodError, MethodResponse, UnavailableMethods
from edgehub.upstream.connection import IncomingPublish
from edgehub.upstream.twin_sync import REQUEST_TIMEOUT, UpstreamTwins
from tests.upstream.fakes import FakeConnection, FakeParent

EDGE = Identity("child", "$edgeHub")
FILTER = Identity("child", "filter")


class FakeCache:
    """A TwinCache that records what the sync did."""

    def __init__(self) -> None:
        self.desired: dict[Identity, tuple[JsonObject, int]] = {}
        self.patches: list[tuple[Identity, JsonObject, int | None]] = []
        self.pending: dict[Identity, JsonObject] = {}

    def replace_desired(self, identity: Identity, desired: Mapping[str, Any], version: int) -> None:
        self.desired[identity] = (dict(desired), version)

    def apply_desired_patch(self, identity: Identity, patch: Mapping[str, Any], version: int | None) -> None:
        self.patches.append((identity, dict(patch), version))

    def needs_full_desired(self, identity: Identity, version: int) -> bool:
        return version > 100  # a gap, in these tests

    def pending_reported(self) -> dict[Identity, JsonObject]:
        return dict(self.pending)

    def mark_reported_synced(self, identity: Identity, patch: Mapping[str, Any]) -> None:
        if self.pending.get(identity) == patch:
            del self.pending[identity]


class EchoMethods(UnavailableMethods):
    """Answers every call with status 200 and the payload it got; 'missing' is a 404."""

    def __init__(self) -> None:
        self.calls: list[tuple[Identity, str, bytes]] = []

    async def invoke(
        self,
        target: Identity,
        name: str,
        payload: bytes,
        *,
        connect_timeout: float,
        response_timeout: float,
        caller: Identity | None = None,
    ) -> MethodResponse:
        self.calls.append((target, name, payload))
        if name == "missing":
            raise MethodError(404, "no such target")
        return MethodResponse(200, payload)


class Parent:
    """Answers twin requests on a FakeConnection like a parent edge hub (or not at all)."""

    def __init__(self, connection: FakeConnection, sync: UpstreamTwins, *, answers: bool = True) -> None:
        self.connection = connection
        self.sync = sync
        self.answers = answers
        self.seen = 0
        self.desired: dict[str, JsonObject] = {
            "$edgeHub": {"a": 1, "$version": 3},
            "filter": {"rate": 5, "$version": 7},
        }
        self.reported: list[tuple[str, JsonObject]] = []

    def pump(self) -> None:
        for topic, payload in self.connection.published[self.seen :]:
            self.seen += 1
            if not self.answers:
                continue
            self._answer(topic, payload)

    def _answer(self, topic: str, payload: bytes) -> None:
        rid = topic.split("$rid=")[-1]
        who = "filter" if "/child/filter/" in topic else "$edgeHub"
        prefix = "$iothub/child/filter/" if who == "filter" else "$iothub/"
        if "/twin/GET/" in topic or "/twin/get/" in topic:
            body = json.dumps({"desired": self.desired[who], "reported": {"$version": 1}}).encode()
            self.sync.on_publish(
                IncomingPublish(f"{prefix}twin/res/200/?$rid={rid}", body, 0, 0), self.connection
            )
        elif "reported" in topic:
            self.reported.append((who, json.loads(payload)))
            self.sync.on_publish(
                IncomingPublish(f"{prefix}twin/res/204/?$rid={rid}&$version=2", b"", 0, 0), self.connection
            )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def connect(parent: FakeParent) -> FakeConnection:
    connection = parent.connect(None, "token", lambda publish: None)  # type: ignore[arg-type]
    await connection.open()
    return connection


@pytest.fixture
async def running(clock: FakeClock) -> AsyncIterator[tuple[UpstreamTwins, FakeCache, EchoMethods]]:
    cache, methods = FakeCache(), EchoMethods()
    sync = UpstreamTwins(EDGE, clock, cache, methods, multiplexed=True)
    task = asyncio.ensure_future(sync.run())
    yield sync, cache, methods
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sync.stop()


async def answered(parent: Parent, turns: int = 10) -> None:
    for _ in range(turns):
        await settle()
        parent.pump()
    await settle()


async def test_connect_subscribes_own_feeds_and_reads_own_twin(running: Any) -> None:
    sync, cache, _ = running
    connection = await connect(FakeParent())
    parent = Parent(connection, sync)
    sync.connected(connection)
    await answered(parent)
    assert connection.subscriptions[0] == [
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/methods/POST/#",
    ]
    assert cache.desired[EDGE] == ({"a": 1}, 3)
    assert sync.online


async def test_followed_module_uses_the_indirect_dialect(running: Any) -> None:
    sync, cache, _ = running
    connection = await connect(FakeParent())
    parent = Parent(connection, sync)
    sync.connected(connection)
    await answered(parent)
    sync.follow(FILTER)
    await answered(parent)
    assert connection.subscriptions[1] == [
        "$iothub/child/filter/twin/res/#",
        "$iothub/child/filter/twin/desired/#",
        "$iothub/child/filter/methods/post/#",
    ]
    assert cache.desired[FILTER] == ({"rate": 5}, 7)


async def test_reported_properties_go_up_and_are_marked_synced(running: Any) -> None:
    sync, cache, _ = running
    connection = await connect(FakeParent())
    parent = Parent(connection, sync)
    sync.follow(FILTER)
    cache.pending[FILTER] = {"temp": 21}
    sync.connected(connection)
    await answered(parent)
    assert parent.reported == [("filter", {"temp": 21})]
    assert cache.pending == {}


async def test_a_plain_broker_that_never_answers_keeps_twins_local(running: Any, clock: FakeClock) -> None:
    sync, cache, _ = running
    connection = await connect(FakeParent())
    parent = Parent(connection, sync, answers=False)
    cache.pending[EDGE] = {"x": 1}
    sync.connected(connection)
    await answered(parent)
    await clock.advance(REQUEST_TIMEOUT + 1)
    await answered(parent)
    assert not sync.online
    assert [t for t, _ in connection.published] == ["$iothub/twin/GET/?$rid=1"]  # no reported pushes
    assert cache.pending == {EDGE: {"x": 1}}


async def test_desired_patch_from_the_parent_reaches_the_cache(running: Any) -> None:
    sync, cache, _ = running
    connection = await connect(FakeParent())
    taken = sync.on_publish(
        IncomingPublish("$iothub/child/filter/twin/desired/?$version=9", b'{"rate":null,"$version":9}', 4, 1),
        connection,
    )
    assert taken
    assert cache.patches == [(FILTER, {"rate": None, "$version": 9}, 9)]
    assert connection.acked_mids == [4]


async def test_method_call_from_the_parent_is_answered_with_the_local_result(running: Any) -> None:
    sync, _, methods = running
    connection = await connect(FakeParent())
    sync.on_publish(
        IncomingPublish("$iothub/child/filter/methods/post/reboot/?$rid=r7", b'{"now":1}', 0, 0), connection
    )
    sync.on_publish(IncomingPublish("$iothub/methods/POST/missing/?$rid=r8", b"null", 0, 0), connection)
    await settle()
    assert methods.calls == [(FILTER, "reboot", b'{"now":1}'), (EDGE, "missing", b"null")]
    published = dict(connection.published)
    assert published["$iothub/child/filter/methods/res/200/?$rid=r7"] == b'{"now":1}'
    assert json.loads(published["$iothub/methods/res/404/?$rid=r8"])["errorCode"] == 404


async def test_toward_a_cloud_hub_only_the_own_twin_is_followed(clock: FakeClock) -> None:
    sync = UpstreamTwins(EDGE, clock, FakeCache(), EchoMethods(), multiplexed=False)
    assert not sync.may_follow(FILTER)
    assert sync.may_follow(EDGE)


def test_other_topics_are_not_taken() -> None:
    sync = UpstreamTwins(EDGE, FakeClock(), FakeCache(), EchoMethods(), multiplexed=True)
    assert not sync.on_publish(IncomingPublish("devices/d/messages/devicebound/", b"", 0, 0), None)  # type: ignore[arg-type]

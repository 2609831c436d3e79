"""Tests of twins and direct methods over the AMQP upstream (AmqpTwinChannel under UpstreamTwins) against the
in-memory proton parent: twin GET on the twin link, reported PATCH, PUT for desired notifications, desired
patches and method calls coming down, and a parent that refuses the links.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from proton import Message as AmqpMessage
from proton import symbol

from edgehub.amqp.messages import annotation, body_bytes
from edgehub.endpoints.backoff import Backoff
from edgehub.message import Identity
from edgehub.testing.clock import FakeClock, settle
from edgehub.upstream.amqp import AmqpUpstream
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.twin_sync import UpstreamTwins
from tests.upstream.amqp_peer import PeerState
from tests.upstream.fakes import FakeHub
from tests.upstream.test_twin_sync import EchoMethods, FakeCache

KEY = base64.b64encode(b"k" * 32).decode()
EDGE = Identity("child", "$edgeHub")
TWIN = "/devices/child/modules/$edgeHub/twin"
METHODS = "/devices/child/modules/$edgeHub/methods/devicebound"


def twin_answers(request: AmqpMessage) -> AmqpMessage | None:
    """A parent holding desired {"routes": 1} at version 7; reported patches get 204 version 8."""
    operation = annotation(request, "operation")
    status, body, version = {
        "GET": (200, b'{"desired":{"routes":1,"$version":7},"reported":{}}', None),
        "PATCH": (204, b"", 8),
        "PUT": (200, b"", None),
    }[str(operation)]
    answer: Any = AmqpMessage(body=body, correlation_id=request.correlation_id)
    answer.inferred = True
    answer.annotations = {symbol("status"): status} | ({symbol("version"): version} if version else {})
    return cast(AmqpMessage, answer)


@pytest.fixture
def parent() -> PeerState:
    state = PeerState()
    state.twin = twin_answers
    return state


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def methods() -> EchoMethods:
    return EchoMethods()


@pytest.fixture
async def link(parent: PeerState, cache: FakeCache, methods: EchoMethods) -> AsyncIterator[AmqpUpstream]:
    clock = FakeClock()
    config = UpstreamConfig(SasCredentials("hub", EDGE, KEY), "parent.local", 5671)
    upstream = AmqpUpstream(config, clock, on_behalf=True, opener=parent.opener,
                            probe_backoff=Backoff(initial=0.1, cap=1.0, random=lambda: 0.0))
    upstream.twins = UpstreamTwins(EDGE, clock, cache, methods, multiplexed=True)
    await upstream.start(FakeHub())
    await settle()
    yield upstream
    await upstream.stop()


def operations(parent: PeerState) -> list[tuple[str, str | None, str | None]]:
    return [(address, annotation(m, "operation"), annotation(m, "resource"))
            for address, m in parent.service_requests]


async def test_the_hubs_own_twin_is_read_over_its_twin_link_and_desired_patches_are_asked_for(
        link: AmqpUpstream, parent: PeerState, cache: FakeCache) -> None:
    assert cache.desired == {EDGE: ({"routes": 1}, 7)}
    assert ("/devices/child/modules/$edgeHub/twin", "PUT", "/notifications/twin/properties/desired") \
        in operations(parent)
    assert (TWIN, "GET", None) in operations(parent)
    assert set(parent.last.links) >= {TWIN, METHODS}
    assert link.twins is not None
    assert link.twins.online


async def test_a_desired_patch_without_correlation_id_is_applied(
        link: AmqpUpstream, parent: PeerState, cache: FakeCache) -> None:
    patch = AmqpMessage(body=b'{"routes":2,"$version":8}')
    patch.inferred = True
    patch.annotations = {symbol("version"): 8}
    parent.last.reply(TWIN, patch)
    await settle()
    assert cache.patches == [(EDGE, {"routes": 2, "$version": 8}, 8)]


async def test_reported_properties_go_up_as_a_patch_and_are_marked_synced(
        link: AmqpUpstream, parent: PeerState, cache: FakeCache) -> None:
    cache.pending[EDGE] = {"lastDesiredStatus": {"code": 200}}
    assert link.twins is not None
    link.twins.reported_changed()
    await settle()
    patches = [m for address, m in parent.service_requests if annotation(m, "operation") == "PATCH"]
    assert len(patches) == 1
    assert annotation(patches[0], "resource") == "/properties/reported"
    assert json.loads(body_bytes(patches[0])) == {"lastDesiredStatus": {"code": 200}}
    assert cache.pending == {}


async def test_a_method_call_from_the_parent_is_answered_on_the_method_link(
        link: AmqpUpstream, parent: PeerState, methods: EchoMethods) -> None:
    call = AmqpMessage(body=b'{"x":1}', correlation_id="42", properties={"IoThub-methodname": "ping"})
    call.inferred = True
    parent.last.reply(METHODS, call)
    await settle()
    assert methods.calls == [(EDGE, "ping", b'{"x":1}')]
    answers = [m for address, m in parent.service_requests if address == METHODS]
    assert len(answers) == 1
    assert answers[0].correlation_id == "42"
    properties: dict[Any, Any] = answers[0].properties or {}
    assert properties.get("IoThub-status") == 200
    assert body_bytes(answers[0]) == b'{"x":1}'


async def test_refused_twin_links_leave_the_twin_local_and_telemetry_flowing(
        cache: FakeCache, methods: EchoMethods) -> None:
    parent = PeerState()
    parent.authorize = lambda address, audiences: "amqp:unauthorized-access" if "/twin" in address or \
        "/methods/" in address else None
    clock = FakeClock()
    config = UpstreamConfig(SasCredentials("hub", EDGE, KEY), "parent.local", 5671)
    upstream = AmqpUpstream(config, clock, on_behalf=True, opener=parent.opener)
    upstream.twins = UpstreamTwins(EDGE, clock, cache, methods, multiplexed=True)
    await upstream.start(FakeHub())
    await settle()
    try:
        assert upstream.connected
        assert not upstream.twins.online
        assert cache.desired == {}
    finally:
        await upstream.stop()

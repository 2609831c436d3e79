"""MethodRouter: 404 after connectTimeoutInSeconds, 504 after responseTimeoutInSeconds, 413; virtual time."""

from __future__ import annotations

import asyncio

import pytest

from edgehub.message import Identity
from edgehub.testing.clock import FakeClock, settle
from edgehub.twins.methods import MethodRouter
from edgehub.twins.port import (
    MAX_METHOD_PAYLOAD_BYTES,
    MethodError,
    MethodPort,
    MethodRequest,
    MethodResponse,
)

FILTER = Identity("edge", "filter")
OTHER = Identity("edge", "other")


class Target:
    """A connected client: records what it was asked; answers when told to."""

    def __init__(self) -> None:
        self.requests: list[MethodRequest] = []

    def send_method_request(self, request: MethodRequest) -> None:
        self.requests.append(request)


def start(router: MethodRouter, target: Identity = FILTER, payload: bytes = b'{"x": 1}', *,
          connect: float = 0, response: float = 30) -> asyncio.Task[MethodResponse]:
    return asyncio.ensure_future(
        router.invoke(target, "reboot", payload, connect_timeout=connect, response_timeout=response)
    )


async def failure(task: asyncio.Task[MethodResponse]) -> MethodError:
    with pytest.raises(MethodError) as caught:
        await task
    return caught.value


def test_method_router_is_a_method_port() -> None:
    port: MethodPort = MethodRouter(FakeClock())
    assert port is not None


async def test_attached_target_gets_the_request_and_its_answer_returns() -> None:
    router = MethodRouter(FakeClock())
    target = Target()
    router.attach_method_target(FILTER, target)
    call = start(router)
    await settle()
    [request] = target.requests
    assert (request.name, request.payload) == ("reboot", b'{"x": 1}')
    assert router.respond(FILTER, request.rid, MethodResponse(200, b'{"ok": true}'))
    assert await call == MethodResponse(200, b'{"ok": true}')
    assert not router.respond(FILTER, request.rid, MethodResponse(200, b"null"))  # late: already answered
    assert router.calls_in_flight == 0


async def test_absent_target_is_404_at_once_with_no_connect_timeout() -> None:
    error = await failure(start(MethodRouter(FakeClock())))
    assert error.status == 404


async def test_absent_target_is_404_after_the_connect_timeout() -> None:
    clock = FakeClock()
    router = MethodRouter(clock)
    call = start(router, connect=10)
    await clock.advance(9.9)
    assert not call.done()
    await clock.advance(0.2)
    assert (await failure(call)).status == 404


async def test_target_attaching_within_the_connect_timeout_gets_the_call() -> None:
    clock = FakeClock()
    router = MethodRouter(clock)
    call = start(router, connect=10)
    await clock.advance(5)
    target = Target()
    router.attach_method_target(FILTER, target)
    await settle()
    [request] = target.requests
    router.respond(FILTER, request.rid, MethodResponse(201, b"1"))
    assert (await call).status == 201


async def test_no_answer_is_504_after_the_response_timeout() -> None:
    clock = FakeClock()
    router = MethodRouter(clock)
    target = Target()
    router.attach_method_target(FILTER, target)
    call = start(router, response=5)
    await clock.advance(4.9)
    assert not call.done()
    await clock.advance(0.2)
    assert (await failure(call)).status == 504
    assert not router.respond(FILTER, target.requests[0].rid, MethodResponse(200, b"null"))


async def test_payload_over_128_kib_is_413_and_not_json_is_400() -> None:
    router = MethodRouter(FakeClock())
    router.attach_method_target(FILTER, Target())
    big = b'"' + b"x" * MAX_METHOD_PAYLOAD_BYTES + b'"'
    assert (await failure(start(router, payload=big))).status == 413
    assert (await failure(start(router, payload=b"{nope"))).status == 400


async def test_empty_payload_is_sent_as_json_null() -> None:
    router = MethodRouter(FakeClock())
    target = Target()
    router.attach_method_target(FILTER, target)
    call = start(router, payload=b"")
    await settle()
    assert target.requests[0].payload == b"null"
    call.cancel()


async def test_answer_from_another_identity_is_refused() -> None:
    router = MethodRouter(FakeClock())
    target = Target()
    router.attach_method_target(FILTER, target)
    call = start(router)
    await settle()
    rid = target.requests[0].rid
    assert not router.respond(OTHER, rid, MethodResponse(200, b"null"))
    assert not router.respond(FILTER, "unknown", MethodResponse(200, b"null"))
    assert router.respond(FILTER, rid, MethodResponse(200, b"null"))
    await call


async def test_target_detaching_mid_call_fails_the_call_at_once_with_404() -> None:
    router = MethodRouter(FakeClock())
    target = Target()
    router.attach_method_target(FILTER, target)
    call = start(router)
    await settle()
    router.detach_method_target(FILTER, target)
    assert (await failure(call)).status == 404
    assert not router.is_attached(FILTER)


async def test_newer_target_replaces_the_older_and_its_detach_is_a_no_op() -> None:
    router = MethodRouter(FakeClock())
    old, new = Target(), Target()
    router.attach_method_target(FILTER, old)
    pending = start(router)
    await settle()
    router.attach_method_target(FILTER, new)
    assert (await failure(pending)).status == 404  # the old connection can no longer answer
    router.detach_method_target(FILTER, old)
    assert router.is_attached(FILTER)
    call = start(router)
    await settle()
    assert router.respond(FILTER, new.requests[0].rid, MethodResponse(200, b"null"))
    await call


async def test_a_slow_target_never_blocks_other_calls() -> None:
    clock = FakeClock()
    router = MethodRouter(clock)
    slow, fast = Target(), Target()
    router.attach_method_target(FILTER, slow)
    router.attach_method_target(OTHER, fast)
    slow_call = start(router, FILTER, response=60)
    fast_calls = [start(router, OTHER, response=60) for _ in range(20)]
    await settle()
    for request in fast.requests:
        router.respond(OTHER, request.rid, MethodResponse(200, b"null"))
    assert [(await call).status for call in fast_calls] == [200] * 20
    assert len({request.rid for request in fast.requests}) == 20
    assert not slow_call.done()
    await clock.advance(60)
    assert (await failure(slow_call)).status == 504


async def test_cancelled_call_leaves_nothing_behind() -> None:
    clock = FakeClock()
    router = MethodRouter(clock)
    waiting = start(router, connect=30)
    router.attach_method_target(OTHER, Target())
    answering = start(router, OTHER)
    await settle()
    waiting.cancel()
    answering.cancel()
    await settle()
    assert router.calls_in_flight == 0
    assert clock.sleepers == 0

"""MethodRouter: direct-method calls to local clients, with IoT Hub's 404/504/413 outcomes.

Owns targets, request ids and timeouts (every wait through the injected Clock); calls are
never stored, and it must not speak a protocol (targets put requests on their own wire).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Final

from edgehub.clock import Clock
from edgehub.message import Identity
from edgehub.twins.port import (
    MAX_METHOD_PAYLOAD_BYTES,
    MethodError,
    MethodRequest,
    MethodResponse,
    MethodTarget,
)

NOT_FOUND: Final = 404
GATEWAY_TIMEOUT: Final = 504
TOO_LARGE: Final = 413
BAD_REQUEST: Final = 400


@dataclass(slots=True)
class _Call:
    """One call waiting for its answer from ``target``."""

    identity: Identity
    target: MethodTarget
    answer: asyncio.Future[MethodResponse]


@dataclass(slots=True)
class _Waiters:
    """Calls waiting for a target of one identity to attach."""

    futures: list[asyncio.Future[None]] = field(default_factory=list)


class MethodRouter:
    """Implements edgehub.twins.port.MethodPort.

    As edgeHub's InvokeMethodHandler: a call to a target that is not attached waits up to
    ``connect_timeout`` for it to attach (and subscribe), then fails with 404; a call with
    no answer within ``response_timeout`` fails with 504; a payload over 128 KiB (IoT Hub's
    limit) is 413, one that is not JSON 400. A target that detaches (or is replaced) while
    a call waits for its answer fails that call at once with 404 (IoT Hub: device not
    online) instead of holding it until the response timeout. Each call waits on its own,
    so a slow target never delays another call.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._targets: dict[Identity, MethodTarget] = {}
        self._waiting: dict[Identity, _Waiters] = {}
        self._calls: dict[str, _Call] = {}
        self._rids = itertools.count(1)

    def attach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        previous = self._targets.get(identity)
        self._targets[identity] = target
        if previous is not None and previous is not target:
            self._fail_calls_of(identity, previous, "the client reconnected before answering")
        waiters = self._waiting.pop(identity, None)
        if waiters is not None:
            for future in waiters.futures:
                if not future.done():
                    future.set_result(None)

    def detach_method_target(self, identity: Identity, target: MethodTarget) -> None:
        if self._targets.get(identity) is not target:
            return  # replaced already: the newer one stays
        del self._targets[identity]
        self._fail_calls_of(identity, target, "the client disconnected before answering")

    def _fail_calls_of(self, identity: Identity, target: MethodTarget, reason: str) -> None:
        for rid, call in list(self._calls.items()):
            if call.identity == identity and call.target is target and not call.answer.done():
                call.answer.set_exception(MethodError(NOT_FOUND, f"{identity}: {reason}"))
                del self._calls[rid]

    def is_attached(self, identity: Identity) -> bool:
        return identity in self._targets

    @property
    def calls_in_flight(self) -> int:
        return len(self._calls)

    def respond(self, identity: Identity, rid: str, response: MethodResponse) -> bool:
        call = self._calls.get(rid)
        if call is None or call.identity != identity or call.answer.done():
            return False  # late, unknown, or another identity's call
        del self._calls[rid]
        call.answer.set_result(response)
        return True

    async def invoke(
        self, target: Identity, name: str, payload: bytes, *,
        connect_timeout: float, response_timeout: float, caller: Identity | None = None,
    ) -> MethodResponse:
        if len(payload) > MAX_METHOD_PAYLOAD_BYTES:
            reason = f"payload of {len(payload)} bytes is over {MAX_METHOD_PAYLOAD_BYTES}"
            raise MethodError(TOO_LARGE, reason)
        _check_json(payload)
        if not name:
            raise MethodError(BAD_REQUEST, "a method name is required")
        if connect_timeout < 0 or response_timeout < 0:
            raise MethodError(BAD_REQUEST, "timeouts must not be negative")
        session = await self._attached(target, connect_timeout)
        loop = asyncio.get_running_loop()
        rid = f"{next(self._rids):x}"
        call = _Call(target, session, loop.create_future())
        self._calls[rid] = call
        try:
            session.send_method_request(MethodRequest(name, rid, payload or b"null"))
            if not await self._wait(call.answer, response_timeout):
                reason = f"{target} did not answer {name} in {response_timeout:g} s"
                raise MethodError(GATEWAY_TIMEOUT, reason)
            return call.answer.result()
        finally:
            if self._calls.get(rid) is call:
                del self._calls[rid]

    async def _attached(self, identity: Identity, connect_timeout: float) -> MethodTarget:
        target = self._targets.get(identity)
        if target is not None:
            return target
        if connect_timeout > 0:
            arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiters = self._waiting.setdefault(identity, _Waiters())
            waiters.futures.append(arrived)
            try:
                await self._wait(arrived, connect_timeout)
            finally:
                if arrived in waiters.futures:
                    waiters.futures.remove(arrived)
                if not waiters.futures and self._waiting.get(identity) is waiters:
                    del self._waiting[identity]
            target = self._targets.get(identity)
            if target is not None:
                return target
        raise MethodError(NOT_FOUND, f"{identity} is not connected or not subscribed to methods")

    async def _wait(self, future: asyncio.Future[Any], seconds: float) -> bool:
        """Wait for ``future`` up to ``seconds`` of the clock (not asyncio.timeout: that reads
        the loop's clock, and tests run in virtual time); True when it is done."""
        if future.done():
            return True
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait([future, timer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return future.done()


def _check_json(payload: bytes) -> None:
    if not payload:
        return
    try:
        json.loads(payload.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MethodError(BAD_REQUEST, "the method payload is not JSON") from None

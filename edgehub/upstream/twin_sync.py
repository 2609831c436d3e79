"""Twins and direct methods across the upstream link: desired properties down, reported up, calls down.

Owns the request ids, feeds and retries of that traffic on whichever connection the link has; the
twin records themselves belong to the twin core (TwinCache) and method calls to the local method
router. Toward a parent edge hub it speaks for every local identity it follows, in edgeHub's indirect
dialect; toward a cloud IoT hub, which authorizes one identity per connection, only for its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, Final, Protocol

from edgehub.clock import Clock, within
from edgehub.iothub.twin_topics import (
    Feed,
    Operation,
    feed_filter,
    method_name,
    method_response_topic,
    parse_response,
    twin_request_topic,
)
from edgehub.message import Identity
from edgehub.twins.port import JsonObject, MethodError, MethodPort
from edgehub.upstream.connection import SUBACK_FAILURE, IncomingPublish, UpstreamConnection

log = logging.getLogger(__name__)

REQUEST_TIMEOUT: Final = 10.0
"""Seconds a twin request upstream may take before it counts as failed (the link retries later)."""
SYNC_RETRY: Final = 5.0
"""Seconds between attempts to push reported properties the parent has not confirmed."""
UPSTREAM_METHOD_TIMEOUT: Final = 30.0
"""Seconds a method call from upstream waits for the local target (edgeHub's default response timeout)."""
_FEEDS: Final = (Feed.TWIN_RESPONSES, Feed.DESIRED_PATCHES, Feed.METHOD_REQUESTS)


class TwinCache(Protocol):
    """What the sync needs of the local twin core (edgehub.twins.service.TwinService)."""

    def replace_desired(self, identity: Identity, desired: Mapping[str, Any], version: int) -> object: ...

    def apply_desired_patch(
        self, identity: Identity, patch: Mapping[str, Any], version: int | None,
    ) -> object: ...

    def needs_full_desired(self, identity: Identity, version: int) -> bool: ...

    def pending_reported(self) -> dict[Identity, JsonObject]: ...

    def mark_reported_synced(self, identity: Identity, patch: Mapping[str, Any]) -> None: ...


class UpstreamTwins:
    """Follows local identities' twins on the parent and answers the parent's method calls.

    ``connected(connection)`` after each connect: subscribe the feeds of every followed identity,
    read each twin (desired properties replace the cached ones: upstream is the source of truth),
    then push pending reported properties. ``follow(identity)`` adds one (a local client used its
    twin or subscribed to methods). ``on_publish`` takes what the parent sends on ``$iothub/``.
    """

    def __init__(
        self, own: Identity, clock: Clock, twins: TwinCache, methods: MethodPort, *, multiplexed: bool,
        request_timeout: float = REQUEST_TIMEOUT, sync_retry: float = SYNC_RETRY, follow_own: bool = True,
    ) -> None:
        self.own = own
        self._clock = clock
        self._twins = twins
        self._methods = methods
        self._multiplexed = multiplexed
        self._request_timeout = request_timeout
        self._sync_retry = sync_retry
        self._followed: set[Identity] = {own} if follow_own else set()
        """Whose twins this link keeps in step (a sender's own link: only once its client used it)."""
        self._subscribed: set[Identity] = set()
        self._connection: UpstreamConnection | None = None
        self._serves_twins = False
        """Whether the parent of this connection answered a twin request (a plain MQTT broker never does)."""
        self._pending: dict[str, asyncio.Future[tuple[int, bytes]]] = {}
        self._rids = itertools.count(1)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what the hub tells it -------------------------------------------------------------------

    def may_follow(self, identity: Identity) -> bool:
        """Whether the parent can hold ``identity``'s twin for this hub (a cloud hub: only its own)."""
        return identity == self.own or self._multiplexed

    def follow(self, identity: Identity) -> None:
        """Keep ``identity``'s twin in step with the parent from now on (no-op if it cannot)."""
        if identity in self._followed or not self.may_follow(identity):
            return
        self._followed.add(identity)
        connection = self._connection
        if identity == self.own and connection is not None and connection.is_open:
            self._spawn(self._start(connection))
            return
        if self.online and connection is not None and self._serves_twins:
            self._spawn(self._catch_up(connection, [identity]))

    def reported_changed(self) -> None:
        """New reported properties wait to go up."""
        self._wake.set()

    @property
    def online(self) -> bool:
        """Connected to a parent that serves twins."""
        return self._connection is not None and self._connection.is_open and self._serves_twins

    async def refresh(self, identity: Identity) -> bool:
        """Read ``identity``'s twin from the parent into the cache now; False when offline or it failed."""
        connection = self._connection
        if not self.online or connection is None or not self.may_follow(identity):
            return False
        return await self._read_twin(connection, identity)

    # --- the link's life -------------------------------------------------------------------------

    def connected(self, connection: UpstreamConnection) -> None:
        """A new connection: find out in the background whether the parent serves twins, and
        catch up (never holds up the link: a plain MQTT broker does not answer)."""
        self._connection = connection
        self._serves_twins = False
        self._subscribed.clear()
        self._spawn(self._start(connection))

    async def _start(self, connection: UpstreamConnection) -> None:
        if self.own not in self._followed:
            return  # a sender's own link: nothing of its twin is used yet
        await self._catch_up(connection, [self.own])
        if self.own not in self._subscribed or connection is not self._connection:
            return
        if not self._serves_twins:
            log.info("upstream: the parent did not answer a twin request; twins stay local for now")
            return
        others = sorted((i for i in self._followed if i != self.own), key=str)
        await self._catch_up(connection, others)
        self._wake.set()

    def disconnected(self) -> None:
        self._connection = None
        self._serves_twins = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("upstream connection lost"))
        self._pending.clear()

    async def run(self) -> None:
        """Push reported properties whenever they change or a retry is due; runs until cancelled."""
        while True:
            self._wake.clear()
            connection = self._connection
            done = True
            if connection is not None and self.online:
                try:
                    done = await self._push_reported(connection)
                except Exception:
                    log.exception("upstream: pushing reported properties failed; retrying")
                    done = False
            if done:
                await self._wake.wait()
            else:
                await self._clock.sleep(self._sync_retry)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.disconnected()

    # --- from the parent ------------------------------------------------------------------------

    def on_publish(self, publish: IncomingPublish, connection: UpstreamConnection) -> bool:
        """Take a twin response, desired patch or method call; False when ``publish`` is none."""
        parsed = parse_response(publish.topic)
        if parsed is None:
            return False
        feed, target, key, status = parsed
        identity = target or self.own
        if feed is Feed.TWIN_RESPONSES:
            future = self._pending.pop(key, None)
            if future is not None and not future.done():
                future.set_result((status, publish.payload))
        elif feed is Feed.DESIRED_PATCHES:
            self._on_desired_patch(identity, key, publish.payload)
        else:
            name = method_name(publish.topic)
            if name is not None:
                self._spawn(self._call_local(connection, identity, target, name, key, publish.payload))
        if publish.qos:
            connection.ack(publish.mid)
        return True

    def _on_desired_patch(self, identity: Identity, version_text: str, payload: bytes) -> None:
        try:
            patch = json.loads(payload)
            version = int(version_text)
        except ValueError:
            log.warning("upstream: malformed desired patch for %s ignored", identity)
            return
        if not isinstance(patch, dict):
            log.warning("upstream: desired patch for %s is not an object; ignored", identity)
            return
        try:
            if self._twins.needs_full_desired(identity, version):
                # A version gap: a patch was missed (edgeHub reads the whole twin then too).
                connection = self._connection
                if connection is not None:
                    self._spawn(self._refetch(connection, identity))
                return
            self._twins.apply_desired_patch(identity, patch, version)
        except Exception:
            log.exception("upstream: desired patch for %s could not be applied", identity)

    async def _refetch(self, connection: UpstreamConnection, identity: Identity) -> None:
        await self._read_twin(connection, identity)

    async def _call_local(
        self, connection: UpstreamConnection, identity: Identity, target: Identity | None,
        name: str, rid: str, payload: bytes,
    ) -> None:
        try:
            response = await self._methods.invoke(
                identity, name, payload, connect_timeout=0, response_timeout=UPSTREAM_METHOD_TIMEOUT)
            status, body = response.status, response.payload
        except MethodError as exc:
            status, body = exc.status, json.dumps({"errorCode": exc.status, "message": exc.reason}).encode()
        if connection.is_open:
            connection.publish(method_response_topic(status, rid, target), body)

    # --- to the parent --------------------------------------------------------------------------

    def _dialect(self, identity: Identity) -> Identity | None:
        return None if identity == self.own else identity

    async def _catch_up(self, connection: UpstreamConnection, identities: list[Identity]) -> None:
        for identity in identities:
            if identity not in self._subscribed:
                filters = [feed_filter(feed, self._dialect(identity)) for feed in _FEEDS]
                granted = await connection.subscribe(filters)
                if any(code >= SUBACK_FAILURE for code in granted):
                    log.warning("upstream: the parent refused twin and method feeds of %s", identity)
                    continue
                self._subscribed.add(identity)
            await self._read_twin(connection, identity)

    async def _request(
        self, connection: UpstreamConnection, operation: Operation, identity: Identity, body: bytes,
    ) -> tuple[int, bytes] | None:
        rid = str(next(self._rids))
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        connection.publish(twin_request_topic(operation, rid, self._dialect(identity)), body)
        try:
            answered = await within(self._clock, future, self._request_timeout)
        finally:
            self._pending.pop(rid, None)
        if not answered:
            log.info("upstream: twin %s of %s timed out", operation.value, identity)
            return None
        if future.exception() is not None:
            return None
        self._serves_twins = True
        return future.result()

    async def _read_twin(self, connection: UpstreamConnection, identity: Identity) -> bool:
        answer = await self._request(connection, Operation.GET_TWIN, identity, b"")
        if answer is None:
            return False
        status, body = answer
        if status != 200:
            log.info("upstream: twin of %s not read: status %d", identity, status)
            return False
        try:
            twin = json.loads(body)
            desired = dict(twin["desired"])
            version = int(desired.pop("$version", 0))
        except (ValueError, KeyError, TypeError):
            log.warning("upstream: malformed twin of %s from the parent ignored", identity)
            return False
        self._twins.replace_desired(identity, desired, version)
        return True

    async def _push_reported(self, connection: UpstreamConnection) -> bool:
        """Send every pending reported patch; True when the parent confirmed them all."""
        all_done = True
        for identity, patch in self._twins.pending_reported().items():
            if not self.may_follow(identity):
                continue  # another connection's to send (per-identity upstream), or nobody's
            body = json.dumps(patch, separators=(",", ":")).encode()
            answer = await self._request(connection, Operation.PATCH_REPORTED, identity, body)
            if answer is not None and 200 <= answer[0] < 300:
                self._twins.mark_reported_synced(identity, patch)
            elif answer is not None and 400 <= answer[0] < 500 and answer[0] != 429:
                log.warning("upstream: the parent refused reported properties of %s (status %d); dropped",
                            identity, answer[0])
                self._twins.mark_reported_synced(identity, patch)
            else:
                all_done = False
        return all_done

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(_logged(coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _logged(coroutine: Coroutine[None, None, None]) -> None:
    """Background twin work never dies silently; a lost connection just ends it (the next
    connect catches up)."""
    try:
        await coroutine
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - logged; the link's next connect catches up
        log.warning("upstream: twin sync step failed: %r", exc)

"""The hub core in virtual time: ingest → route → store → pump → client link, TTL, reload."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import pytest

from edgehub import metrics
from edgehub.config_file import HubConfig, parse_config
from edgehub.endpoints.module import ClientDirectory, DeviceboundEndpoint, ModuleInputEndpoint
from edgehub.errors import EndpointUnavailable
from edgehub.hub import Hub, local_endpoint
from edgehub.message import DEFAULT_PRIORITY, Identity, Message, SystemProperty
from edgehub.settings import load_settings
from edgehub.store.base import QueueKey, Store
from edgehub.store.open import open_store
from edgehub.testing.clock import FakeClock, settle

SENSOR = {SystemProperty.CONNECTION_DEVICE_ID: "sensor1"}
FILTER_OUT = {SystemProperty.CONNECTION_DEVICE_ID: "edge", SystemProperty.CONNECTION_MODULE_ID: "filter",
              SystemProperty.OUTPUT_NAME: "out"}


def config(routes: dict[str, object], ttl: int = 7200) -> HubConfig:
    return parse_config({"schemaVersion": "1.1", "routes": routes,
                         "storeAndForwardConfiguration": {"timeToLiveSecs": ttl}}, "test")


class RecordingLink:
    """A connected client that acknowledges everything (or refuses while ``offline``)."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, bytes]] = []
        self.offline = False

    async def deliver(self, input_name: str | None, messages: Sequence[Message]) -> int:
        if self.offline:
            raise EndpointUnavailable("gone")
        self.received.extend((input_name, m.body) for m in messages)
        return len(messages)


async def until(predicate: Callable[[], bool], clock: FakeClock | None = None) -> None:
    """Run the loop (and virtual time, a second a step) until ``predicate`` holds; bounded."""
    for _ in range(200):
        if predicate():
            return
        if clock is not None:
            await clock.advance(1)
        else:
            await settle()
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_telemetry_routed_to_a_module_input_reaches_the_attached_module(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(config({"r": 'FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) '
                                'INTO BrokeredEndpoint("/modules/filter/inputs/in1")'}))
    await hub.start()
    link = RecordingLink()
    hub.attach(Identity("edge", "filter"), link)
    await hub.ingest([Message(b"one", {}, SENSOR), Message(b"two", {}, SENSOR)])
    await until(lambda: len(link.received) == 2)
    assert link.received == [("in1", b"one"), ("in1", b"two")]
    await until(lambda: hub.store.stats().message_count == 0)


async def test_messages_wait_for_an_offline_module_and_arrive_in_order_when_it_attaches(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(config({"r": 'FROM /messages/* INTO BrokeredEndpoint("/modules/filter/inputs/in1")'}))
    await hub.start()
    await hub.ingest([Message(str(n).encode(), {}, SENSOR) for n in range(5)])
    assert hub.store.stats().message_count == 5
    link = RecordingLink()
    hub.attach(Identity("edge", "filter"), link)
    await until(lambda: len(link.received) == 5)
    assert [body for _, body in link.received] == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_message_no_route_matches_is_not_stored_and_is_counted(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(config({"r": "FROM /messages/modules/filter/* INTO $upstream"}))
    await hub.start()
    before = metrics.MESSAGES_DROPPED.labels("no_route", "", "")._value.get()
    await hub.ingest([Message(b"device telemetry", {}, SENSOR)])
    assert hub.store.stats().message_count == 0
    assert metrics.MESSAGES_DROPPED.labels("no_route", "", "")._value.get() == before + 1


async def test_one_message_for_two_endpoints_is_stored_once_with_two_refs(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(config({
        "up": {"route": "FROM /messages/* INTO $upstream", "priority": 1, "timeToLiveSecs": 0},
        "in": 'FROM /messages/modules/filter/outputs/out INTO BrokeredEndpoint("/modules/sink/inputs/x")',
    }))
    await hub.start()
    await hub.ingest([Message(b"m", {}, FILTER_OUT)])
    stats = hub.store.stats()
    assert stats.message_count == 1
    lengths = {q.queue: q.length for q in stats.queues}
    assert lengths[QueueKey("$upstream", 1)] == 1
    assert lengths[QueueKey("/modules/sink/inputs/x", DEFAULT_PRIORITY)] == 1


async def test_standalone_hub_keeps_upstream_messages_until_their_ttl_then_drops_them(
    make_hub: Callable[[HubConfig], Hub], clock: FakeClock,
) -> None:
    hub = make_hub(config({"up": {"route": "FROM /messages/* INTO $upstream", "priority": 0,
                                  "timeToLiveSecs": 30}}))
    await hub.start()
    await hub.ingest([Message(b"waits", {}, SENSOR)])
    await clock.advance(20)
    assert hub.store.stats().message_count == 1
    # TTL 30 s, cleanup every 5 s: gone within seconds of expiry (edgeHub: up to 30 min).
    await until(lambda: hub.store.stats().message_count == 0, clock)
    assert clock.monotonic() <= 30 + 5 + 2


async def test_a_reloaded_config_routes_new_messages_by_the_new_routes(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(config({"r": 'FROM /messages/* INTO BrokeredEndpoint("/modules/a/inputs/in")'}))
    await hub.start()
    hub.apply_config(config({"r": 'FROM /messages/* INTO BrokeredEndpoint("/modules/b/inputs/in")'}))
    await hub.ingest([Message(b"m", {}, SENSOR)])
    queues = {q.queue.endpoint for q in hub.store.stats().queues if q.length}
    assert queues == {"/modules/b/inputs/in"}


async def test_messages_from_upstream_are_queued_for_their_device_and_delivered_when_it_connects(
    make_hub: Callable[[HubConfig], Hub],
) -> None:
    hub = make_hub(config({}))
    await hub.start()
    await hub.enqueue("/devices/sensor1/messages/devicebound", [Message(b"c2d")])
    link = RecordingLink()
    hub.attach(Identity("sensor1"), link)
    await until(lambda: link.received == [(None, b"c2d")])


@pytest.mark.parametrize("backend", ["rocksdb", "sqlite"])
async def test_stop_releases_the_store_with_every_acked_message_in_it(
    tmp_path: Path, clock: FakeClock, backend: Literal["rocksdb", "sqlite"],
) -> None:
    def store() -> Store:
        return open_store(tmp_path, backend=backend, sync=False, low_memory=True, max_size_bytes=None,
                          recovery="fail")

    hub = Hub(load_settings({}), config({"up": "FROM /messages/* INTO $upstream"}), store(), clock=clock)
    await hub.start()
    await hub.ingest([Message(b"m", {}, SENSOR)])
    await hub.stop()
    reopened = store()  # RocksDB refuses a second open while the first holds its lock
    try:
        assert reopened.stats().message_count == 1
    finally:
        reopened.close()


def test_local_endpoint_names_map_to_module_input_and_devicebound_endpoints() -> None:
    directory = ClientDirectory()
    module = local_endpoint(directory, "edge", "/modules/filter/inputs/in1")
    device = local_endpoint(directory, "edge", "/devices/s1/messages/devicebound")
    assert isinstance(module, ModuleInputEndpoint)
    assert isinstance(device, DeviceboundEndpoint)
    with pytest.raises(ValueError, match="not a local endpoint"):
        local_endpoint(directory, "edge", "/somewhere/else")


async def test_queue_length_and_store_size_gauges_follow_the_store_at_each_cleanup(
    make_hub: Callable[[HubConfig], Hub], clock: FakeClock,
) -> None:
    hub = make_hub(config({"up": {"route": "FROM /messages/* INTO $upstream", "priority": 3,
                                  "timeToLiveSecs": 0}}))
    await hub.start()
    await hub.ingest([Message(b"m", {}, SENSOR) for _ in range(4)])
    gauge = metrics.QUEUE_LENGTH.labels("$upstream", "3")
    await until(lambda: gauge._value.get() == 4, clock)
    assert metrics.STORE_SIZE._value.get() == hub.store.size_bytes() > 0

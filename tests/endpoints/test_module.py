"""Tests of ClientDirectory, ModuleInputEndpoint and DeviceboundEndpoint, alone and under a pump.

Virtual time only (FakeClock); links are FakeLink; the store is MemoryStore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from edgehub.endpoints.backoff import Backoff
from edgehub.endpoints.module import (
    ClientDirectory,
    DeviceboundEndpoint,
    ModuleInputEndpoint,
    devicebound_endpoint_name,
    module_input_endpoint_name,
)
from edgehub.endpoints.pump import EndpointPump
from edgehub.errors import EndpointUnavailable
from edgehub.message import Identity, Message
from edgehub.store.base import QueuedMessage, QueueKey
from edgehub.store.memory import MemoryStore
from edgehub.testing.clock import FakeClock, settle
from tests.endpoints.fakes import Delivered, FakeLink, enqueue, queued_ids

FILTER = Identity("edge", "filter")
SENSOR = Identity("sensor-1")
FILTER_INPUT = "/modules/filter/inputs/input1"


def queued(*bodies: bytes) -> list[QueuedMessage]:
    queue = QueueKey(FILTER_INPUT)
    return [QueuedMessage(i + 1, queue, 2**62, Message(body)) for i, body in enumerate(bodies)]


@pytest.fixture
def directory() -> ClientDirectory:
    return ClientDirectory()


# -- names ---------------------------------------------------------------------


def test_endpoint_names_match_the_route_and_topic_scheme() -> None:
    assert module_input_endpoint_name("filter", "input1") == FILTER_INPUT
    assert devicebound_endpoint_name("sensor-1") == "/devices/sensor-1/messages/devicebound"


def test_endpoints_are_named_after_their_queue(directory: ClientDirectory) -> None:
    assert ModuleInputEndpoint(directory, FILTER, "input1").name == FILTER_INPUT
    assert DeviceboundEndpoint(directory, SENSOR).name == "/devices/sensor-1/messages/devicebound"


def test_module_endpoint_refuses_a_device_and_an_empty_input(directory: ClientDirectory) -> None:
    with pytest.raises(ValueError, match="is a device"):
        ModuleInputEndpoint(directory, SENSOR, "input1")
    with pytest.raises(ValueError, match="input name"):
        ModuleInputEndpoint(directory, FILTER, "")


def test_devicebound_endpoint_refuses_a_module(directory: ClientDirectory) -> None:
    with pytest.raises(ValueError, match="is a module"):
        DeviceboundEndpoint(directory, FILTER)


def test_batch_size_must_be_positive(directory: ClientDirectory) -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        ModuleInputEndpoint(directory, FILTER, "input1", max_batch_size=0)


# -- directory -----------------------------------------------------------------


def test_attach_replaces_an_older_link(directory: ClientDirectory) -> None:
    old, new = FakeLink(), FakeLink()
    directory.attach(FILTER, old)
    directory.attach(FILTER, new)
    assert directory.link(FILTER) is new
    assert len(directory) == 1


def test_detach_of_a_stale_link_keeps_the_current_one(directory: ClientDirectory) -> None:
    old, new = FakeLink(), FakeLink()
    directory.attach(FILTER, old)
    directory.attach(FILTER, new)
    assert directory.detach(FILTER, old) is False
    assert directory.link(FILTER) is new
    assert directory.detach(FILTER, new) is True
    assert directory.link(FILTER) is None


def test_attach_notifies_only_that_identitys_listeners(directory: ClientDirectory) -> None:
    woken: list[str] = []
    unsubscribe = directory.subscribe_attach(FILTER, lambda: woken.append("filter"))
    directory.subscribe_attach(SENSOR, lambda: woken.append("sensor"))
    directory.attach(FILTER, FakeLink())
    unsubscribe()
    directory.attach(FILTER, FakeLink())
    assert woken == ["filter"]


# -- sending -------------------------------------------------------------------


async def test_send_to_an_offline_module_is_unavailable(directory: ClientDirectory) -> None:
    endpoint = ModuleInputEndpoint(directory, FILTER, "input1")
    with pytest.raises(EndpointUnavailable, match="edge/filter is not connected"):
        await endpoint.send(queued(b"a"))


async def test_module_input_delivers_on_the_named_input(directory: ClientDirectory) -> None:
    link = FakeLink()
    directory.attach(FILTER, link)
    result = await ModuleInputEndpoint(directory, FILTER, "input1").send(queued(b"a", b"b"))
    assert result.delivered == 2
    assert link.deliveries == [Delivered("input1", [b"a", b"b"])]


async def test_devicebound_delivers_without_an_input_name(directory: ClientDirectory) -> None:
    link = FakeLink()
    directory.attach(SENSOR, link)
    result = await DeviceboundEndpoint(directory, SENSOR).send(queued(b"c2d"))
    assert result.delivered == 1
    assert link.deliveries == [Delivered(None, [b"c2d"])]


async def test_send_reports_the_acknowledged_prefix_within_bounds(directory: ClientDirectory) -> None:
    endpoint = ModuleInputEndpoint(directory, FILTER, "input1")
    directory.attach(FILTER, FakeLink(acks=1))
    assert (await endpoint.send(queued(b"a", b"b"))).delivered == 1
    directory.attach(FILTER, FakeLink(acks=9))
    assert (await endpoint.send(queued(b"a", b"b"))).delivered == 2


async def test_a_closed_session_is_unavailable(directory: ClientDirectory) -> None:
    link = FakeLink()
    link.gone = True
    directory.attach(FILTER, link)
    with pytest.raises(EndpointUnavailable):
        await ModuleInputEndpoint(directory, FILTER, "input1").send(queued(b"a"))


# -- under a pump --------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def filter_pump(
    directory: ClientDirectory, clock: FakeClock
) -> AsyncIterator[tuple[EndpointPump, MemoryStore]]:
    store = MemoryStore()
    endpoint = ModuleInputEndpoint(directory, FILTER, "input1", max_batch_size=2)
    pump = EndpointPump(store, endpoint, clock, backoff=Backoff(random=lambda: 0.0))
    yield pump, store
    await pump.stop(grace=0)


async def test_offline_module_gets_its_queued_messages_in_order_when_it_attaches(
    filter_pump: tuple[EndpointPump, MemoryStore], directory: ClientDirectory, clock: FakeClock
) -> None:
    pump, store = filter_pump
    enqueue(store, FILTER_INPUT, [b"1", b"2", b"3", b"4", b"5"])
    pump.start()
    await clock.advance(40)  # offline: failed at 0, 1, 3, 7, 15, 31; next try at 63
    link = FakeLink()
    directory.attach(FILTER, link)
    await settle()
    assert link.bodies == [b"1", b"2", b"3", b"4", b"5"]  # at 40, not 63
    assert clock.monotonic() == 40
    assert queued_ids(store, FILTER_INPUT) == []


async def test_delivery_follows_the_replacing_link(
    filter_pump: tuple[EndpointPump, MemoryStore], directory: ClientDirectory
) -> None:
    pump, store = filter_pump
    old, new = FakeLink(), FakeLink()
    directory.attach(FILTER, old)
    pump.start()
    directory.attach(FILTER, new)
    directory.detach(FILTER, old)  # the old session's late close changes nothing
    enqueue(store, FILTER_INPUT, [b"a"])
    pump.notify()
    await settle()
    assert old.bodies == []
    assert new.bodies == [b"a"]


async def test_detached_module_keeps_its_messages_queued(
    filter_pump: tuple[EndpointPump, MemoryStore], directory: ClientDirectory, clock: FakeClock
) -> None:
    pump, store = filter_pump
    link = FakeLink()
    directory.attach(FILTER, link)
    pump.start()
    await settle()
    directory.detach(FILTER, link)
    ids = enqueue(store, FILTER_INPUT, [b"kept"])
    pump.notify()
    await clock.advance(100)
    assert link.bodies == []
    assert queued_ids(store, FILTER_INPUT) == ids

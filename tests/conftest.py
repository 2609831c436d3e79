"""Fixtures shared by the hub tests: a fake clock, hubs on memory stores."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from edgehub.config_file import HubConfig
from edgehub.hub import Hub
from edgehub.settings import load_settings
from edgehub.store.memory import MemoryStore
from edgehub.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_hub(clock: FakeClock) -> AsyncIterator[Callable[[HubConfig], Hub]]:
    hubs: list[Hub] = []
    settings = load_settings({"MessageCleanupIntervalSecs": "5"})

    def make(cfg: HubConfig) -> Hub:
        hub = Hub(settings, cfg, MemoryStore(), clock=clock)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.stop()

"""TwinService: durable twins, reported patches and their sync, desired from manifest and upstream."""

from __future__ import annotations

import pytest

from edgehub.message import Identity
from edgehub.store.memory import MemoryKeyValue, MemoryStore
from edgehub.twins.port import JsonObject, TwinError, TwinPort
from edgehub.twins.records import TwinRecord, TwinStore
from edgehub.twins.service import TwinService

FILTER = Identity("edge", "filter")
SENSOR = Identity("sensor")


class Recorder:
    """Collects desired patches and reported-hook calls."""

    def __init__(self) -> None:
        self.desired: list[JsonObject] = []
        self.reported: list[tuple[Identity, JsonObject, int]] = []

    def on_desired(self, patch: JsonObject) -> None:
        self.desired.append(patch)

    def on_reported(self, identity: Identity, patch: JsonObject, version: int) -> None:
        self.reported.append((identity, patch, version))


@pytest.fixture
def kv() -> MemoryKeyValue:
    return MemoryKeyValue()


def service_on(kv: MemoryKeyValue, recorder: Recorder | None = None) -> TwinService:
    store: TwinStore = MemoryStore(kv=kv)  # the store satisfies TwinStore structurally
    return TwinService(store, on_reported=recorder.on_reported if recorder else None)


def test_twin_service_is_a_twin_port(kv: MemoryKeyValue) -> None:
    port: TwinPort = service_on(kv)
    assert port is not None


async def test_new_twin_is_empty_at_version_one(kv: MemoryKeyValue) -> None:
    twin = await service_on(kv).get_twin(FILTER)
    assert twin == {"desired": {"$version": 1}, "reported": {"$version": 1}}


# --- reported ----------------------------------------------------------------------------------


async def test_reported_patch_is_merged_versioned_and_survives_reopen(kv: MemoryKeyValue) -> None:
    recorder = Recorder()
    twins = service_on(kv, recorder)
    assert await twins.patch_reported(FILTER, {"a": 1, "b": {"c": 2}}) == 2
    assert await twins.patch_reported(FILTER, {"a": None, "b": {"d": 3}, "$version": 99}) == 3
    assert recorder.reported == [
        (FILTER, {"a": 1, "b": {"c": 2}}, 2),
        (FILTER, {"a": None, "b": {"d": 3}}, 3),
    ]
    reopened = service_on(kv)
    twin = await reopened.get_twin(FILTER)
    assert twin["reported"] == {"b": {"c": 2, "d": 3}, "$version": 3}


async def test_refused_reported_patch_changes_nothing(kv: MemoryKeyValue) -> None:
    recorder = Recorder()
    twins = service_on(kv, recorder)
    await twins.patch_reported(FILTER, {"keep": 1})
    writes = kv.writes
    for bad in ({"a.b": 1}, {"big": "x" * 5000}, {f"k{n}": "x" * 4000 for n in range(9)}):
        with pytest.raises(TwinError) as caught:
            await twins.patch_reported(FILTER, bad)
        assert caught.value.status == 400
    assert kv.writes == writes
    assert len(recorder.reported) == 1
    assert (await twins.get_twin(FILTER))["reported"] == {"keep": 1, "$version": 2}


async def test_a_failing_reported_hook_does_not_fail_the_patch(kv: MemoryKeyValue) -> None:
    def broken(identity: Identity, patch: JsonObject, version: int) -> None:
        raise RuntimeError("hub is busy")

    twins = TwinService(MemoryStore(kv=kv), on_reported=broken)
    assert await twins.patch_reported(FILTER, {"a": 1}) == 2


async def test_pending_reported_coalesces_patches_and_latest_wins(kv: MemoryKeyValue) -> None:
    twins = service_on(kv)
    await twins.patch_reported(FILTER, {"a": 1, "b": 1})
    await twins.patch_reported(FILTER, {"a": 2, "b": None, "c": {"d": 1}})
    await twins.patch_reported(SENSOR, {"x": True})
    assert twins.pending_reported() == {FILTER: {"a": 2, "c": {"d": 1}}, SENSOR: {"x": True}}


async def test_synced_patch_is_no_longer_pending_but_a_newer_one_stays(kv: MemoryKeyValue) -> None:
    twins = service_on(kv)
    await twins.patch_reported(FILTER, {"a": 1})
    sent = twins.pending_reported()[FILTER]
    await twins.patch_reported(FILTER, {"a": 2, "b": 1})  # arrives while `sent` is in flight
    twins.mark_reported_synced(FILTER, sent)
    assert twins.pending_reported() == {FILTER: {"a": 2, "b": 1}}
    twins.mark_reported_synced(FILTER, twins.pending_reported()[FILTER])
    assert twins.pending_reported() == {}
    await twins.patch_reported(FILTER, {"b": None})
    assert twins.pending_reported() == {FILTER: {"b": None}}


async def test_pending_reported_survives_a_restart(kv: MemoryKeyValue) -> None:
    twins = service_on(kv)
    await twins.patch_reported(FILTER, {"a": 1})
    twins.mark_reported_synced(FILTER, {"a": 1})
    await twins.patch_reported(FILTER, {"a": None, "z": 0})
    assert service_on(kv).pending_reported() == {FILTER: {"a": None, "z": 0}}


# --- desired from the manifest ------------------------------------------------------------------


async def test_manifest_desired_change_pushes_only_the_difference(kv: MemoryKeyValue) -> None:
    recorder = Recorder()
    twins = service_on(kv)
    twins.subscribe_desired(FILTER, recorder.on_desired)
    first = twins.set_desired(FILTER, {"threshold": 10, "mode": {"a": 1, "b": 2}})
    assert first == {"threshold": 10, "mode": {"a": 1, "b": 2}, "$version": 2}
    assert twins.set_desired(FILTER, {"threshold": 10, "mode": {"a": 1, "b": 2}}) is None
    second = twins.set_desired(FILTER, {"mode": {"a": 1, "b": 3}, "new": True})
    assert second == {"threshold": None, "mode": {"b": 3}, "new": True, "$version": 3}
    assert recorder.desired == [first, second]
    assert (await service_on(kv).get_twin(FILTER))["desired"] == {
        "mode": {"a": 1, "b": 3}, "new": True, "$version": 3,
    }


async def test_offline_module_reads_the_full_twin_on_its_next_get(kv: MemoryKeyValue) -> None:
    twins = service_on(kv)
    twins.set_desired(FILTER, {"a": 1})
    twins.set_desired(FILTER, {"a": 2, "b": 1})
    assert (await twins.get_twin(FILTER))["desired"] == {"a": 2, "b": 1, "$version": 3}


def test_unsubscribed_listener_gets_no_more_patches(kv: MemoryKeyValue) -> None:
    recorder = Recorder()
    twins = service_on(kv)
    unsubscribe = twins.subscribe_desired(FILTER, recorder.on_desired)
    twins.subscribe_desired(FILTER, lambda patch: (_ for _ in ()).throw(RuntimeError("broken")))
    twins.set_desired(FILTER, {"a": 1})
    unsubscribe()
    unsubscribe()
    twins.set_desired(FILTER, {"a": 2})
    assert recorder.desired == [{"a": 1, "$version": 2}]


def test_manifest_desired_over_the_bounds_is_refused_and_changes_nothing(kv: MemoryKeyValue) -> None:
    twins = service_on(kv)
    twins.set_desired(FILTER, {"a": 1})
    with pytest.raises(TwinError, match="invalid character"):
        twins.set_desired(FILTER, {"a b": 1})
    assert twins.twin(FILTER)["desired"] == {"a": 1, "$version": 2}


# --- desired from upstream -----------------------------------------------------------------------


def test_upstream_desired_wins_over_the_manifest_once_it_arrived(kv: MemoryKeyValue) -> None:
    recorder = Recorder()
    twins = service_on(kv)
    twins.subscribe_desired(FILTER, recorder.on_desired)
    twins.set_desired(FILTER, {"a": "manifest"})  # first start offline: the manifest serves
    assert twins.replace_desired(FILTER, {"a": "cloud", "b": 1}, 7) == {"a": "cloud", "b": 1, "$version": 7}
    assert twins.set_desired(FILTER, {"a": "manifest again"}) is None
    assert service_on(kv).set_desired(FILTER, {"a": "after restart"}) is None
    assert twins.twin(FILTER)["desired"] == {"a": "cloud", "b": 1, "$version": 7}
    assert len(recorder.desired) == 2


def test_upstream_patch_is_forwarded_as_received_and_cached(kv: MemoryKeyValue) -> None:
    recorder = Recorder()
    twins = service_on(kv)
    twins.replace_desired(FILTER, {"a": 1, "b": 2}, 4)
    twins.subscribe_desired(FILTER, recorder.on_desired)
    assert twins.apply_desired_patch(FILTER, {"a": 1, "b": None, "$version": 5}, None) == {
        "a": 1, "b": None, "$version": 5,
    }
    assert recorder.desired == [{"a": 1, "b": None, "$version": 5}]
    assert service_on(kv).twin(FILTER)["desired"] == {"a": 1, "$version": 5}


def test_stale_upstream_patch_and_twin_are_ignored(kv: MemoryKeyValue) -> None:
    twins = service_on(kv)
    twins.replace_desired(FILTER, {"a": 1}, 4)
    assert twins.apply_desired_patch(FILTER, {"a": 0}, 4) is None
    assert twins.replace_desired(FILTER, {"a": 0}, 3) is None
    assert twins.twin(FILTER)["desired"] == {"a": 1, "$version": 4}


def test_version_gap_in_upstream_patches_is_reported(kv: MemoryKeyValue) -> None:
    twins = service_on(kv)
    assert twins.needs_full_desired(FILTER, 1)  # nothing from upstream yet
    twins.replace_desired(FILTER, {"a": 1}, 4)
    assert not twins.needs_full_desired(FILTER, 5)
    assert twins.needs_full_desired(FILTER, 7)


def test_upstream_twin_with_the_same_values_takes_over_silently(kv: MemoryKeyValue) -> None:
    recorder = Recorder()
    twins = service_on(kv)
    twins.set_desired(FILTER, {"a": 1})
    twins.subscribe_desired(FILTER, recorder.on_desired)
    assert twins.replace_desired(FILTER, {"a": 1}, 2) is None
    assert recorder.desired == []
    assert twins.set_desired(FILTER, {"a": 2}) is None  # upstream owns it now


# --- records ---------------------------------------------------------------------------------------


def test_record_round_trips_and_a_damaged_one_is_a_store_error() -> None:
    record = TwinRecord({"a": 1}, 3, "upstream", {"b": [1]}, 4, {"b": []})
    assert TwinRecord.decode("k", record.encode()) == record
    bad: list[bytes] = [b"{", b"[]", b'{"v": 2}', record.encode().replace(b'"upstream"', b'"elsewhere"')]
    for data in bad:
        with pytest.raises(Exception, match="twin record of 'k' is unreadable"):
            TwinRecord.decode("k", data)



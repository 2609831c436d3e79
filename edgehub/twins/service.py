"""TwinService: every local identity's twin, durable, with desired patches pushed to listeners.

Owns the twin rules of IoT Hub as edgeHub applies them locally (versions, merge, bounds,
which source of desired properties wins, the upstream sync state of reported ones); it must
not speak a protocol nor import the store (it gets a TwinStore).

Desired properties have two sources. Standalone, the deployment manifest
(``modulesContent.{module}["properties.desired"]``) is the source of truth: ``set_desired``.
With an upstream, the upstream (cloud or parent hub) is, as in edgeHub: once upstream
desired properties arrived for an identity (``replace_desired``/``apply_desired_patch``),
they win and the manifest's value for it is ignored from then on; until then (first start
offline) the manifest's value serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from edgehub.message import Identity
from edgehub.twins.document import (
    VERSION,
    check_document,
    check_patch,
    check_size,
    copy_json,
    copy_object,
    diff,
    merge_patch,
    version_of,
    with_version,
)
from edgehub.twins.port import DesiredListener, JsonObject
from edgehub.twins.records import DesiredSource, TwinRecord, TwinStore

log = logging.getLogger(__name__)

ReportedHook = Callable[[Identity, JsonObject, int], None]
"""Called after a reported patch is durable: (identity, the patch as stored, new $version)."""


class TwinService:
    """Implements edgehub.twins.port.TwinPort over a TwinStore, plus what the hub and the
    upstream link need (manifest and upstream desired properties, reported sync).

    Every change is one record written with one ``put_twin`` before anything is answered
    or notified; records are cached in memory after the first read. Writes run inline on
    the caller's thread: they are small and rare next to telemetry.
    """

    def __init__(self, store: TwinStore, *, on_reported: ReportedHook | None = None) -> None:
        self._store = store
        self._on_reported = on_reported
        self._records: dict[str, TwinRecord] = {}
        self._listeners: dict[str, list[DesiredListener]] = {}
        self._unsynced: set[Identity] = set()
        for key in store.twin_keys():
            record = self._record(key)
            if not _same(record.reported, record.reported_upstream):
                self._unsynced.add(Identity.parse(key))

    # -- reading ------------------------------------------------------------------

    def _record(self, key: str) -> TwinRecord:
        record = self._records.get(key)
        if record is None:
            data = self._store.get_twin(key)
            record = TwinRecord() if data is None else TwinRecord.decode(key, data)
            self._records[key] = record
        return record

    def twin(self, identity: Identity) -> JsonObject:
        """``{"desired": {..., "$version"}, "reported": {..., "$version"}}`` (a copy)."""
        record = self._record(identity.id)
        return {
            "desired": with_version(record.desired, record.desired_version),
            "reported": with_version(record.reported, record.reported_version),
        }

    async def get_twin(self, identity: Identity) -> JsonObject:
        return self.twin(identity)

    def desired_version(self, identity: Identity) -> int:
        return self._record(identity.id).desired_version

    def upstream_desired(self, identity: Identity) -> tuple[JsonObject, int] | None:
        """The desired properties upstream gave ``identity`` (a copy, without ``$version``) and
        their version; None while none arrived (standalone, or a first start offline)."""
        record = self._record(identity.id)
        if record.desired_source != "upstream":
            return None
        return copy_object(record.desired), record.desired_version

    def reported_version(self, identity: Identity) -> int:
        return self._record(identity.id).reported_version

    # -- reported -------------------------------------------------------------------

    def update_reported(self, identity: Identity, patch: Mapping[str, Any]) -> int:
        """``patch_reported`` without the await: merge, check, store, notify; the new version."""
        cleaned = check_patch(patch, "reported")
        key = identity.id
        record = self._record(key)
        merged = merge_patch(record.reported, cleaned)
        check_size(merged, "reported")
        version = record.reported_version + 1
        self._write(key, TwinRecord(
            record.desired, record.desired_version, record.desired_source,
            merged, version, record.reported_upstream,
        ))
        if _same(merged, record.reported_upstream):
            self._unsynced.discard(identity)
        else:
            self._unsynced.add(identity)
        if self._on_reported is not None:
            try:
                self._on_reported(identity, copy_json(cleaned), version)
            except Exception:  # a broken hook must not turn a stored patch into an error
                log.exception("reported-properties hook failed for %s", identity)
        return version

    async def patch_reported(self, identity: Identity, patch: Mapping[str, Any]) -> int:
        return self.update_reported(identity, patch)

    def pending_reported(self) -> dict[Identity, JsonObject]:
        """Per identity, the one patch that brings upstream's reported properties up to date
        (all patches since the last sync, coalesced; removed keys as null). Send each, then
        call ``mark_reported_synced`` with exactly what was sent."""
        pending: dict[Identity, JsonObject] = {}
        for identity in sorted(self._unsynced, key=str):
            record = self._record(identity.id)
            patch = diff(record.reported_upstream, record.reported)
            if patch:
                pending[identity] = patch
        return pending

    def mark_reported_synced(self, identity: Identity, sent: Mapping[str, Any]) -> None:
        """Upstream accepted ``sent`` (from ``pending_reported``): it is no longer pending.
        A patch that arrived since stays pending (only what was sent is cleared)."""
        key = identity.id
        record = self._record(key)
        upstream = merge_patch(record.reported_upstream, sent)
        if _same(upstream, record.reported_upstream):
            return
        self._write(key, TwinRecord(
            record.desired, record.desired_version, record.desired_source,
            record.reported, record.reported_version, upstream,
        ))
        if _same(record.reported, upstream):
            self._unsynced.discard(identity)

    # -- desired ----------------------------------------------------------------------

    def subscribe_desired(self, identity: Identity, listener: DesiredListener) -> Callable[[], None]:
        listeners = self._listeners.setdefault(identity.id, [])
        listeners.append(listener)

        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return unsubscribe

    def set_desired(self, identity: Identity, desired: Mapping[str, Any]) -> JsonObject | None:
        """A full desired document from the manifest (load or reload). If it differs from the
        stored one: bump ``$version``, store, push the difference to listeners, return it.
        None when nothing changed, or when upstream is this identity's source (upstream wins).
        Raises TwinError(400) for a document over IoT Hub's bounds; nothing changes then."""
        document = check_document(desired, "desired")
        record = self._record(identity.id)
        if record.desired_source == "upstream":
            return None
        changes = diff(record.desired, document)
        if not changes:
            return None
        version = record.desired_version + 1
        self._store_desired(identity, record, document, version, "manifest")
        return self._notify(identity, changes, version)

    def replace_desired(
        self, identity: Identity, desired: Mapping[str, Any], version: int,
    ) -> JsonObject | None:
        """The full desired properties from upstream at ``version`` (a GET twin there): cached
        durably; listeners get the difference. None when no value changed (or it is older)."""
        document = check_document(desired, "desired")
        record = self._record(identity.id)
        if record.desired_source == "upstream" and version < record.desired_version:
            return None
        changes = diff(record.desired, document)
        if changes or version != record.desired_version or record.desired_source != "upstream":
            self._store_desired(identity, record, document, version, "upstream")
        return self._notify(identity, changes, version) if changes else None

    def apply_desired_patch(
        self, identity: Identity, patch: Mapping[str, Any], version: int | None,
    ) -> JsonObject | None:
        """A desired patch from upstream (its ``$version`` in ``version`` or in the patch):
        merged, cached durably and forwarded to listeners as received; returns what they got.
        A patch not newer than what is held is ignored (None). On a gap
        (``needs_full_desired``) the caller should also fetch the full twin upstream and call
        ``replace_desired``, as edgeHub's StoringTwinManager does."""
        cleaned = check_patch(patch, "desired")
        if version is None:
            version = version_of(patch)
        record = self._record(identity.id)
        if version is None:
            version = record.desired_version + 1
        elif record.desired_source == "upstream" and version <= record.desired_version:
            return None
        merged = merge_patch(record.desired, cleaned)
        check_size(merged, "desired")
        self._store_desired(identity, record, merged, version, "upstream")
        return self._notify(identity, cleaned, version)

    def needs_full_desired(self, identity: Identity, version: int) -> bool:
        """True when an upstream patch at ``version`` does not follow the held one (a gap, or
        nothing from upstream held yet)."""
        record = self._record(identity.id)
        return record.desired_source != "upstream" or version != record.desired_version + 1

    def _store_desired(
        self, identity: Identity, record: TwinRecord, document: JsonObject, version: int,
        source: DesiredSource,
    ) -> None:
        self._write(identity.id, TwinRecord(
            document, version, source, record.reported, record.reported_version, record.reported_upstream,
        ))

    def _notify(self, identity: Identity, changes: Mapping[str, Any], version: int) -> JsonObject:
        patch = copy_object(changes)
        patch[VERSION] = version
        for listener in list(self._listeners.get(identity.id, ())):
            try:
                listener(copy_json(patch))
            except Exception:  # one broken session must not stop the others' patches
                log.exception("desired-properties listener failed for %s", identity)
        return patch

    # -- storage ------------------------------------------------------------------------

    def _write(self, key: str, record: TwinRecord) -> None:
        """One atomic write; the cache changes only after it returned (so a failed write
        changes nothing the clients can see)."""
        self._store.put_twin(key, record.encode())
        self._records[key] = record


def _same(left: Mapping[str, Any], right: Mapping[str, Any]) -> bool:
    return not diff(left, right)

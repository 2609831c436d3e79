"""The hub's own ``$edgeHub`` twin: the reported properties edgeHub writes, and their patches.

Pure values (times are passed in); owns the shape of edgeHub's EdgeHubConnection.ReportedProperties
and DeviceConnectionStatus; it must not store or send anything (the hub patches the twin).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from edgehub.message import Identity
from edgehub.twins.document import copy_json
from edgehub.twins.port import JsonObject

SCHEMA_VERSION: Final = "1.0"
"""edgeHub's ReportedProperties.CurrentSchemaVersion."""
CONNECTED: Final = "Connected"
DISCONNECTED: Final = "Disconnected"


def encode_client_key(client_id: str) -> str:
    """A client id as a twin key: edgeHub's TwinManager.EncodeTwinKey escapes the
    characters twin keys may not hold ('.', '$', ' ') as %2E, %24, %20."""
    return client_id.replace(".", "%2E").replace("$", "%24").replace(" ", "%20")


def utc_text(when: float) -> str:
    """Epoch seconds as the ISO 8601 UTC text edgeHub's JSON dates have (``...T12:00:00.000000Z``)."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """edgeHub's ``version`` reported property: ``{version, build, commit}``."""

    version: str
    build: str = ""
    commit: str = ""

    def to_json(self) -> JsonObject:
        return {"version": self.version, "build": self.build, "commit": self.commit}


class EdgeHubReported:
    """Builds the ``$edgeHub`` reported properties and each patch that changes them.

    As edgeHub: at start ``clients`` is cleared (null); a connected client gets status
    Connected and ``lastConnectedTimeUtc``; a disconnected module gets Disconnected and
    ``lastDisconnectedTimeUtc`` (its last connect time stays), a disconnected device is
    removed; a config applied reports ``lastDesiredVersion`` and ``lastDesiredStatus``
    (200, or 400 with the reason). The hub's own identity is never listed.
    """

    def __init__(self, hub: Identity, version: VersionInfo) -> None:
        self._hub = hub
        self._version = version
        self._clients: dict[str, JsonObject] = {}
        self._last_desired_version: int | None = None
        self._last_desired_status: JsonObject | None = None

    def _base(self) -> JsonObject:
        return {"schemaVersion": SCHEMA_VERSION, "version": self._version.to_json()}

    def started(self) -> JsonObject:
        """The patch to write when the hub starts: schema, version, clients cleared."""
        self._clients.clear()
        patch = self._base()
        patch["clients"] = None
        return patch

    def client_connected(self, identity: Identity, when: float) -> JsonObject | None:
        """The patch for ``identity`` connecting at ``when`` (epoch seconds); None for the hub."""
        if identity == self._hub:
            return None
        entry: JsonObject = {"status": CONNECTED, "lastConnectedTimeUtc": utc_text(when)}
        previous = self._clients.get(identity.id, {})
        self._clients[identity.id] = {**previous, **entry}
        return self._client_patch(identity, entry)

    def client_disconnected(self, identity: Identity, when: float) -> JsonObject | None:
        """The patch for ``identity`` disconnecting: a module is marked Disconnected, a
        device removed (edgeHub EdgeHubConnection.UpdateDeviceConnectionStatus)."""
        if identity == self._hub:
            return None
        if identity.module_id is None:
            self._clients.pop(identity.id, None)
            return self._client_patch(identity, None)
        entry: JsonObject = {"status": DISCONNECTED, "lastDisconnectedTimeUtc": utc_text(when)}
        previous = self._clients.get(identity.id, {})
        self._clients[identity.id] = {**previous, **entry}
        return self._client_patch(identity, entry)

    def desired_applied(self, version: int, code: int, description: str = "") -> JsonObject:
        """The patch after desired properties at ``version`` were applied (code 200) or
        refused (400, ``description`` says why); ``clients`` is sent empty, so unchanged."""
        self._last_desired_version = version
        self._last_desired_status = {"code": code, "description": description}
        patch = self._base()
        patch["lastDesiredVersion"] = version
        patch["lastDesiredStatus"] = dict(self._last_desired_status)
        patch["clients"] = {}
        return patch

    def _client_patch(self, identity: Identity, entry: JsonObject | None) -> JsonObject:
        patch = self._base()
        patch["clients"] = {encode_client_key(identity.id): entry}
        return patch

    def reported(self) -> JsonObject:
        """The whole reported document as the patches so far leave it."""
        document = self._base()
        if self._last_desired_version is not None:
            document["lastDesiredVersion"] = self._last_desired_version
            document["lastDesiredStatus"] = dict(self._last_desired_status or {})
        document["clients"] = {
            encode_client_key(client): copy_json(entry) for client, entry in sorted(self._clients.items())
        }
        return document

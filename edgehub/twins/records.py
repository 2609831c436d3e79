"""The durable form of one twin: the record kept per identity, and the store it needs.

Owns the record's JSON layout and the TwinStore protocol (satisfied structurally by
edgehub.store's MessageStore); it must not import edgehub.store nor apply patches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from edgehub.errors import StoreError
from edgehub.twins.document import FIRST_VERSION, dumps
from edgehub.twins.port import JsonObject

DesiredSource = Literal["none", "manifest", "upstream"]
"""Where an identity's desired properties last came from."""

RECORD_VERSION: Final = 1


class TwinStore(Protocol):
    """What the twin service needs of the store: one atomic write per record."""

    def get_twin(self, key: str) -> bytes | None: ...

    def put_twin(self, key: str, value: bytes) -> None: ...

    def twin_keys(self) -> list[str]: ...


@dataclass(slots=True)
class TwinRecord:
    """One identity's twin as stored under its id.

    ``reported_upstream`` is the reported properties as last confirmed upstream; the
    patch still to send is the difference between it and ``reported``, so later patches
    coalesce, the latest value wins and nothing is lost across a restart.
    """

    desired: JsonObject = field(default_factory=dict)
    desired_version: int = FIRST_VERSION
    desired_source: DesiredSource = "none"
    reported: JsonObject = field(default_factory=dict)
    reported_version: int = FIRST_VERSION
    reported_upstream: JsonObject = field(default_factory=dict)

    def encode(self) -> bytes:
        return dumps({
            "v": RECORD_VERSION,
            "desired": self.desired,
            "desiredVersion": self.desired_version,
            "desiredSource": self.desired_source,
            "reported": self.reported,
            "reportedVersion": self.reported_version,
            "reportedUpstream": self.reported_upstream,
        })

    @classmethod
    def decode(cls, key: str, data: bytes) -> TwinRecord:
        """Raises StoreError when ``data`` is not a record this hub wrote."""
        try:
            raw = json.loads(data)
            source = raw["desiredSource"]
            if raw["v"] != RECORD_VERSION or source not in ("none", "manifest", "upstream"):
                raise ValueError(f"unknown record version {raw['v']!r} or source {source!r}")
            record = cls(
                desired=_object(raw["desired"]),
                desired_version=_integer(raw["desiredVersion"]),
                desired_source=source,
                reported=_object(raw["reported"]),
                reported_version=_integer(raw["reportedVersion"]),
                reported_upstream=_object(raw["reportedUpstream"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"twin record of {key!r} is unreadable: {exc}") from exc
        return record


def _object(value: object) -> JsonObject:
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value

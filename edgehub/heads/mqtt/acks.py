"""The PUBACKs / PUBRECs owed for one read, encoded in receive order once its ingest resolved
[MQTT-4.6.0-2]; one struct call on the all-success hot path. No session state here.
"""

from __future__ import annotations

from typing import Final

from edgehub.mqtt.encode import encode, encode_pubacks
from edgehub.mqtt.packets import (
    PubAck,
    PubRec,
)

PENDING_PUBACK: Final = -1
PENDING_PUBREC: Final = -2
FIXED_PUBREC: Final = 0x100
"""Entry kinds: an ack waiting for the ingest outcome, or a fixed reason decided on receipt:
``reason`` for a PUBACK, ``FIXED_PUBREC | reason`` for a PUBREC (refused publishes, MQTT 5)."""


class AckBatch:
    """The PUBACKs / PUBRECs owed for one read, sent only after its ingest resolved.

    ``kinds`` stays None while every entry is a QoS 1 PUBACK waiting for the outcome
    (the hot path: one struct call encodes them all).
    """

    __slots__ = ("ids", "kinds", "outcome")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.kinds: list[int] | None = None
        self.outcome = -1

    def add(self, packet_id: int, kind: int) -> None:
        if self.kinds is None and kind != PENDING_PUBACK:
            self.kinds = [PENDING_PUBACK] * len(self.ids)
        self.ids.append(packet_id)
        if self.kinds is not None:
            self.kinds.append(kind)

    def encode(self, version: int) -> bytes:
        reason = self.outcome
        if self.kinds is None:
            if reason == 0:
                return encode_pubacks(self.ids)
            return b"".join(encode(PubAck(packet_id, reason), version) for packet_id in self.ids)
        parts = []
        for packet_id, kind in zip(self.ids, self.kinds, strict=True):
            if kind == PENDING_PUBACK:
                parts.append(encode(PubAck(packet_id, reason), version))
            elif kind == PENDING_PUBREC:
                parts.append(encode(PubRec(packet_id, reason), version))
            elif kind >= FIXED_PUBREC:
                parts.append(encode(PubRec(packet_id, kind - FIXED_PUBREC), version))
            else:
                parts.append(encode(PubAck(packet_id, kind), version))
        return b"".join(parts)

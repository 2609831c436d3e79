"""Messages as the hub sees them: body, properties, the sender's identity.

Frozen, slotted value types only; no I/O and no protocol knowledge lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

EMPTY_PROPERTIES: Final[Mapping[str, str]] = MappingProxyType({})

DEFAULT_PRIORITY: Final = 2_000_000_000
"""Priority of a schema 1.0 route (edgeHub's default: below every 0-9 priority)."""

MessageId = int
"""Store-assigned, strictly increasing id; also the message's sequence in every queue."""


class SystemProperty:
    """IoT Hub system property names, as used in routes (``$contentType``) and stores."""

    MESSAGE_ID: Final = "messageId"
    CORRELATION_ID: Final = "correlationId"
    USER_ID: Final = "userId"
    TO: Final = "to"
    CONTENT_TYPE: Final = "contentType"
    CONTENT_ENCODING: Final = "contentEncoding"
    CONNECTION_DEVICE_ID: Final = "connectionDeviceId"
    CONNECTION_MODULE_ID: Final = "connectionModuleId"
    OUTPUT_NAME: Final = "outputName"
    INPUT_NAME: Final = "inputName"
    CREATION_TIME: Final = "creationTime"
    MESSAGE_SCHEMA: Final = "messageSchema"
    ENQUEUED_TIME: Final = "enqueuedTime"


@dataclass(frozen=True, slots=True)
class Identity:
    """A device (``d``) or a module (``d/m``) known to the hub."""

    device_id: str
    module_id: str | None = None

    @property
    def id(self) -> str:
        return f"{self.device_id}/{self.module_id}" if self.module_id else self.device_id

    @classmethod
    def parse(cls, text: str) -> Identity:
        device, _, module = text.partition("/")
        return cls(device, module or None)

    def __str__(self) -> str:
        return self.id


@dataclass(slots=True, init=False)
class Message:
    """One message: opaque body, application and system properties.

    ``enqueued_ms`` is stamped by the hub at ingest (Unix epoch milliseconds);
    heads leave it 0. The sender is in ``system_properties``
    (``connectionDeviceId``, ``connectionModuleId``), as in IoT Hub.
    """

    body: bytes
    properties: Mapping[str, str]
    system_properties: Mapping[str, str]
    enqueued_ms: int

    def __init__(
        self, body: bytes, properties: Mapping[str, str] = EMPTY_PROPERTIES,
        system_properties: Mapping[str, str] = EMPTY_PROPERTIES, enqueued_ms: int = 0,
    ) -> None:
        # Hand-written (dataclass init=False), not frozen: one message per publish, and a frozen
        # dataclass's generated __init__ costs a setattr call per field, compiled or not
        # (docs/performance.md). Nothing assigns to a message after it is built.
        self.body = body
        self.properties = properties
        self.system_properties = system_properties
        self.enqueued_ms = enqueued_ms

    @property
    def source(self) -> Identity | None:
        device = self.system_properties.get(SystemProperty.CONNECTION_DEVICE_ID)
        if device is None:
            return None
        return Identity(device, self.system_properties.get(SystemProperty.CONNECTION_MODULE_ID))

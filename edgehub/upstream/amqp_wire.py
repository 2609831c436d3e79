"""Device-to-cloud telemetry as AMQP 1.0 message bytes, encoded by hand: the upstream link's hot path.

The same message ``edgehub.amqp.messages.telemetry_to_amqp(m).encode()`` gives (tests prove it field by
field), without building a proton.Message per transfer (about a third of the link's CPU per message).
Pure bytes, no I/O. Sections (AMQP 1.0 §3.2): header (empty), properties, application-properties, one
data section; types (AMQP 1.0 §1.6): str8/str32, sym8/sym32, vbin8/vbin32, timestamp, list32, map32.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime
from typing import Final

from edgehub.amqp.messages import CREATION_TIME, MESSAGE_SCHEMA, OUTPUT_NAME
from edgehub.iothub.topics import EXPIRY_TIME_UTC
from edgehub.message import Message, SystemProperty

_HEADER: Final = b"\x00\x53\x70\x45"  # described header, list0: every field its default (§3.2.1)
_PROPERTIES: Final = b"\x00\x53\x73"
_APPLICATION_PROPERTIES: Final = b"\x00\x53\x74"
_DATA: Final = b"\x00\x53\x75"
_NULL: Final = b"\x40"
_U32: Final = struct.Struct(">I")
_TIMESTAMP: Final = struct.Struct(">Bq")
_APP_SYSTEM: Final = (
    (OUTPUT_NAME, SystemProperty.OUTPUT_NAME),
    (CREATION_TIME, SystemProperty.CREATION_TIME),
    (MESSAGE_SCHEMA, SystemProperty.MESSAGE_SCHEMA),
)


def _variable(small: int, large: int) -> Callable[[bytes], bytes]:
    def encode(data: bytes) -> bytes:
        if len(data) < 256:
            return bytes((small, len(data))) + data
        return bytes((large,)) + _U32.pack(len(data)) + data

    return encode


_string = _variable(0xA1, 0xB1)
_symbol = _variable(0xA3, 0xB3)
_binary = _variable(0xA0, 0xB0)


def _text(value: str) -> bytes:
    return _string(value.encode())


def encode_telemetry(message: Message) -> bytes:
    """``message`` as IoT Hub takes telemetry over AMQP (edgehub.amqp.messages' mapping)."""
    system = message.system_properties
    fields: list[bytes] = [
        _text(system[SystemProperty.MESSAGE_ID]) if system.get(SystemProperty.MESSAGE_ID) else _NULL,
        _binary(system[SystemProperty.USER_ID].encode()) if system.get(SystemProperty.USER_ID) else _NULL,
        _text(system[SystemProperty.TO]) if system.get(SystemProperty.TO) else _NULL,
        _NULL,  # subject
        _NULL,  # reply-to
        _text(system[SystemProperty.CORRELATION_ID]) if system.get(SystemProperty.CORRELATION_ID) else _NULL,
        _symbol(system[SystemProperty.CONTENT_TYPE].encode()) if system.get(SystemProperty.CONTENT_TYPE)
        else _NULL,
        _symbol(system[SystemProperty.CONTENT_ENCODING].encode())
        if system.get(SystemProperty.CONTENT_ENCODING) else _NULL,
        _expiry(system.get(EXPIRY_TIME_UTC)),
    ]
    while fields and fields[-1] == _NULL:
        fields.pop()  # trailing nulls may be left out of a list (AMQP 1.0 §1.4)
    out = [_HEADER, _PROPERTIES, _list(fields)]
    application = {wire: system[name] for wire, name in _APP_SYSTEM if system.get(name)}
    application.update(message.properties)
    if application:
        out += [_APPLICATION_PROPERTIES, _map(application)]
    out += [_DATA, _binary(message.body)]
    return b"".join(out)


def _list(items: list[bytes]) -> bytes:
    if not items:
        return b"\x45"  # list0
    body = b"".join(items)
    return b"\xd0" + _U32.pack(len(body) + 4) + _U32.pack(len(items)) + body


def _map(entries: dict[str, str]) -> bytes:
    body = b"".join(_text(key) + _text(value) for key, value in entries.items())
    return b"\xd1" + _U32.pack(len(body) + 4) + _U32.pack(len(entries) * 2) + body


def _expiry(text: str | None) -> bytes:
    """``$.exp`` (ISO 8601) as absolute-expiry-time, milliseconds since the epoch; null when absent or bad."""
    if not text:
        return _NULL
    try:
        seconds = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return _NULL
    return _TIMESTAMP.pack(0x83, int(seconds * 1000))

"""The server side of the AMQP SASL layer (AMQP 1.0 §5.3), before proton takes the connection.

Owns the SASL header exchange, the sasl-mechanisms / sasl-init / sasl-outcome frames and the
choice of outcome; it knows no identity registry (an ``Authenticate`` callable decides) and no I/O.

Why our own: python-qpid-proton built without Cyrus SASL (``proton.SASL.extended()`` is False)
offers only ANONYMOUS and EXTERNAL on a server transport, while the Azure IoT SDKs and edgeHub use
PLAIN (``{d}@sas.{hub}`` with a SAS token as password). The frames are three small performatives,
so this layer runs them and hands every byte after the outcome to a proton transport without SASL.
A client that opens with the plain AMQP header instead (no SASL layer: the Node SDK and rhea with
CBS do) is let through as anonymous; its identities then come by CBS put-token.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import proton

SASL_HEADER: Final = b"AMQP\x03\x01\x00\x00"
"""AMQP 1.0 §5.3.1: protocol id 3 (SASL), version 1.0.0."""
AMQP_HEADER: Final = b"AMQP\x00\x01\x00\x00"
"""AMQP 1.0 §2.2: protocol id 0 (AMQP), version 1.0.0."""
_FRAME_HEADER: Final = struct.Struct(">IBBH")
_SASL_FRAME_TYPE: Final = 0x01  # AMQP 1.0 §5.3.1
_MECHANISMS: Final = 0x40
_INIT: Final = 0x41
_RESPONSE: Final = 0x43
_OUTCOME: Final = 0x44
MAX_SASL_FRAME: Final = 8 * 1024
"""The largest SASL frame taken: a SAS token in PLAIN is a few hundred bytes (AMQP 1.0 §5.3.1:
the SASL MIN-MAX-FRAME-SIZE is 512; more is ours to allow)."""


class SaslCode(enum.IntEnum):
    """sasl-code, AMQP 1.0 §5.3.3.6."""

    OK = 0
    AUTH = 1
    SYS = 2
    SYS_PERM = 3
    SYS_TEMP = 4


@dataclass(frozen=True, slots=True)
class SaslInit:
    """What the client chose: its mechanism, its initial response, the host name it asked for."""

    mechanism: str
    initial_response: bytes
    hostname: str | None


Authenticate = Callable[[SaslInit], SaslCode]
"""Decides the outcome of a sasl-init (and remembers whom it admitted)."""


class SaslError(Exception):
    """The peer broke the SASL exchange (wrong header, malformed or oversize frame)."""


class SaslServer:
    """One connection's SASL exchange: ``receive_data`` until ``done``; then ``remainder`` holds
    the bytes after the outcome (the AMQP header and what follows), for the proton transport."""

    def __init__(self, mechanisms: tuple[str, ...], authenticate: Authenticate, *,
                 allow_skip: bool = True) -> None:
        self._mechanisms = mechanisms
        self._allow_skip = allow_skip
        self.skipped = False
        """The client sent the plain AMQP header: no SASL exchange took place."""
        self._authenticate = authenticate
        self._buffer = bytearray()
        self._out = bytearray()
        self._header_seen = False
        self.outcome: SaslCode | None = None
        self.init: SaslInit | None = None
        self.remainder = b""

    @property
    def done(self) -> bool:
        """The outcome was sent; True also after a failed outcome (the caller closes then)."""
        return self.outcome is not None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> SaslCode | None:
        """Take bytes from the client; the outcome once decided. Raises SaslError on a protocol
        violation (the caller closes the socket)."""
        if self.outcome is not None:
            self.remainder += data
            return self.outcome
        self._buffer += data
        if not self._header_seen:
            if len(self._buffer) < len(SASL_HEADER):
                got = bytes(self._buffer)
                if not (SASL_HEADER.startswith(got) or AMQP_HEADER.startswith(got)):
                    self._refuse_header()
                return None
            if bytes(self._buffer[:8]) == AMQP_HEADER and self._allow_skip:
                # No SASL layer (AMQP 1.0 §5.3.1 lets a client open without one): an anonymous
                # connection whose identities come by CBS, as the Node SDK and rhea clients do.
                self.skipped = True
                self.outcome = SaslCode.OK
                self.remainder = bytes(self._buffer)
                self._buffer.clear()
                return self.outcome
            if bytes(self._buffer[:8]) != SASL_HEADER:
                self._refuse_header()
            del self._buffer[:8]
            self._header_seen = True
            # AMQP 1.0 §5.3.2: the server answers the header, then offers its mechanisms.
            offered = proton.Array(proton.UNDESCRIBED, proton.Data.SYMBOL,  # type: ignore[arg-type]  # stub: a constant
                                   *(proton.symbol(m) for m in self._mechanisms))
            self._out += SASL_HEADER + _frame(_MECHANISMS, [offered])
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            if self._on_frame(frame):
                break
        self.remainder = bytes(self._buffer)
        self._buffer.clear()
        return self.outcome

    def _refuse_header(self) -> NoReturn:
        # AMQP 1.0 §2.2: answer an unsupported header with the one we speak, then close.
        self._out += SASL_HEADER
        got = bytes(self._buffer[:8])
        detail = "another AMQP protocol header" if got.startswith(b"AMQP") else "no AMQP header"
        raise SaslError(f"SASL or AMQP 1.0 expected: the client sent {detail}")

    def _next_frame(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < _FRAME_HEADER.size:
            return None
        size, doff, kind, _channel = _FRAME_HEADER.unpack_from(buffer)
        if kind != _SASL_FRAME_TYPE or doff < 2 or size < doff * 4:
            raise SaslError("malformed SASL frame header")
        if size > MAX_SASL_FRAME:
            raise SaslError(f"SASL frame of {size} bytes is over {MAX_SASL_FRAME}")
        if len(buffer) < size:
            return None
        body = bytes(buffer[doff * 4:size])
        del buffer[:size]
        return body

    def _on_frame(self, body: bytes) -> bool:
        """Handle one frame; True once the outcome is decided."""
        if not body:
            return False  # an empty frame is a heartbeat (AMQP 1.0 §2.4.5)
        descriptor, fields = _decode(body)
        if descriptor != _INIT:
            raise SaslError(f"expected sasl-init, got performative 0x{descriptor:02x}")
        mechanism = fields[0] if fields else None
        if not isinstance(mechanism, str):
            raise SaslError("sasl-init without a mechanism")
        response = fields[1] if len(fields) > 1 and fields[1] is not None else b""
        hostname = fields[2] if len(fields) > 2 and isinstance(fields[2], str) else None
        if not isinstance(response, bytes):
            raise SaslError("sasl-init initial-response is not binary")
        self.init = SaslInit(str(mechanism), bytes(response), hostname)
        code = SaslCode.AUTH if mechanism not in self._mechanisms else self._authenticate(self.init)
        self.outcome = code
        self._out += _frame(_OUTCOME, [proton.ubyte(int(code))])
        return True


def parse_plain(response: bytes) -> tuple[str, str, str]:
    """(authzid, authcid, password) of a PLAIN initial response (RFC 4616: ``authzid NUL authcid
    NUL passwd``). Raises ValueError when it is not one."""
    parts = response.split(b"\x00")
    if len(parts) != 3:
        raise ValueError("PLAIN response is not authzid NUL authcid NUL password")
    authzid, authcid, password = (part.decode("utf-8") for part in parts)
    return authzid, authcid, password


def _frame(descriptor: int, fields: list[Any]) -> bytes:
    data = proton.Data()
    data.put_object(proton.Described(proton.ulong(descriptor), fields))
    body = data.encode()
    return _FRAME_HEADER.pack(8 + len(body), 2, _SASL_FRAME_TYPE, 0) + body


def _decode(body: bytes) -> tuple[int, list[Any]]:
    data = proton.Data()
    try:
        data.decode(body)
        data.rewind()
        data.next()
        value = data.get_object()
    except (proton.DataException, ValueError, KeyError, TypeError) as exc:
        raise SaslError(f"undecodable SASL frame: {exc}") from None
    if not isinstance(value, proton.Described) or not isinstance(value.value, list):
        raise SaslError("SASL frame is not a described list")
    descriptor = value.descriptor
    if not isinstance(descriptor, int):
        raise SaslError("SASL frame descriptor is not numeric")
    # Binary fields come back as memoryviews into ``data``'s buffer: copy them while it lives.
    fields = [bytes(item) if isinstance(item, memoryview) else item for item in value.value]
    return int(descriptor), fields

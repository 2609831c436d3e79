"""HTTP/1.1 response heads for the two handshakes the upstream client makes: proxy CONNECT, WebSocket upgrade.

Sans-I/O: bytes in, a parsed status line and headers out (RFC 9112 §4-5); no sockets, no bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from edgehub.errors import ProtocolError

MAX_HEAD_BYTES: Final = 16_384
"""A handshake answer's head larger than this is refused (a proxy's or a parent's is a few hundred bytes)."""
_END: Final = b"\r\n\r\n"


class HttpHeadError(ProtocolError):
    """The bytes are not an HTTP/1.1 response head."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    status_line: str
    """As sent, e.g. ``HTTP/1.1 403 Access violation`` (for error messages)."""
    headers: Mapping[str, str]
    """Lower-case names; a repeated header's values joined with ``, `` (RFC 9110 §5.3)."""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def parse_response_head(buffer: bytes) -> tuple[ResponseHead, bytes] | None:
    """The head at the start of ``buffer`` and the bytes after it; None until the blank line arrived.
    HttpHeadError for a malformed or oversized head."""
    end = buffer.find(_END)
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise HttpHeadError(f"no end of the response head within {MAX_HEAD_BYTES} bytes")
        return None
    if end > MAX_HEAD_BYTES:
        raise HttpHeadError(f"response head larger than {MAX_HEAD_BYTES} bytes")
    lines = buffer[:end].decode("latin-1").split("\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HttpHeadError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpHeadError(f"malformed header line: {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return ResponseHead(int(code), status_line, headers), buffer[end + len(_END):]

"""One HTTPS POST to the upstream's REST API (the device-scope call): a connection per request,
``Connection: close``, the answer read to its end and bounded. The hub needs no HTTP client
library for this (aiohttp stays the HTTP head's, unloaded when that head is off).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

from edgehub.upstream.http1 import HttpHeadError, parse_response_head

MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
TIMEOUT_SECS: Final = 30.0


async def https_post(
    host: str, port: int, path: str, body: bytes, *, authorization: str, context: ssl.SSLContext | None,
) -> tuple[int, bytes]:
    """POST ``body`` (JSON) to ``path``; (status, response body). OSError, or TimeoutError after
    TIMEOUT_SECS, when the exchange fails; HttpHeadError for a malformed answer."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authorization}\r\n"
        f"Content-Type: application/json; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1") + body
    async with asyncio.timeout(TIMEOUT_SECS):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if context is not None else None)
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read(MAX_RESPONSE_BYTES + 1)
            while data and len(data) <= MAX_RESPONSE_BYTES:
                more = await reader.read(MAX_RESPONSE_BYTES + 1 - len(data))
                if not more:
                    break
                data += more
        finally:
            writer.close()
    if len(data) > MAX_RESPONSE_BYTES:
        raise HttpHeadError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
    parsed = parse_response_head(data)
    if parsed is None:
        raise HttpHeadError("the connection closed before the answer's head ended")
    head, rest = parsed
    if head.headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    elif (length := head.headers.get("content-length")) is not None and length.isdigit():
        rest = rest[: int(length)]
    return head.status, rest


def _dechunk(data: bytes) -> bytes:
    """RFC 9112 §7.1 chunked transfer coding, without trailers."""
    out = bytearray()
    while True:
        line, separator, data = data.partition(b"\r\n")
        if not separator:
            raise HttpHeadError("truncated chunked body")
        try:
            size = int(line.split(b";", 1)[0], 16)
        except ValueError:
            raise HttpHeadError(f"bad chunk size {line[:20]!r}") from None
        if size == 0:
            return bytes(out)
        if len(data) < size + 2:
            raise HttpHeadError("truncated chunk")
        out += data[:size]
        data = data[size + 2:]

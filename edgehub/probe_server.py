"""The metrics port when the HTTP head is off: /metrics, /health, /ready, /stats in plain HTTP.

A minimal HTTP/1.1 responder on asyncio streams (one GET per connection, then close), so
neither aiohttp nor a thread is needed; the answers themselves come from edgehub.status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from edgehub.status import JSON, StatusSource, answer

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD: Final = 8192
"""Bytes of request line and headers read at most; a longer head gets 431."""
REQUEST_TIMEOUT: Final = 5.0
"""Seconds a client has to send its request head."""
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                   431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class ProbeServer:
    """Serves ``answer`` for GET (and HEAD) requests on one plain-HTTP port."""

    def __init__(self, source: StatusSource) -> None:
        self._source = source
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=MAX_REQUEST_HEAD,
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status, content_type, body, head_only = self._respond(head)
        except asyncio.LimitOverrunError:
            status, content_type, body, head_only = 431, JSON, b'{"status":431}', False
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + (b"" if head_only else body)
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[int, str, bytes, bool]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, JSON, b'{"status":400,"message":"malformed request line"}', False
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, JSON, b'{"status":405,"message":"only GET"}', False
        status, content_type, body = answer(target.split("?", 1)[0], self._source)
        return status, content_type, body, method == "HEAD"


async def start_probe_server(source: StatusSource, host: str, port: int) -> tuple[ProbeServer, int]:
    server = ProbeServer(source)
    bound = await server.start(host, port)
    log.info("metrics and probes listening on http://%s:%d (minimal server)", host, bound)
    return server, bound

"""The minimal metrics-port server (edgehub.probe_server) and the probe answers (edgehub.status)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edgehub.probe_server import MAX_REQUEST_HEAD, start_probe_server


class Source:
    def __init__(self, ready: bool) -> None:
        self._ready = ready

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self._ready, {"store": {"open": self._ready}}

    def stats(self) -> dict[str, Any]:
        return {"queues": [{"endpoint": "$upstream", "priority": 0, "length": 3}]}


async def exchange(port: int, data: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_probe_paths_answer_and_anything_else_is_an_http_error() -> None:
    server, port = await start_probe_server(Source(ready=False), "127.0.0.1", 0)
    try:
        status, body = await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, json.loads(body)) == (200, {"status": "alive"})
        status, body = await exchange(port, b"GET /ready HTTP/1.1\r\n\r\n")
        assert (status, json.loads(body)) == (503, {"ready": False, "store": {"open": False}})
        status, body = await exchange(port, b"GET /stats?x=1 HTTP/1.0\r\n\r\n")
        assert status == 200
        assert json.loads(body)["queues"][0]["length"] == 3
        status, body = await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status == 200
        assert b"# TYPE edgehub_messages_received_total counter" in body
        assert (await exchange(port, b"HEAD /health HTTP/1.1\r\n\r\n")) == (200, b"")
        assert (await exchange(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await exchange(port, b"POST /health HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await exchange(port, b"nonsense\r\n\r\n"))[0] == 400
        assert (await exchange(port, b"GET /" + b"x" * MAX_REQUEST_HEAD + b" HTTP/1.1\r\n\r\n"))[0] == 431
    finally:
        await server.stop()

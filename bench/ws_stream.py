"""Connectors for the load generator: MQTT over TLS, and MQTT over WebSocket (TLS) with
asyncio's stream interface on an aiohttp client WebSocket.

Benchmark support only: enough of StreamReader/StreamWriter for bench.mqtt_loadgen.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp

from bench.mqtt_loadgen import Connector


def tls_connector(ca_file: str, server_hostname: str = "localhost") -> Connector:
    context = ssl.create_default_context(cafile=ca_file)

    async def connect(host: str, port: int) -> tuple[Any, Any]:
        return await asyncio.open_connection(host, port, ssl=context, server_hostname=server_hostname)

    return connect


class WebSocketStream:
    """Reader and writer over one client WebSocket: writes coalesce into binary frames."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._in = bytearray()
        self._out = bytearray()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self.transport = self

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out:
                data, self._out = bytes(self._out), bytearray()
                await self._ws.send_bytes(data)
            self._idle.set()

    def write(self, data: bytes) -> None:
        self._out += data
        self._idle.clear()
        self._wake.set()

    def get_write_buffer_size(self) -> int:
        return len(self._out)

    async def drain(self) -> None:
        await self._idle.wait()

    async def read(self, n: int) -> bytes:
        if not self._in:
            message = await self._ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                return b""
            self._in += message.data
        data, self._in = bytes(self._in[:n]), self._in[n:]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self._in) < n:
            message = await self._ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                raise asyncio.IncompleteReadError(bytes(self._in), n)
            self._in += message.data
        data, self._in = bytes(self._in[:n]), self._in[n:]
        return data

    def close(self) -> None:
        asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        await self.drain()
        self._writer.cancel()
        await self._ws.close()
        await self._session.close()


def websocket_connector(ca_file: str, server_hostname: str = "localhost") -> Connector:
    context = ssl.create_default_context(cafile=ca_file)

    async def connect(host: str, port: int) -> tuple[Any, Any]:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"wss://{server_hostname}:{port}/$iothub/websocket",
                                      protocols=("mqtt",), ssl=context, compress=0, max_msg_size=0)
        stream = WebSocketStream(session, ws)
        return stream, stream

    return connect

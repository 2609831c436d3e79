"""A stream transport over an aiohttp WebSocket, so a protocol written for TCP runs on it unchanged.

Owns the frame loop of one WebSocket (binary frames in, coalesced binary frames out, read
pausing, close); it knows no protocol and never parses the bytes it carries.

MQTT over WebSocket (MQTT 3.1.1 §6, MQTT 5 §6): the byte stream is carried in binary frames
[MQTT-6.0.0-1], a frame may hold several packets or part of one [MQTT-6.0.0-2], so writes
are coalesced into one frame per loop turn and reads are fed as they come.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

log = logging.getLogger(__name__)

TEXT_FRAME_REFUSED: Final = b"binary frames only [MQTT-6.0.0-1]"


class WebSocketTransport(asyncio.Transport):
    """``asyncio.Transport`` over a prepared ``WebSocketResponse``; ``run`` drives the protocol.

    ``pause_reading`` stops the receive loop taking frames, so aiohttp's own reader fills and
    pauses the socket: the same back pressure as a paused TCP transport. Writes flow-control
    as a TCP transport's do: the protocol's ``pause_writing`` above the high-water mark of
    unsent bytes (buffered plus the frame being sent), ``resume_writing`` below the low one.
    """

    def __init__(self, ws: web.WebSocketResponse, request: web.BaseRequest) -> None:
        super().__init__()
        self._ws = ws
        self._socket = request.transport
        self._out = bytearray()
        self._wake = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._protocol: asyncio.Protocol | None = None
        self._sending = 0
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._writing_paused = False

    # --- driving a protocol ---------------------------------------------------------------------

    async def run(self, protocol: asyncio.Protocol) -> None:
        """Feed ``protocol`` until the WebSocket ends; ``connection_lost`` is called exactly once."""
        self._protocol = protocol
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        error: Exception | None = None
        try:
            protocol.connection_made(self)
            while True:
                await self._reading.wait()
                message = await self._ws.receive()
                if message.type is WSMsgType.BINARY:
                    protocol.data_received(message.data)
                elif message.type is WSMsgType.TEXT:
                    await self._ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=TEXT_FRAME_REFUSED)
                    break
                elif message.type is WSMsgType.ERROR:
                    error = ConnectionError(f"WebSocket error: {self._ws.exception()}")
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        finally:
            self._closing = True
            self._wake.set()
            protocol.connection_lost(error)
            await self._finish_writer()

    async def _write_loop(self) -> None:
        ws = self._ws
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._out and not ws.closed:
                data, self._out = bytes(self._out), bytearray()
                self._sending = len(data)
                try:
                    await ws.send_bytes(data)  # returns when the socket took it (aiohttp drains)
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("WebSocket send failed: %s", exc)
                    self._out.clear()
                finally:
                    self._sending = 0
                self._maybe_resume_writing()
            if self._closing and not self._out:
                if not ws.closed:
                    await ws.close()
                return

    async def _finish_writer(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            try:
                await asyncio.wait_for(asyncio.shield(writer), 5.0)
            except TimeoutError:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)

    # --- asyncio.Transport ------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._out += data
        self._wake.set()
        if not self._writing_paused and self.get_write_buffer_size() > self._high and self._protocol:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= self._low and self._protocol:
            self._writing_paused = False
            self._protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._out) + self._sending

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is buffered, then a close frame."""
        if self._closing:
            return
        self._closing = True
        self._reading.set()  # let the receive loop see the close
        self._wake.set()

    def abort(self) -> None:
        """Drop the connection now, without a close frame."""
        self._closing = True
        self._out.clear()
        self._reading.set()
        self._wake.set()
        if self._socket is not None:
            self._socket.abort()

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``ssl_object`` (for X.509 client certificates), ``peername``, … of the TLS/TCP socket."""
        if self._socket is None:
            return default
        return self._socket.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("the protocol of a WebSocket transport is fixed by run()")

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

"""Log set-up: one structured line per event, level from ``RuntimeLogLevel``; the helpers that keep
client-supplied text short and floods of one event to one line per interval.

Formatting only; modules log through ``logging.getLogger(__name__)`` with lazy %s args.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class LineFormatter(logging.Formatter):
    """``2026-11-22T06:00:00.123Z level logger: message`` with newlines escaped."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\n", "\\n")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        LineFormatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())


def shown(value: object, limit: int = 64) -> str:
    """Client-supplied text (a client id, a topic, an error naming them) for a log line: control
    characters escaped and cut to ``limit`` characters with the original length, so a 60,000-byte
    client id costs a log line 100 bytes, not 60,000 (issue 15: log amplification)."""
    text = str(value)
    cut = text[:limit].encode("unicode_escape").decode("ascii")
    return cut if len(text) <= limit else f"{cut}…({len(text)} chars)"


class RateLimitedLine:
    """One kind of event (a store-full refusal, a refused CONNECT) logged at most once per
    ``interval`` seconds; the occurrences in between are counted and named in the next line.

    Attackers and floods cannot grow the log faster than one line per interval per kind.
    """

    __slots__ = ("_clock", "_interval", "_last", "_level", "_logger", "_suppressed")

    def __init__(self, logger: logging.Logger, level: int, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line went out less than ``interval`` ago; True if logged."""
        now = self._clock()
        if now - self._last < self._interval:
            self._suppressed += 1
            return False
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            self._logger.log(self._level, "%s (and %d more in the last %.0f s)",
                             message % args, suppressed, self._interval)
        else:
            self._logger.log(self._level, message, *args)
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs every malformed HTTP request at ERROR with a traceback, so a peer sending
    garbage to the HTTPS port chose how much the hub logs (found by tests/reliability/test_fuzz.py).
    Such records become one short line, rate-limited; other aiohttp errors pass unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._line = RateLimitedLine(logging.getLogger("edgehub.heads.http"), logging.INFO)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not type(exc).__module__.startswith("aiohttp.http_exceptions"):
            return True
        self._line("HTTP request refused as malformed: %s", shown(" ".join(str(exc).split()), 120))
        return False

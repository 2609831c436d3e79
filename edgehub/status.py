"""What the probes answer: /health (alive), /ready (store open, every enabled head bound),
/stats (queue lengths, oldest message age, store bytes, connected clients), /metrics.

The StatusSource protocol and the one routing of those paths to status, content type and
body, shared by the HTTP head and the minimal metrics listener; no I/O and no hub part here.
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol

from edgehub import metrics

JSON: Final = "application/json; charset=utf-8"
PROBE_PATHS: Final = ("/health", "/ready", "/stats", "/metrics")


class StatusSource(Protocol):
    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether the hub serves (store open, every enabled head bound) and each part's state."""
        ...

    def stats(self) -> dict[str, Any]:
        """A snapshot from in-memory counters (never a walk of the store)."""
        ...


def answer(path: str, source: StatusSource) -> tuple[int, str, bytes]:
    """(HTTP status, content type, body) of a GET on a probe path; 404 for any other path."""
    if path == "/health":
        return 200, JSON, _json({"status": "alive"})
    if path == "/ready":
        ready, parts = source.ready()
        return (200 if ready else 503), JSON, _json({"ready": ready, **parts})
    if path == "/stats":
        return 200, JSON, _json(source.stats())
    if path == "/metrics":
        body, content_type = metrics.exposition()
        return 200, content_type, body
    return 404, JSON, _json({"status": 404, "message": f"no resource {path[:100]!r} here"})


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()

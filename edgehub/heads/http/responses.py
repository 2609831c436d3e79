"""The JSON bodies of the HTTP head's answers: one error shape for every route.

Values only (aiohttp responses built from a status and a message); no request handling here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

JSON_TYPE = "application/json"


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(document, status=status, headers=headers)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """``{"status": s, "message": "..."}`` with HTTP status ``s``."""
    return web.json_response({"status": status, "message": message}, status=status, headers=headers)

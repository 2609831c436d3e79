"""The AMQP claims-based-security put-token exchange on ``$cbs``, both sides.

Owns the request and response message shapes only (AMQP CBS draft, as Azure IoT Hub and the SDKs
use it); it checks no token and keeps no link: the head decides what a token proves.

Request: a message to ``$cbs`` with application properties ``operation=put-token``, ``type``
(``servicebus.windows.net:sastoken`` or ``azure-devices.net:sastoken``), ``name`` (the audience,
e.g. ``{host}/devices/{d}/modules/{m}``), the token as an amqp-value string body, a ``message-id``
and a ``reply-to``. Response: ``correlation-id`` = the request's message-id, to the reply-to
address, application properties ``status-code`` (int, HTTP-like) and ``status-description``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Final, cast

import proton

CBS_ADDRESS: Final = "$cbs"
PUT_TOKEN: Final = "put-token"
SAS_TOKEN_TYPE: Final = "servicebus.windows.net:sastoken"
TOKEN_TYPES: Final = frozenset({SAS_TOKEN_TYPE, "azure-devices.net:sastoken"})
STATUS_CODE: Final = "status-code"
STATUS_DESCRIPTION: Final = "status-description"

_request_ids = itertools.count(1)


class CbsError(ValueError):
    """A put-token request that is not one (missing operation, name, type or token)."""


@dataclass(frozen=True, slots=True)
class PutToken:
    """A parsed put-token request. ``token`` is a secret: never log it."""

    audience: str
    token: str
    token_type: str
    message_id: object
    reply_to: str | None

    def __repr__(self) -> str:
        return f"PutToken(audience={self.audience!r}, token_type={self.token_type!r}, token=<hidden>)"


# --- server side ----------------------------------------------------------------------------------


def parse_put_token(message: proton.Message) -> PutToken:
    """The put-token request in ``message``; raises CbsError naming what is wrong."""
    properties: dict[Any, Any] = message.properties or {}
    operation = properties.get("operation")
    if operation != PUT_TOKEN:
        raise CbsError(f"CBS operation {str(operation)[:40]!r} is not {PUT_TOKEN}")
    audience = properties.get("name")
    if not isinstance(audience, str) or not audience:
        raise CbsError("put-token without a name (audience)")
    token_type = properties.get("type")
    if not isinstance(token_type, str) or token_type not in TOKEN_TYPES:
        raise CbsError(f"put-token type {str(token_type)[:60]!r} is not a SAS token type")
    body = message.body
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body).decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        raise CbsError("put-token without a token in the body")
    return PutToken(audience, body, token_type, message.id, message.reply_to)


def put_token_response(request: PutToken | None, status: int, description: str,
                       message_id: object = None, reply_to: str | None = None) -> proton.Message:
    """The answer to ``request`` (or to an unparsable one, by its ``message_id``/``reply_to``)."""
    response: Any = proton.Message()  # proton's stubs type the section setters too narrowly
    response.correlation_id = request.message_id if request is not None else message_id
    response.address = request.reply_to if request is not None else reply_to
    response.properties = {STATUS_CODE: proton.int32(status), STATUS_DESCRIPTION: description}
    return cast(proton.Message, response)


# --- client side ----------------------------------------------------------------------------------


def put_token_request(audience: str, token: str, *, token_type: str = SAS_TOKEN_TYPE,
                      reply_to: str = "cbs", message_id: object = None) -> proton.Message:
    """A put-token request for ``audience`` (IoT Hub: ``{host}/devices/{d}[/modules/{m}]``);
    ``message_id`` defaults to a fresh per-process counter (match the response's correlation-id)."""
    request: Any = proton.Message(body=token)
    request.id = message_id if message_id is not None else f"put-token-{next(_request_ids)}"
    request.reply_to = reply_to
    request.address = CBS_ADDRESS
    request.properties = {"operation": PUT_TOKEN, "type": token_type, "name": audience}
    return cast(proton.Message, request)


def parse_put_token_response(message: proton.Message) -> tuple[int, str]:
    """(status code, description) of a put-token response; (0, why) when it carries none."""
    properties: dict[Any, Any] = message.properties or {}
    status = properties.get(STATUS_CODE)
    description = properties.get(STATUS_DESCRIPTION)
    if not isinstance(status, int):
        return 0, "put-token response without a status-code"
    return int(status), str(description) if description is not None else ""

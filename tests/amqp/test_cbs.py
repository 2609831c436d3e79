"""The CBS put-token exchange both ways through the wire encoding: a client's request parses on the hub,
the hub's answer parses on the client, and malformed requests are named."""

from __future__ import annotations

from typing import Any

import proton
import pytest

from edgehub.amqp import cbs


def wire(message: proton.Message) -> proton.Message:
    decoded = proton.Message()
    decoded.decode(message.encode())
    return decoded


def test_a_put_token_request_reads_back_on_the_hub_and_its_answer_reads_back_on_the_client() -> None:
    request = wire(
        cbs.put_token_request("hub/devices/d1", "SharedAccessSignature sr=hub&sig=s&se=1", message_id="id-1")
    )
    parsed = cbs.parse_put_token(request)
    assert (parsed.audience, parsed.token_type, parsed.message_id, parsed.reply_to) == (
        "hub/devices/d1",
        cbs.SAS_TOKEN_TYPE,
        "id-1",
        "cbs",
    )
    assert "sig=" not in repr(parsed)  # a token never reaches a log line through repr
    answer = wire(cbs.put_token_response(parsed, 200, "OK"))
    assert answer.correlation_id == "id-1"
    assert answer.address == "cbs"
    assert cbs.parse_put_token_response(answer) == (200, "OK")


def test_a_token_sent_as_binary_is_read_as_text() -> None:
    request: Any = proton.Message(
        body=b"SharedAccessSignature sr=a&sig=b&se=1",
        properties={"operation": "put-token", "name": "a", "type": "azure-devices.net:sastoken"},
    )
    assert cbs.parse_put_token(wire(request)).token.startswith("SharedAccessSignature")


@pytest.mark.parametrize(
    ("properties", "body", "reason"),
    [
        ({"operation": "get-token", "name": "a", "type": cbs.SAS_TOKEN_TYPE}, "t", "operation"),
        ({"operation": "put-token", "type": cbs.SAS_TOKEN_TYPE}, "t", "name"),
        ({"operation": "put-token", "name": "a", "type": "jwt"}, "t", "type"),
        ({"operation": "put-token", "name": "a", "type": cbs.SAS_TOKEN_TYPE}, None, "token"),
    ],
)
def test_a_request_missing_a_part_is_refused_naming_it(
    properties: dict[str, str], body: str | None, reason: str
) -> None:
    request: Any = proton.Message(body=body, properties=properties)
    with pytest.raises(cbs.CbsError, match=reason):
        cbs.parse_put_token(wire(request))


def test_an_answer_without_a_status_code_says_so() -> None:
    assert cbs.parse_put_token_response(wire(proton.Message())) == (
        0,
        "put-token response without a status-code",
    )

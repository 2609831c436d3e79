"""The server SASL layer with bytes only: proton's own client SASL against it (PLAIN, ANONYMOUS), a client
without SASL, and refusals (unknown mechanism, wrong header, malformed or oversize frames)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import proton
import pytest

from edgehub.amqp.sasl import (
    AMQP_HEADER,
    MAX_SASL_FRAME,
    SASL_HEADER,
    SaslCode,
    SaslError,
    SaslInit,
    SaslServer,
    parse_plain,
)


def client_transport(
    mechanism: str, user: str | None = None, password: str | None = None
) -> proton.Transport:
    transport = proton.Transport(proton.Transport.CLIENT)
    connection = proton.Connection()
    if user is not None and password is not None:
        connection.user = user
        connection.password = password
    sasl = transport.sasl()
    sasl.allowed_mechs(mechanism)
    sasl.allow_insecure_mechs = True
    transport.bind(connection)
    connection.open()
    return transport


def recording(seen: list[SaslInit]) -> Callable[[SaslInit], SaslCode]:
    def authenticate(init: SaslInit) -> SaslCode:
        seen.append(init)
        return SaslCode.OK

    return authenticate


def exchange(transport: proton.Transport, server: SaslServer) -> None:
    for _ in range(10):
        pending = transport.pending()
        if pending > 0:
            data = bytes(transport.peek(pending) or b"")
            transport.pop(pending)
            server.receive_data(data)
        answer = server.data_to_send()
        if answer:
            transport.push(answer)
        if pending <= 0 and not answer:
            return


def test_proton_clients_plain_response_reaches_the_authenticator_intact_and_ok_is_sent() -> None:
    seen: list[SaslInit] = []
    server = SaslServer(("PLAIN", "ANONYMOUS"), recording(seen))
    transport = client_transport("PLAIN", "d1/modules/m1@sas.hub", "SharedAccessSignature sr=x")
    exchange(transport, server)
    assert server.outcome is SaslCode.OK
    assert [i.mechanism for i in seen] == ["PLAIN"]
    assert parse_plain(seen[0].initial_response) == (
        "",
        "d1/modules/m1@sas.hub",
        "SharedAccessSignature sr=x",
    )
    assert server.remainder.startswith(AMQP_HEADER)  # the client went on to AMQP: proton's part now


def test_a_refused_credential_sends_the_auth_outcome_and_the_client_sees_it() -> None:
    server = SaslServer(("PLAIN",), lambda init: SaslCode.AUTH)
    transport = client_transport("PLAIN", "d1@sas.hub", "bad")
    exchange(transport, server)
    assert server.outcome is SaslCode.AUTH
    assert transport.condition is not None
    assert transport.condition.name == "amqp:unauthorized-access"


def test_a_mechanism_not_offered_fails_without_asking_the_authenticator() -> None:
    asked: list[SaslInit] = []
    server = SaslServer(("PLAIN",), recording(asked))
    init = _frame(0x41, [proton.symbol("CRAM-MD5"), b"x"])
    server.receive_data(SASL_HEADER + init)
    assert server.outcome is SaslCode.AUTH
    assert asked == []


def test_a_client_without_sasl_is_let_through_as_anonymous_with_every_byte_kept() -> None:
    server = SaslServer(("PLAIN",), lambda init: SaslCode.AUTH)
    assert server.receive_data(AMQP_HEADER[:3]) is None
    assert server.receive_data(AMQP_HEADER[3:] + b"\x00\x00\x00\x08") is SaslCode.OK
    assert server.skipped
    assert server.remainder == AMQP_HEADER + b"\x00\x00\x00\x08"
    assert server.data_to_send() == b""  # nothing of SASL goes out


def test_a_client_without_sasl_is_refused_when_sasl_is_required() -> None:
    server = SaslServer(("PLAIN",), lambda init: SaslCode.OK, allow_skip=False)
    with pytest.raises(SaslError):
        server.receive_data(AMQP_HEADER)
    assert server.data_to_send() == SASL_HEADER  # the header we speak (AMQP 1.0 §2.2)


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n", b"AMQP\x01\x01\x00\x00", b"\x10\x20"])
def test_anything_but_an_amqp_header_is_answered_with_ours_and_refused(garbage: bytes) -> None:
    server = SaslServer(("PLAIN",), lambda init: SaslCode.OK)
    with pytest.raises(SaslError):
        server.receive_data(garbage)
    assert server.data_to_send() == SASL_HEADER


def test_an_oversize_or_malformed_sasl_frame_is_a_protocol_error() -> None:
    big = SaslServer(("PLAIN",), lambda init: SaslCode.OK)
    with pytest.raises(SaslError, match="over"):
        big.receive_data(SASL_HEADER + struct.pack(">IBBH", MAX_SASL_FRAME + 1, 2, 1, 0))
    wrong_type = SaslServer(("PLAIN",), lambda init: SaslCode.OK)
    with pytest.raises(SaslError, match="malformed"):
        wrong_type.receive_data(SASL_HEADER + struct.pack(">IBBH", 16, 2, 0, 0) + b"\x00" * 8)
    undecodable = SaslServer(("PLAIN",), lambda init: SaslCode.OK)
    with pytest.raises(SaslError):
        undecodable.receive_data(SASL_HEADER + struct.pack(">IBBH", 12, 2, 1, 0) + b"\xff\xff\xff\xff")


def test_plain_responses_without_two_separators_are_refused() -> None:
    with pytest.raises(ValueError, match="authzid"):
        parse_plain(b"user-and-password")


def _frame(descriptor: int, fields: list[object]) -> bytes:
    data = proton.Data()
    data.put_object(proton.Described(proton.ulong(descriptor), fields))  # type: ignore[arg-type]
    body = data.encode()
    return struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + body

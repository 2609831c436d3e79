"""The hand encoder of upstream telemetry gives the message proton's encoder gives for the shared mapping
(edgehub.amqp.messages.telemetry_to_amqp), field by field, for any message."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edgehub.amqp.messages import decode, from_amqp, telemetry_to_amqp
from edgehub.iothub.topics import EXPIRY_TIME_UTC
from edgehub.message import Message, SystemProperty
from edgehub.upstream.amqp_wire import encode_telemetry

TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
SYSTEM = st.fixed_dictionaries({}, optional={
    SystemProperty.MESSAGE_ID: TEXT,
    SystemProperty.CORRELATION_ID: TEXT,
    SystemProperty.USER_ID: TEXT,
    SystemProperty.TO: TEXT,
    SystemProperty.CONTENT_TYPE: st.text("abcdefghijklmnopqrstuvwxyz/+-.;= 0123456789", max_size=300),
    SystemProperty.CONTENT_ENCODING: st.sampled_from(["utf-8", "utf-16", "gzip"]),
    SystemProperty.OUTPUT_NAME: TEXT,
    SystemProperty.CREATION_TIME: TEXT,
    SystemProperty.MESSAGE_SCHEMA: TEXT,
    EXPIRY_TIME_UTC: st.sampled_from(["2030-01-02T03:04:05.678Z", "2025-06-01T00:00:00+00:00", "bad", ""]),
})
MESSAGES = st.builds(Message, st.binary(max_size=1000), st.dictionaries(TEXT, TEXT, max_size=5), SYSTEM)


def fields(data: bytes) -> dict[str, Any]:
    amqp = decode(data)
    return {
        "hub message": from_amqp(amqp), "id": amqp.id, "correlation": amqp.correlation_id,
        "user": bytes(amqp.user_id or b""), "to": amqp.address, "type": amqp.content_type,
        "encoding": amqp.content_encoding, "expiry": amqp.expiry_time, "durable": amqp.durable,
        "priority": amqp.priority, "ttl": amqp.ttl, "annotations": amqp.annotations,
    }


@given(MESSAGES)
def test_hand_encoded_telemetry_decodes_as_protons_encoding_does(message: Message) -> None:
    assert fields(encode_telemetry(message)) == fields(telemetry_to_amqp(message).encode())


def test_a_large_body_and_many_properties_use_the_32_bit_forms() -> None:
    message = Message(b"x" * 70_000, {f"k{i}": "v" * 300 for i in range(300)},
                      {SystemProperty.MESSAGE_ID: "m" * 300})
    assert fields(encode_telemetry(message)) == fields(telemetry_to_amqp(message).encode())
    assert from_amqp(decode(encode_telemetry(message))).body == b"x" * 70_000

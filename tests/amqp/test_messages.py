"""proton.Message <-> edgehub Message both ways, through the wire encoding: the properties section, the
``iothub-*`` application properties, the delivery annotations, and bodies that are not binary."""

from __future__ import annotations

import uuid
from typing import Any

import proton
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.amqp import messages
from edgehub.iothub.topics import EXPIRY_TIME_UTC
from edgehub.message import Message, SystemProperty

_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=30
)
_symbol = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)
"""content-type and -encoding are AMQP symbols: ASCII (AMQP 1.0 §1.6.21)."""
_system_values = st.fixed_dictionaries(
    {},
    optional={
        SystemProperty.MESSAGE_ID: _text,
        SystemProperty.CORRELATION_ID: _text,
        SystemProperty.CONTENT_TYPE: _symbol,
        SystemProperty.CONTENT_ENCODING: _symbol,
        SystemProperty.OUTPUT_NAME: _text,
        SystemProperty.CREATION_TIME: _text,
        SystemProperty.MESSAGE_SCHEMA: _text,
        SystemProperty.USER_ID: _text,
        SystemProperty.TO: _text,
    },
)
_app = st.dictionaries(_text.filter(lambda key: not key.startswith("iothub-")), _text, max_size=5)


def wire(message: proton.Message) -> proton.Message:
    """Encode and decode again: what the peer really gets."""
    return messages.decode(message.encode())


@given(body=st.binary(max_size=200), app=_app, system=_system_values)
def test_telemetry_a_sender_writes_reads_back_as_the_same_message(
    body: bytes,
    app: dict[str, str],
    system: dict[str, str],
) -> None:
    original = Message(body, app, system)
    back = messages.from_amqp(wire(messages.telemetry_to_amqp(original)))
    assert (back.body, dict(back.properties), dict(back.system_properties)) == (body, app, system)


def test_a_delivered_message_carries_the_input_name_the_sender_and_the_enqueued_time() -> None:
    delivered = Message(
        b"x",
        {"k": "v"},
        {
            SystemProperty.CONNECTION_DEVICE_ID: "edge",
            SystemProperty.CONNECTION_MODULE_ID: "filter",
            SystemProperty.OUTPUT_NAME: "out1",
        },
        enqueued_ms=1_700_000_000_123,
    )
    out = wire(messages.delivery_to_amqp(delivered, "in1"))
    assert messages.annotation(out, messages.INPUT_NAME) == "in1"
    assert messages.annotation(out, messages.CONNECTION_DEVICE_ID) == "edge"
    assert messages.annotation(out, messages.CONNECTION_MODULE_ID) == "filter"
    annotations: Any = out.annotations
    assert annotations[proton.symbol(messages.ENQUEUED_TIME)] == 1_700_000_000_123  # AMQP timestamps are ms
    section: Any = out.properties
    assert section == {"k": "v"}  # the output name stays the sender's business (edgeHub)
    assert messages.body_bytes(out) == b"x"


def test_a_bytes_body_goes_out_as_a_data_section() -> None:
    encoded = messages.telemetry_to_amqp(Message(b"\x00\x01")).encode()
    assert b"\x00Su" in encoded  # descriptor 0x75: data (AMQP 1.0 §3.2.6), not amqp-value 0x77


def test_identifiers_of_every_amqp_type_become_text() -> None:
    incoming: Any = proton.Message(body=b"")
    ident = uuid.UUID(int=7)
    incoming.id = ident
    incoming.correlation_id = proton.ulong(42)
    back = messages.from_amqp(wire(incoming))
    assert back.system_properties == {
        SystemProperty.MESSAGE_ID: str(ident),
        SystemProperty.CORRELATION_ID: "42",
    }


def test_absolute_expiry_time_round_trips_as_the_exp_system_property() -> None:
    original = Message(b"", {}, {EXPIRY_TIME_UTC: "2030-01-02T03:04:05Z"})
    out = wire(messages.telemetry_to_amqp(original))
    assert messages.from_amqp(out).system_properties == {EXPIRY_TIME_UTC: "2030-01-02T03:04:05Z"}


def test_a_text_body_is_taken_as_utf8_and_numbers_keep_their_digits() -> None:
    incoming: Any = proton.Message(body="héllo", properties={"n": proton.int32(5), "b": True, "f": 1.5})
    back = messages.from_amqp(wire(incoming))
    assert back.body == "héllo".encode()
    assert dict(back.properties) == {"n": "5", "b": "true", "f": "1.5"}


def test_a_body_that_is_neither_binary_nor_text_is_refused() -> None:
    incoming: Any = proton.Message(body={"a": 1})
    with pytest.raises(messages.MessageFormatError, match="body"):
        messages.from_amqp(wire(incoming))


@pytest.mark.parametrize("junk", [b"", b"garbage", b"\xff\xff\xff"])
def test_bytes_that_are_no_amqp_message_are_refused(junk: bytes) -> None:
    with pytest.raises(messages.MessageFormatError, match="not an AMQP message"):
        messages.decode(junk)


def test_telemetry_without_a_body_section_is_refused() -> None:
    with pytest.raises(messages.MessageFormatError, match="no body"):
        messages.from_amqp(messages.decode(b"\x00\x53\x75\xa0\x05ab"))  # a data section cut short

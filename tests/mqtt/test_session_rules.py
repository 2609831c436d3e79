"""Tests of edgehub.mqtt.session_rules: packet identifiers, keep-alive timing and CONNACK codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.mqtt.packets import ConnectReturnCode, ReasonCode
from edgehub.mqtt.session_rules import (
    MAX_PACKET_ID,
    PacketIdsExhaustedError,
    following_packet_id,
    free_packet_id,
    keep_alive_expired,
    ping_due,
    refuses_credentials,
)


def test_packet_ids_run_1_to_65535_and_wrap_to_1() -> None:
    assert following_packet_id(1) == 2
    assert following_packet_id(MAX_PACKET_ID) == 1


@given(st.integers(1, MAX_PACKET_ID), st.sets(st.integers(1, MAX_PACKET_ID), max_size=200))
def test_a_free_packet_id_is_never_in_use_and_the_first_free_from_the_candidate(
    candidate: int, in_use: set[int]
) -> None:
    packet_id = free_packet_id(candidate, in_use)
    assert packet_id not in in_use
    skipped = candidate
    while skipped != packet_id:
        assert skipped in in_use
        skipped = following_packet_id(skipped)


def test_no_free_packet_id_raises() -> None:
    with pytest.raises(PacketIdsExhaustedError, match="65535"):
        free_packet_id(7, range(1, MAX_PACKET_ID + 1))


def test_keep_alive_expires_after_one_and_a_half_keep_alives_and_zero_never() -> None:
    assert not keep_alive_expired(10, 0.0, 15.0)
    assert keep_alive_expired(10, 0.0, 15.01)
    assert not keep_alive_expired(0, 0.0, 1e9)  # [MQTT-3.1.2-22]: 0 turns the mechanism off


def test_a_ping_is_due_after_three_quarters_idle_either_way() -> None:
    assert not ping_due(10, 0.0, 0.0, 7.4)
    assert ping_due(10, 0.0, 7.0, 7.5)  # nothing sent
    assert ping_due(10, 7.0, 0.0, 7.5)  # nothing received
    assert not ping_due(0, 0.0, 0.0, 100.0)


@pytest.mark.parametrize(("code", "refused"), [
    (ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD, True), (ConnectReturnCode.NOT_AUTHORIZED, True),
    (ReasonCode.BAD_USER_NAME_OR_PASSWORD, True), (ReasonCode.NOT_AUTHORIZED, True),
    (ConnectReturnCode.SERVER_UNAVAILABLE, False), (ReasonCode.QUOTA_EXCEEDED, False), (0, False),
])
def test_credential_refusals_are_codes_4_and_5_or_0x86_and_0x87(code: int, refused: bool) -> None:
    assert refuses_credentials(code) is refused

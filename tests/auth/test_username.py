"""Tests for edgehub.auth.username: the IoT Hub MQTT username and client id rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.auth.username import check_client_id, parse_mqtt_connect, parse_mqtt_username
from edgehub.errors import AuthError
from edgehub.message import Identity

HOST = "myhub.azure-devices.net"


def test_device_username_as_the_python_sdk_sends_it() -> None:
    parsed = parse_mqtt_username(
        f"{HOST}/sensor-1/?api-version=2019-10-01&DeviceClientType=azure-iot-device%2F2.12.0"
    )

    assert parsed.host == HOST
    assert parsed.identity == Identity("sensor-1")
    assert parsed.api_version == "2019-10-01"
    assert parsed.client_type == "azure-iot-device/2.12.0"
    assert parsed.model_id is None


def test_module_username_with_model_id_and_unknown_parameters() -> None:
    parsed = parse_mqtt_username(f"{HOST}/edge/filter/?api-version=2021-04-12&model-id=dtmi%3Ax%3B1&Foo=bar")

    assert parsed.identity == Identity("edge", "filter")
    assert parsed.model_id == "dtmi:x;1"
    assert parsed.query["Foo"] == "bar"


def test_host_identity_and_query_unpack_as_a_tuple() -> None:
    host, identity, query = parse_mqtt_username(f"{HOST}/d1/?api-version=1")

    assert (host, identity, dict(query)) == (HOST, Identity("d1"), {"api-version": "1"})


@pytest.mark.parametrize(
    ("username", "identity"),
    [
        (f"{HOST}/d1", Identity("d1")),
        (f"{HOST}/d1/", Identity("d1")),
        (f"{HOST}/d1/?", Identity("d1")),
        (f"{HOST}/d1/m1", Identity("d1", "m1")),
        (f"{HOST}/d1/m1/", Identity("d1", "m1")),
        (f"{HOST}/d1/?DeviceClientType=x", Identity("d1")),
    ],
)
def test_missing_api_version_is_tolerated(username: str, identity: Identity) -> None:
    parsed = parse_mqtt_username(username)

    assert parsed.identity == identity
    assert parsed.api_version is None


@pytest.mark.parametrize(
    ("username", "identity", "client_type"),
    [
        ("hub/d1/api-version=2010-01-01&DeviceClientType=custom1", Identity("d1"), "custom1"),
        ("hub/d1/m1/api-version=2010-01-01&DeviceClientType=custom2", Identity("d1", "m1"), "custom2"),
    ],
)
def test_older_sdk_form_without_question_mark(username: str, identity: Identity, client_type: str) -> None:
    parsed = parse_mqtt_username(username)

    assert parsed.identity == identity
    assert parsed.client_type == client_type
    assert parsed.api_version == "2010-01-01"


def test_first_value_of_a_repeated_parameter_wins() -> None:
    parsed = parse_mqtt_username(f"{HOST}/d1/?api-version=1&api-version=2&&")

    assert parsed.api_version == "1"


def test_plus_in_a_query_value_stays_a_plus() -> None:
    parsed = parse_mqtt_username(f"{HOST}/d1/?DeviceClientType=a+b%20c")

    assert parsed.client_type == "a+b c"


def test_question_mark_inside_an_id_is_part_of_the_id() -> None:
    parsed = parse_mqtt_username(f"{HOST}/d?1/?api-version=1")

    assert parsed.identity == Identity("d?1")


@pytest.mark.parametrize(
    "username",
    [
        "",
        HOST,
        f"{HOST}/",
        f"{HOST}//?api-version=1",
        "/d1/?api-version=1",
        f"{HOST}/d1//?api-version=1",
        f"{HOST}/d1/m1/extra/?api-version=1",
        f"{HOST}/d1/m1/extra",
    ],
)
def test_username_without_a_usable_identity_is_refused(username: str) -> None:
    with pytest.raises(AuthError, match="is not"):
        parse_mqtt_username(username)


def test_client_id_must_be_the_device_id() -> None:
    check_client_id("d1", Identity("d1"))

    with pytest.raises(AuthError, match="client id 'd2' does not match username identity d1"):
        check_client_id("d2", Identity("d1"))


def test_client_id_must_be_device_slash_module_for_a_module() -> None:
    check_client_id("edge/filter", Identity("edge", "filter"))

    with pytest.raises(AuthError, match="does not match"):
        check_client_id("edge", Identity("edge", "filter"))


def test_client_id_is_case_sensitive_as_iot_hub_ids() -> None:
    with pytest.raises(AuthError, match="does not match"):
        check_client_id("D1", Identity("d1"))


def test_connect_parses_and_checks_together() -> None:
    assert parse_mqtt_connect(f"{HOST}/d1/m1/?api-version=1", "d1/m1").identity == Identity("d1", "m1")

    with pytest.raises(AuthError, match="does not match"):
        parse_mqtt_connect(f"{HOST}/d1/m1/?api-version=1", "d1")


def test_refusal_reason_escapes_control_characters() -> None:
    with pytest.raises(AuthError) as caught:
        parse_mqtt_username("bad\nline")

    assert "\n" not in str(caught.value)


@given(st.text(max_size=120))
def test_parse_never_crashes_on_junk(username: str) -> None:
    try:
        parsed = parse_mqtt_username(username)
    except AuthError:
        return
    assert parsed.identity.device_id
    assert parsed.host

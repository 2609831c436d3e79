"""Tests of the standard-library settings loader (edgehub.settings_fields, edgehub.settings_env)
beyond tests/test_settings.py: construction checks, parsing rules, alias precedence, and that
loading costs no pydantic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgehub.connection_string import ConnectionString
from edgehub.errors import ConfigError
from edgehub.settings import (
    AmqpSettings,
    LogLevel,
    MqttSettings,
    Settings,
    UpstreamProtocol,
    describe_settings,
    load_settings,
)
from edgehub.settings_fields import as_bool, as_float, as_int, choice, format_default


def problems_of(environ: dict[str, str]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value.problems


def test_constructor_refuses_an_invalid_value_naming_its_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(metrics_port=70000, max_connected_clients=0)

    locations = [location for location, _ in caught.value.problems]
    assert locations == ["Metrics__Listener__Port", "MaxConnectedClients"]


def test_group_constructor_refuses_an_invalid_value_naming_its_inner_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        MqttSettings(plain_port=-1)

    assert caught.value.problems == [("plainPort", "must be a port number between 0 and 65535")]


def test_constructor_parses_text_as_the_environment_would() -> None:
    settings = Settings(metrics_port="9700", optimize_for_performance="off",  # type: ignore[arg-type]
                        log_level="Warn", storage_folder="/var/lib/edgehub")  # type: ignore[arg-type]

    assert settings.metrics_port == 9700
    assert settings.optimize_for_performance is False
    assert settings.log_level is LogLevel.WARNING
    assert settings.storage_folder == Path("/var/lib/edgehub")


def test_constructor_derives_hub_name_and_device_from_the_connection_string() -> None:
    connection = ConnectionString("hub.example", "gw", "a2V5", module_id="$edgeHub")

    derived = Settings(connection_string=connection)
    explicit = Settings(connection_string=connection, iothub_hostname="other.example")

    assert (derived.iothub_hostname, derived.edge_device_id) == ("hub.example", "gw")
    assert (explicit.iothub_hostname, explicit.edge_device_id) == ("other.example", "gw")


def test_cross_field_checks_run_at_construction() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(amqp=AmqpSettings(port=8883))

    assert caught.value.problems == [
        ("amqpSettings__port", "port 8883 is already used by mqttSettings__port")
    ]


def test_a_settings_own_name_wins_over_its_alias() -> None:
    settings = load_settings({"IOTEDGE_DEVICEID": "from-alias", "EdgeDeviceId": "own"})

    assert settings.edge_device_id == "own"


def test_an_empty_own_name_lets_the_alias_through() -> None:
    settings = load_settings({"EdgeDeviceId": "", "IOTEDGE_DEVICEID": "from-alias"})

    assert settings.edge_device_id == "from-alias"


def test_a_problem_is_named_by_the_alias_the_user_set() -> None:
    [(location, reason)] = problems_of({"IOTEDGE_DEVICEID": "a/b"})

    assert location == "IOTEDGE_DEVICEID"
    assert "must be 1 to 128" in reason


def test_a_cross_field_problem_is_named_as_given_too() -> None:
    problems = problems_of({"IOTEDGE_WORKLOADURI": "unix:///run/workload.sock"})

    assert problems == [("IOTEDGE_MODULEGENERATIONID", "required when IOTEDGE_WORKLOADURI is set")]


def test_unknown_inner_setting_keeps_the_spelling_given() -> None:
    [(location, _)] = problems_of({"AMQPSETTINGS:Prot": "1"})

    assert location == "amqpSettings__Prot"


@pytest.mark.parametrize(("text", "expected"), [("1", True), ("yes", True), (" On ", True), ("t", True),
                                                 ("0", False), ("NO", False), ("off", False), ("f", False)])
def test_bool_accepts_the_usual_spellings(text: str, expected: bool) -> None:
    assert as_bool(text) is expected


@pytest.mark.parametrize("text", ["2", "", "enabled", "truee"])
def test_bool_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="must be true or false"):
        as_bool(text)


def test_whole_numbers_allow_a_sign_and_surrounding_blanks_only() -> None:
    assert (as_int(" 42 "), as_int("+7"), as_int("-3")) == (42, 7, -3)
    for text in ("1.0", "1e3", "0x10", "1_000", True):
        with pytest.raises(ValueError, match="must be a whole number"):
            as_int(text)


def test_numbers_accept_floats_and_refuse_words() -> None:
    assert (as_float("2.5"), as_float(3)) == (2.5, 3.0)
    with pytest.raises(ValueError, match="must be a number"):
        as_float("soon")


def test_choice_returns_the_canonical_member() -> None:
    parse = choice(UpstreamProtocol)

    assert parse(" amqpws ") is UpstreamProtocol.AMQP_WS
    with pytest.raises(ValueError, match="must be one of Mqtt, MqttWs, Amqp, AmqpWs"):
        parse(5)


def test_defaults_are_shown_as_users_write_them() -> None:
    assert [format_default(v) for v in (None, True, LogLevel.INFO, 30.0, 0.5, 8883)] == \
        ["—", "true", "info", "30", "0.5", "8883"]


def test_aliases_are_documented_beside_their_setting() -> None:
    meanings = {name: meaning for name, _, meaning in describe_settings()}

    assert meanings["EdgeDeviceId"].endswith("(also read as IOTEDGE_DEVICEID)")
    assert meanings["EdgeHubConnectionString"].endswith("(also read as IotHubConnectionString)")


def test_loading_settings_imports_no_pydantic() -> None:
    probe = ("import sys, edgehub.settings as s; s.load_settings({'mqttSettings__port': '1'}); "
             "print(sorted(m for m in sys.modules if m.startswith('pydantic')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            timeout=60).stdout

    assert loaded.strip() == "[]"

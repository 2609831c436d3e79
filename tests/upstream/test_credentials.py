"""Tests of the hub's upstream identity: IoT Hub username and client id, SAS tokens and their renewal time."""

from __future__ import annotations

import base64

import pytest

from edgehub.auth.sas import check_resource, parse_sas_token, signature_matches
from edgehub.message import Identity
from edgehub.upstream.credentials import SasCredentials

KEY = base64.b64encode(b"upstream-test-key-0123456789abcd").decode()
NOW = 1_700_000_000.0


@pytest.fixture
def credentials() -> SasCredentials:
    return SasCredentials("myhub.azure-devices.net", Identity("edge1", "$edgeHub"), KEY, token_ttl=3600)


def test_module_identity_uses_iot_hub_username_and_client_id(credentials: SasCredentials) -> None:
    assert credentials.client_id == "edge1/$edgeHub"
    assert credentials.username == "myhub.azure-devices.net/edge1/$edgeHub/?api-version=2018-06-30"
    assert credentials.resource == "myhub.azure-devices.net/devices/edge1/modules/$edgeHub"


def test_device_identity_has_no_module_part() -> None:
    device = SasCredentials("hub.local", Identity("edge1"), KEY)
    assert device.client_id == "edge1"
    assert device.username == "hub.local/edge1/?api-version=2018-06-30"


def test_token_is_signed_with_the_key_for_the_identitys_resource(credentials: SasCredentials) -> None:
    token = credentials.token(NOW)
    parsed = parse_sas_token(token.text)
    assert signature_matches(parsed, base64.b64decode(KEY))
    check_resource(parsed, Identity("edge1", "$edgeHub"), ["myhub.azure-devices.net"])
    assert parsed.expiry == token.expiry == int(NOW) + 3600


def test_token_is_renewed_at_eighty_percent_of_its_lifetime(credentials: SasCredentials) -> None:
    token = credentials.token(NOW)
    assert token.renew_at == pytest.approx(NOW + 2880)
    later = credentials.token(token.renew_at)
    assert later.expiry > token.expiry
    assert later.text != token.text


def test_token_text_never_shows_in_repr(credentials: SasCredentials) -> None:
    token = credentials.token(NOW)
    assert token.text not in repr(token)
    assert KEY not in repr(credentials)


def test_token_lifetime_below_one_second_is_refused() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        SasCredentials("hub", Identity("d"), KEY, token_ttl=0)

"""Tests for edgehub.auth.sas: IoT Hub SAS token format, signature, expiry and resource checks."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub.auth.sas import (
    SasToken,
    check_not_expired,
    check_resource,
    compute_signature,
    make_sas_token,
    parse_sas_token,
    sas_resource,
    signature_matches,
)
from edgehub.errors import AuthError
from edgehub.message import Identity

KEY_B64 = base64.b64encode(b"device-key-0123456789abcdef-0123").decode()
KEY = base64.b64decode(KEY_B64)
HOST = "myhub.azure-devices.net"
DEVICE = Identity("sensor-1")
MODULE = Identity("edge", "filter")
EXPIRY = 1_700_003_600
NOW = 1_700_000_000.0


def test_made_token_parses_back_to_its_fields() -> None:
    token = parse_sas_token(make_sas_token(f"{HOST}/devices/sensor-1", KEY_B64, EXPIRY, policy="device"))

    assert token.resource == f"{HOST}/devices/sensor-1"
    assert token.encoded_resource == quote(f"{HOST}/devices/sensor-1", safe="")
    assert token.expiry == EXPIRY
    assert token.policy == "device"
    assert signature_matches(token, KEY)


def test_made_token_has_the_iot_hub_layout() -> None:
    text = make_sas_token(f"{HOST}/devices/sensor-1", KEY_B64, EXPIRY)

    sr = quote(f"{HOST}/devices/sensor-1", safe="")
    digest = hmac.new(KEY, f"{sr}\n{EXPIRY}".encode(), hashlib.sha256).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="")
    assert text == f"SharedAccessSignature sr={sr}&sig={sig}&se={EXPIRY}"


def test_fields_in_any_order_and_any_name_case_parse() -> None:
    sr = quote(f"{HOST}/devices/sensor-1", safe="")
    sig = quote(base64.b64encode(compute_signature(sr, EXPIRY, KEY)).decode(), safe="")

    token = parse_sas_token(f"SharedAccessSignature SE={EXPIRY}&skn=p&Sig={sig}&sr={sr}")

    assert token == SasToken(sr, compute_signature(sr, EXPIRY, KEY), EXPIRY, "p")
    assert signature_matches(token, KEY)


def test_signature_is_over_sr_exactly_as_sent() -> None:
    # A client that does not URL-encode the '/' still signs what it sends.
    sr = f"{HOST}/devices/sensor-1"
    sig = base64.b64encode(compute_signature(sr, EXPIRY, KEY)).decode()

    token = parse_sas_token(f"SharedAccessSignature sr={sr}&sig={sig}&se={EXPIRY}")

    assert signature_matches(token, KEY)
    assert token.resource == sr


def test_other_key_does_not_match() -> None:
    token = parse_sas_token(make_sas_token(f"{HOST}/devices/sensor-1", KEY_B64, EXPIRY))

    assert not signature_matches(token, b"another key")


def test_tampered_expiry_breaks_the_signature() -> None:
    text = make_sas_token(f"{HOST}/devices/sensor-1", KEY_B64, EXPIRY)
    token = parse_sas_token(text.replace(f"se={EXPIRY}", f"se={EXPIRY + 3600}"))

    assert not signature_matches(token, KEY)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a shared access signature"),
        ("Bearer abc", "not a shared access signature"),
        ("SharedAccessSignature", "lacks field(s) sr, sig, se"),
        ("SharedAccessSignature sr=a&se=1", "lacks field(s) sig"),
        ("SharedAccessSignature sr=a&sig=AAAA&se=1&sr=b", "repeats field sr"),
        ("SharedAccessSignature sr=a&sig=AAAA&se=1&foo=bar", "unknown field 'foo'"),
        ("SharedAccessSignature sr=a&sigAAAA&se=1", "field 'sigAAAA' has no '='"),
        ("SharedAccessSignature sr=&sig=AAAA&se=1", "empty sr"),
        ("SharedAccessSignature sr=a&sig=!!!&se=1", "sig is not base64"),
        ("SharedAccessSignature sr=a&sig=AAAA&se=1", "not an HMAC-SHA256 digest"),
        ("SharedAccessSignature sr=a&sig=" + "A" * 43 + "=&se=soon", "se 'soon' is not Unix seconds"),
        ("SharedAccessSignature sr=a&sig=" + "A" * 43 + "=&se=-5", "is not Unix seconds"),
        ("SharedAccessSignature sr=a&sig=" + "A" * 43 + "=&se=" + "9" * 40, "se is out of range"),
    ],
)
def test_malformed_token_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(AuthError, match=re.escape(reason)):
        parse_sas_token(text)


def test_refusal_reason_never_quotes_the_signature() -> None:
    text = make_sas_token(f"{HOST}/devices/sensor-1", KEY_B64, EXPIRY).replace("se=", "se=x")
    sig = text.split("sig=")[1].split("&")[0]

    with pytest.raises(AuthError) as caught:
        parse_sas_token(text)

    assert sig not in str(caught.value)


def test_token_before_expiry_passes_and_at_expiry_fails() -> None:
    token = parse_sas_token(make_sas_token(f"{HOST}/devices/sensor-1", KEY_B64, EXPIRY))

    check_not_expired(token, EXPIRY - 0.5)
    with pytest.raises(AuthError, match=f"token expired at {EXPIRY}"):
        check_not_expired(token, EXPIRY)


def test_resource_for_device_and_module() -> None:
    assert sas_resource(HOST, DEVICE) == f"{HOST}/devices/sensor-1"
    assert sas_resource(HOST, MODULE) == f"{HOST}/devices/edge/modules/filter"


@pytest.mark.parametrize(
    "resource",
    [
        f"{HOST}/devices/sensor-1",
        f"{HOST}/devices/sensor-1/",
        f"{HOST.upper()}/DEVICES/Sensor-1",
        "gateway.local/devices/sensor-1",
    ],
)
def test_resource_check_accepts_every_hub_host_case_and_trailing_slash(resource: str) -> None:
    token = parse_sas_token(make_sas_token(resource, KEY_B64, EXPIRY))

    check_resource(token, DEVICE, [HOST, "gateway.local"])


def test_module_resource_names_the_module() -> None:
    token = parse_sas_token(make_sas_token(f"{HOST}/devices/edge/modules/filter", KEY_B64, EXPIRY))

    check_resource(token, MODULE, [HOST])


@pytest.mark.parametrize(
    ("resource", "identity", "reason"),
    [
        (f"{HOST}/devices/sensor-2", DEVICE, "does not name sensor-1"),
        (f"{HOST}/devices/edge", MODULE, "does not name edge/filter"),
        (f"{HOST}/devices/edge/modules/filter", Identity("edge"), "does not name edge"),
        (f"{HOST}/devices/edge/modules/other", MODULE, "does not name edge/filter"),
        (f"{HOST}/things/sensor-1", DEVICE, "does not name sensor-1"),
        ("sensor-1", DEVICE, "does not name sensor-1"),
        ("otherhub.azure-devices.net/devices/sensor-1", DEVICE, "host 'otherhub.azure-devices.net'"),
    ],
)
def test_resource_naming_something_else_is_refused(resource: str, identity: Identity, reason: str) -> None:
    token = parse_sas_token(make_sas_token(resource, KEY_B64, EXPIRY))

    with pytest.raises(AuthError, match=reason):
        check_resource(token, identity, [HOST])


def test_make_refuses_a_key_that_is_not_base64() -> None:
    with pytest.raises(ValueError, match=r"base64|Incorrect padding|Non-base64"):
        make_sas_token(f"{HOST}/devices/sensor-1", "not base64!", EXPIRY)


@given(st.text())
def test_parse_never_crashes_on_junk(text: str) -> None:
    with contextlib.suppress(AuthError):
        parse_sas_token(text)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["sr", "sig", "se", "skn", "SR", "x", ""]),
            st.text(alphabet="ab%2F=+/&09 \n", max_size=50),
        ),
        max_size=6,
    )
)
def test_parse_never_crashes_on_token_shaped_junk(fields: list[tuple[str, str]]) -> None:
    text = "SharedAccessSignature " + "&".join(f"{k}={v}" for k, v in fields)
    try:
        token = parse_sas_token(text)
    except AuthError:
        return
    assert token.expiry >= 0
    assert len(token.signature) == 32


@given(
    device=st.text(alphabet=st.characters(codec="ascii", exclude_characters="/"), min_size=1, max_size=20),
    expiry=st.integers(min_value=0, max_value=10**12 - 1),
)
def test_round_trip_for_any_device_id(device: str, expiry: int) -> None:
    identity = Identity(device)
    token = parse_sas_token(make_sas_token(sas_resource(HOST, identity), KEY_B64, expiry))

    assert signature_matches(token, KEY)
    assert token.expiry == expiry
    check_resource(token, identity, [HOST])

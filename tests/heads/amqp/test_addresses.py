"""IoT Hub's AMQP link addresses, seen from the hub's end, and the identities SASL PLAIN usernames and
CBS tokens name."""

from __future__ import annotations

import pytest

from edgehub.auth.sas import SasToken
from edgehub.errors import AuthError
from edgehub.heads.amqp.addresses import LinkAddress, LinkKind, parse_address
from edgehub.heads.amqp.auth import parse_plain_username, token_identity
from edgehub.message import Identity

D = Identity("d1")
M = Identity("d1", "m1")


@pytest.mark.parametrize(
    ("address", "hub_receives", "expected"),
    [
        ("$cbs", True, LinkAddress(LinkKind.CBS, None)),
        ("$cbs", False, LinkAddress(LinkKind.CBS, None)),
        ("/devices/d1/messages/events", True, LinkAddress(LinkKind.TELEMETRY, D)),
        (
            "amqps://hub.example:5671/devices/d1/messages/events?api-version=x",
            True,
            LinkAddress(LinkKind.TELEMETRY, D),
        ),
        ("/devices/d1/modules/m1/messages/events", True, LinkAddress(LinkKind.TELEMETRY, M)),
        ("/devices/d1/modules/m1/messages/events", False, LinkAddress(LinkKind.MODULE_INPUTS, M)),
        ("/devices/d1/messages/deviceBound", False, LinkAddress(LinkKind.DEVICEBOUND, D)),
        ("/devices/d1/modules/m1/twin", True, LinkAddress(LinkKind.TWIN_REQUESTS, M)),
        ("/devices/d1/modules/m1/twin", False, LinkAddress(LinkKind.TWIN_RESPONSES, M)),
        ("/devices/d1/methods/devicebound", True, LinkAddress(LinkKind.METHOD_RESPONSES, D)),
        ("/devices/d1/modules/m1/methods/devicebound", False, LinkAddress(LinkKind.METHOD_REQUESTS, M)),
        ("/devices/dev%3A1/messages/events", True, LinkAddress(LinkKind.TELEMETRY, Identity("dev:1"))),
    ],
)
def test_each_address_iot_hub_defines_maps_to_its_link_kind_and_identity(
    address: str,
    hub_receives: bool,
    expected: LinkAddress,
) -> None:
    assert parse_address(address, hub_receives=hub_receives) == expected


@pytest.mark.parametrize(
    ("address", "hub_receives"),
    [
        (None, True),
        ("", True),
        ("/devices/d1/messages/events", False),  # a device has no inputs
        ("/devices/d1/messages/devicebound", True),  # nobody sends cloud-to-device messages to the hub
        ("/devices//messages/events", True),
        ("/devices/d1/modules//twin", True),
        ("/devices/d1/files", True),
        ("/messages/events", True),
    ],
)
def test_addresses_iot_hub_does_not_define_are_none(address: str | None, hub_receives: bool) -> None:
    assert parse_address(address, hub_receives=hub_receives) is None


@pytest.mark.parametrize(
    ("username", "identity"),
    [
        ("d1@sas.myhub", D),
        ("d1/modules/m1@sas.myhub", M),
        ("d1/m1@sas.myhub", M),
        ("d1@myhub", D),
        ("dev%3A1@sas.myhub", Identity("dev:1")),
    ],
)
def test_sasl_plain_usernames_in_edgehubs_forms_name_their_identity(
    username: str, identity: Identity
) -> None:
    assert parse_plain_username(username) == identity


@pytest.mark.parametrize("username", ["", "d1", "@sas.hub", "d1/modules/m1/x@sas.hub"])
def test_other_usernames_are_refused(username: str) -> None:
    with pytest.raises(AuthError):
        parse_plain_username(username)


def test_a_tokens_resource_names_the_device_or_module_and_nothing_else_does() -> None:
    assert token_identity(SasToken("hub%2Fdevices%2Fd1", b"", 1)) == D
    assert token_identity(SasToken("hub%2Fdevices%2Fd1%2Fmodules%2Fm1", b"", 1)) == M
    with pytest.raises(AuthError, match="names no device"):
        token_identity(SasToken("hub%2Fsomething%2Fd1", b"", 1))

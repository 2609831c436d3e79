"""ConnectionString.parse and hostname_problem on their own (settings-level behaviour: test_settings.py)."""

from __future__ import annotations

import base64

import pytest

from edgehub.connection_string import ConnectionString, hostname_problem

KEY = base64.b64encode(b"k" * 32).decode()


def test_a_module_connection_string_with_port_and_gateway_is_parsed() -> None:
    parsed = ConnectionString.parse(
        f"HostName=hub.example:8883;DeviceId=gw1;ModuleId=$edgeHub;SharedAccessKey={KEY};GatewayHostName=parent"
    )
    assert (parsed.hostname, parsed.port, parsed.device_id, parsed.module_id) == (
        "hub.example", 8883, "gw1", "$edgeHub",
    )
    assert parsed.gateway_hostname == "parent"
    assert parsed.key == b"k" * 32


def test_every_problem_is_named_and_the_key_never_is() -> None:
    secret = base64.b64encode(b"secret material").decode()
    with pytest.raises(ValueError, match="missing DeviceId") as caught:
        ConnectionString.parse(f"HostName=h:0;SharedAccessKey={secret}")
    assert "port must be 1-65535" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in repr(ConnectionString("h", "d", secret))


@pytest.mark.parametrize(
    ("text", "ok"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("a.b-c_d.example.", True),
     ("", False), ("bad host", False), ("-leading.example", False), ("x" * 254, False)],
)
def test_hostname_problem_accepts_dns_names_and_ip_addresses_only(text: str, ok: bool) -> None:
    assert (hostname_problem(text) is None) == ok

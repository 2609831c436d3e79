"""Tests of edgehub.upstream.factory's proxy choice: ``https_proxy``/``no_proxy`` apply to MqttWs (and AmqpWs,
which stands in as MqttWs) only, with one log line naming the proxy, credentials masked."""

from __future__ import annotations

import logging

import pytest

from edgehub.errors import ConfigError
from edgehub.settings import load_settings
from edgehub.testing.clock import FakeClock
from edgehub.upstream.factory import create_upstream
from edgehub.upstream.proxy import HttpsProxy

KEY = "a2V5LWZvci10aGUtZmFjdG9yeS10ZXN0cy0wMTIzNDU="
CONNECTION_STRING = f"HostName=parent.example:8443;DeviceId=edge;ModuleId=$edgeHub;SharedAccessKey={KEY}"
PROXY = {"https_proxy": "http://user:s3cret@proxy.corp:3128"}


def proxy_of(protocol: str, environ: dict[str, str]) -> HttpsProxy | None:
    settings = load_settings({"EdgeHubConnectionString": CONNECTION_STRING, "UpstreamProtocol": protocol})
    link = create_upstream(settings, FakeClock(), environ)
    assert link is not None
    return link.config.proxy


@pytest.mark.parametrize("protocol", ["MqttWs", "AmqpWs"])
def test_a_websocket_link_goes_through_https_proxy_and_says_so_with_the_password_masked(
    protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="edgehub.upstream.factory"):
        proxy = proxy_of(protocol, PROXY)
    assert proxy == HttpsProxy("http", "proxy.corp", 3128, "user", "s3cret")
    assert ("upstream: connecting to wss://parent.example:8443/$iothub/websocket through the HTTPS proxy "
            "http://user:***@proxy.corp:3128 (https_proxy)") in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize("protocol", ["Mqtt", "Amqp"])
def test_mqtt_over_tcp_connects_directly_as_edgehub_does(protocol: str) -> None:
    assert proxy_of(protocol, PROXY) is None


@pytest.mark.parametrize("no_proxy", ["*", "parent.example", ".example", "parent.example:8443"])
def test_no_proxy_exempts_the_parent(no_proxy: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edgehub.upstream.factory"):
        assert proxy_of("MqttWs", PROXY | {"NO_PROXY": no_proxy}) is None
    assert "parent.example is in no_proxy" in caplog.text


def test_a_no_proxy_for_other_hosts_keeps_the_proxy() -> None:
    assert proxy_of("MqttWs", PROXY | {"no_proxy": "localhost,127.0.0.1,other.example"}) is not None


def test_a_malformed_proxy_url_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as refused:
        proxy_of("MqttWs", {"HTTPS_PROXY": "socks5://proxy:1080"})
    assert refused.value.problems == [("HTTPS_PROXY", "the proxy URL must be http:// or https://, got socks5://")]

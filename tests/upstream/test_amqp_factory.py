"""Tests of building the AMQP upstream from settings: ports, the Amqp -> AmqpWs fallback and its proxy,
who authorizes each sender's link (UpstreamIdentityMode), the senders' credentials, and the hub's wiring."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from edgehub.assembly import build_upstream
from edgehub.hub import Hub
from edgehub.message import Identity
from edgehub.settings import load_settings
from edgehub.testing.clock import FakeClock
from edgehub.upstream.amqp import AmqpUpstream
from edgehub.upstream.amqp_factory import SenderCredentials
from edgehub.upstream.config import UpstreamTransport
from edgehub.upstream.credentials import SasCredentials
from edgehub.upstream.factory import create_upstream
from edgehub.upstream.identity_links import PresentedCredentials
from edgehub.upstream.presented import PresentedTokens
from edgehub.upstream.proxy import HttpsProxy

KEY = base64.b64encode(b"k" * 32).decode()
PARENT = f"HostName=parent.example;DeviceId=edge;ModuleId=$edgeHub;SharedAccessKey={KEY}"
CLOUD = f"HostName=myhub.azure-devices.net;DeviceId=edge;ModuleId=$edgeHub;SharedAccessKey={KEY}"
PROXY = {"https_proxy": "http://proxy.corp:3128"}


def amqp_link(protocol: str, connection: str = PARENT, environ: dict[str, str] | None = None,
              **settings: str) -> AmqpUpstream:
    loaded = load_settings({"EdgeHubConnectionString": connection, "UpstreamProtocol": protocol} | settings)
    link = create_upstream(loaded, FakeClock(), environ or {})
    assert isinstance(link, AmqpUpstream)
    return link


def test_amqp_connects_on_5671_and_falls_back_to_websocket_on_443_through_the_proxy() -> None:
    link = amqp_link("Amqp", environ=PROXY)
    assert (link.config.transport, link.config.port, link.config.proxy) == (UpstreamTransport.TCP, 5671, None)
    assert link.url == "amqps://parent.example:5671"
    fallback = link.websocket_fallback
    assert fallback is not None
    assert (fallback.transport, fallback.port) == (UpstreamTransport.WEBSOCKETS, 443)
    assert fallback.proxy == HttpsProxy("http", "proxy.corp", 3128)


def test_amqp_ws_has_no_fallback_and_goes_through_the_proxy() -> None:
    link = amqp_link("AmqpWs", environ=PROXY)
    assert link.websocket_fallback is None
    assert link.config.proxy == HttpsProxy("http", "proxy.corp", 3128)
    assert link.url == "wss://parent.example:443/$iothub/websocket"


def test_plain_amqp_for_a_test_parent_uses_5672() -> None:
    assert amqp_link("Amqp", UpstreamTls="false").config.port == 5672


@pytest.mark.parametrize(("connection", "mode", "on_behalf"), [
    (PARENT, "auto", True), (CLOUD, "auto", False),
    (PARENT, "perIdentity", False), (CLOUD, "multiplexed", True),
])
def test_the_hubs_own_token_authorizes_every_sender_only_toward_a_parent_or_when_multiplexed(
        connection: str, mode: str, on_behalf: bool) -> None:
    assert amqp_link("Amqp", connection, UpstreamIdentityMode=mode).on_behalf is on_behalf


def test_a_senders_credentials_are_its_registry_key_else_its_presented_token_else_none() -> None:
    clock = FakeClock()
    presented = PresentedTokens()
    keys = {Identity("d1"): KEY}
    link = amqp_link("Amqp", CLOUD)
    credentials = SenderCredentials(link.config, clock, lambda: keys.get, presented)
    keyed = credentials(Identity("d1"))
    assert isinstance(keyed, SasCredentials)
    assert keyed.hub_hostname == "myhub.azure-devices.net"
    assert credentials(Identity("d2")) is None
    presented.record(Identity("d2"), "SharedAccessSignature sr=x&sig=y&se=1", clock.time() + 3600)
    assert isinstance(credentials(Identity("d2")), PresentedCredentials)


async def test_the_hub_wires_the_amqp_link_with_twins_presence_and_sender_credentials(tmp_path: Path) -> None:
    from edgehub.config_file import default_config
    from edgehub.store.memory import MemoryStore

    settings = load_settings({"EdgeHubConnectionString": PARENT, "UpstreamProtocol": "AmqpWs",
                              "StorageFolder": str(tmp_path)})
    hub = Hub(settings, default_config(), MemoryStore(), clock=FakeClock())
    link = build_upstream(settings, hub)
    assert isinstance(link, AmqpUpstream)
    assert link.twins is not None
    assert hub.twins.upstream is link.twins
    assert hub.upstream_clients is link
    assert isinstance(link.sender_credentials, SenderCredentials)

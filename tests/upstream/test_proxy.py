"""Tests of edgehub.upstream.proxy: https_proxy URLs, no_proxy matching, the CONNECT request, its answer."""

from __future__ import annotations

import pytest

from edgehub.upstream.http1 import parse_response_head
from edgehub.upstream.proxy import (
    HttpsProxy,
    ProxyRefusedError,
    bypasses_proxy,
    no_proxy_from_environment,
    parse_proxy_url,
    proxy_from_environment,
)


@pytest.mark.parametrize(("url", "expected"), [
    ("http://proxy:3128", HttpsProxy("http", "proxy", 3128)),
    ("https://proxy.corp", HttpsProxy("https", "proxy.corp", 443)),
    ("proxy:8080", HttpsProxy("http", "proxy", 8080)),
    ("http://us%40r:p%3Ass@10.0.0.1:3128/", HttpsProxy("http", "10.0.0.1", 3128, "us@r", "p:ss")),
    ("HTTP://[::1]:3128", HttpsProxy("http", "::1", 3128)),
])
def test_proxy_urls_are_parsed(url: str, expected: HttpsProxy) -> None:
    assert parse_proxy_url(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("socks5://proxy:1080", "must be http:// or https://"),
    ("http://proxy:99999", "port"),
    ("http://:3128", "names no host"),
    ("http://proxy:3128/path", "without a path"),
])
def test_a_malformed_proxy_url_is_refused_with_the_variable_named(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_proxy_url(url, "HTTPS_PROXY")
    assert str(refused.value).startswith("HTTPS_PROXY: ")


def test_the_display_masks_the_password_and_the_repr_hides_it() -> None:
    proxy = HttpsProxy("http", "proxy", 3128, "user", "secret")
    assert proxy.display == "http://user:***@proxy:3128"
    assert "secret" not in repr(proxy)
    assert HttpsProxy("https", "proxy", 443).display == "https://proxy:443"


def test_lowercase_https_proxy_wins_and_empty_values_count_as_unset() -> None:
    assert proxy_from_environment({}) is None
    assert proxy_from_environment({"https_proxy": " ", "HTTPS_PROXY": ""}) is None
    both = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}
    assert proxy_from_environment(both) == HttpsProxy("http", "lower", 1)
    assert proxy_from_environment({"HTTPS_PROXY": "http://upper:2"}) == HttpsProxy(
        "http", "upper", 2, variable="HTTPS_PROXY")
    assert no_proxy_from_environment({"NO_PROXY": "a", "no_proxy": "b"}) == "b"


@pytest.mark.parametrize(("no_proxy", "host", "port", "bypassed"), [
    ("*", "anything", 443, True),
    ("parent.local", "parent.local", 443, True),
    ("parent.local", "PARENT.local.", 443, True),
    ("local", "parent.local", 443, True),  # a domain suffix
    (".local", "parent.local", 443, True),
    (".local", "local", 443, True),
    ("*.local", "parent.local", 443, True),
    ("arent.local", "parent.local", 443, False),  # whole labels only
    ("other, parent.local:8443", "parent.local", 8443, True),
    ("parent.local:8443", "parent.local", 443, False),
    ("10.0.0.0/8", "10.1.2.3", 443, True),
    ("10.0.0.0/8", "192.168.1.1", 443, False),
    ("127.0.0.1", "127.0.0.1", 443, True),
    ("[::1]:443", "::1", 443, True),
    ("", "parent", 443, False),
    (" , ", "parent", 443, False),
])
def test_no_proxy_matches_hosts_domain_suffixes_addresses_and_star(
    no_proxy: str, host: str, port: int, bypassed: bool
) -> None:
    assert bypasses_proxy(no_proxy, host, port) is bypassed


def test_the_connect_request_names_the_target_and_carries_basic_credentials() -> None:
    assert HttpsProxy("http", "p", 1).connect_request("parent", 443) == (
        b"CONNECT parent:443 HTTP/1.1\r\nHost: parent:443\r\n\r\n")
    request = HttpsProxy("http", "p", 1, "Aladdin", "open sesame").connect_request("::1", 8443)
    assert request.startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n" in request  # RFC 7617 §2


def test_any_2xx_opens_the_tunnel_and_anything_else_is_refused_with_the_status_line() -> None:
    proxy = HttpsProxy("http", "p", 3128, "u", "pw")
    for raw, refused in [(b"HTTP/1.0 200 Connection established\r\n\r\n", False),
                         (b"HTTP/1.1 403 Access violation\r\n\r\n", True)]:
        parsed = parse_response_head(raw)
        assert parsed is not None
        if refused:
            with pytest.raises(ProxyRefusedError, match=r"the proxy http://u:\*\*\*@p:3128 refused CONNECT "
                                                         r"parent:443: HTTP/1.1 403 Access violation"):
                proxy.check_connect(parsed[0], "parent", 443)
        else:
            proxy.check_connect(parsed[0], "parent", 443)

"""The HTTPS proxy of MqttWs/AmqpWs: ``https_proxy``/``no_proxy`` from the environment, the CONNECT request
and its answer (RFC 9110 §9.3.6).

Sans-I/O: strings and bytes in, a proxy value, request bytes or a refusal out; no sockets, no asyncio here.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

from edgehub.errors import EndpointUnavailable
from edgehub.upstream.http1 import ResponseHead

PROXY_VARIABLES: Final = ("https_proxy", "HTTPS_PROXY")
"""Lower case first, as curl and Go read them."""
NO_PROXY_VARIABLES: Final = ("no_proxy", "NO_PROXY")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class ProxyRefusedError(EndpointUnavailable):
    """The proxy answered CONNECT with something other than 2xx (403 not allowed, 407 credentials...)."""

    def __init__(self, proxy: HttpsProxy, target: str, status_line: str) -> None:
        self.status_line = status_line
        super().__init__(f"the proxy {proxy.display} refused CONNECT {target}: {status_line}")


@dataclass(frozen=True, slots=True)
class HttpsProxy:
    """An HTTP CONNECT proxy: ``http://`` (plain to the proxy) or ``https://`` (TLS to the proxy, then TLS
    to the parent inside the tunnel), with optional Basic credentials."""

    scheme: str
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    variable: str = "https_proxy"
    """Where it came from, for log lines."""

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def display(self) -> str:
        """The proxy URL for log lines, the password masked: ``http://user:***@proxy:3128``."""
        credentials = f"{self.username}:***@" if self.username or self.password else ""
        return f"{self.scheme}://{credentials}{_authority(self.host, self.port)}"

    def connect_request(self, host: str, port: int) -> bytes:
        """CONNECT host:port (RFC 9110 §9.3.6), with Proxy-Authorization Basic when credentials are set."""
        target = _authority(host, port)
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if self.username or self.password:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            lines.append(f"Proxy-Authorization: Basic {token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def check_connect(self, head: ResponseHead, host: str, port: int) -> None:
        """ProxyRefusedError unless the proxy opened the tunnel (any 2xx, RFC 9110 §15.3)."""
        if not 200 <= head.status < 300:
            raise ProxyRefusedError(self, _authority(host, port), head.status_line)


def parse_proxy_url(url: str, variable: str = "https_proxy") -> HttpsProxy:
    """``http://[user:pass@]host[:port]`` or ``https://...``; no scheme means http (as curl). ValueError
    for anything else."""
    text = url.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{variable}: the proxy URL must be http:// or https://, got {scheme}://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{variable}: the proxy port is not a number in 1-65535") from None
    if not parts.hostname:
        raise ValueError(f"{variable}: the proxy URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{variable}: a proxy URL is scheme://[user:password@]host[:port], without a path")
    return HttpsProxy(
        scheme, parts.hostname, port or _DEFAULT_PORTS[scheme],
        unquote(parts.username or ""), unquote(parts.password or ""), variable,
    )


def proxy_from_environment(environ: Mapping[str, str]) -> HttpsProxy | None:
    """The proxy ``https_proxy`` (else ``HTTPS_PROXY``) names; None when neither is set or both are empty."""
    for variable in PROXY_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            return parse_proxy_url(value, variable)
    return None


def no_proxy_from_environment(environ: Mapping[str, str]) -> str:
    for variable in NO_PROXY_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            return value
    return ""


def bypasses_proxy(no_proxy: str, host: str, port: int) -> bool:
    """Whether ``no_proxy`` (comma-separated) exempts host:port: ``*`` matches everything; a name matches
    itself and its subdomains (``example.com`` and ``.example.com`` both match ``a.example.com``); an IP
    address matches itself, a CIDR block its addresses; an entry with ``:port`` matches that port only."""
    name = host.lower().rstrip(".").strip("[]")
    address = _ip(name)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None and _ip_matches(entry, address):
            return True
        suffix = entry.lstrip("*").lstrip(".").rstrip(".")
        if suffix and (name == suffix or name.endswith("." + suffix)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8443
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host, int(port)
    return entry, None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _ip_matches(entry: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

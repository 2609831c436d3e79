"""EdgeHubConnectionString: parsing ``HostName=host[:port];DeviceId=…;ModuleId=…;SharedAccessKey=…``
and the host name rule it shares with the settings.

Values and checks only; the key never appears in repr or messages. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from edgehub.config_identities import identity_id_problem

_HOST_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def hostname_problem(text: str) -> str | None:
    """Why ``text`` is not a DNS name or an IP address, or None if it is one."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return None
    if not text or len(text) > 253:
        return "must be a host name of 1 to 253 characters"
    if not all(_HOST_LABEL.fullmatch(label) for label in text.removesuffix(".").split(".")):
        return "must be a host name (dot-separated letters, digits, - and _) or an IP address"
    return None


@dataclass(frozen=True, slots=True)
class ConnectionString:
    """A parsed ``EdgeHubConnectionString``; the key never appears in repr or messages."""

    hostname: str
    device_id: str
    shared_access_key: str = field(repr=False)
    module_id: str | None = None
    port: int | None = None
    gateway_hostname: str | None = None

    @property
    def key(self) -> bytes:
        """The decoded shared access key (HMAC-SHA256 key of the SAS signature)."""
        return base64.b64decode(self.shared_access_key, validate=True)

    @classmethod
    def parse(cls, text: str) -> ConnectionString:
        """Parse ``HostName=host[:port];DeviceId=…;ModuleId=…;SharedAccessKey=…`` (keys in any case).

        Raises ValueError naming every problem found (never the key's value).
        """
        parts, problems = _split_connection_string(text)
        missing = [name for name in ("HostName", "DeviceId", "SharedAccessKey") if name not in parts]
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        host, port = _split_host_port(parts["HostName"], problems) if "HostName" in parts else ("", None)
        for name in ("DeviceId", "ModuleId"):
            if name in parts and (problem := identity_id_problem(parts[name])) is not None:
                problems.append(f"{name} {problem} (got {parts[name]!r})")
        gateway = parts.get("GatewayHostName")
        if gateway is not None and (problem := hostname_problem(gateway)) is not None:
            problems.append(f"GatewayHostName {problem} (got {gateway!r})")
        if "SharedAccessKey" in parts and (problem := _key_problem(parts["SharedAccessKey"])) is not None:
            problems.append(f"SharedAccessKey {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(
            hostname=host,
            device_id=parts["DeviceId"],
            shared_access_key=parts["SharedAccessKey"],
            module_id=parts.get("ModuleId"),
            port=port,
            gateway_hostname=gateway,
        )


_CONNECTION_STRING_PARTS: Final = {
    name.lower(): name for name in ("HostName", "DeviceId", "ModuleId", "SharedAccessKey", "GatewayHostName")
}


def _split_connection_string(text: str) -> tuple[dict[str, str], list[str]]:
    parts: dict[str, str] = {}
    problems: list[str] = []
    for position, segment in enumerate(text.split(";"), start=1):
        if not segment.strip():
            continue
        raw_name, separator, value = segment.partition("=")
        name = _CONNECTION_STRING_PARTS.get(raw_name.strip().lower())
        if not separator:
            problems.append(f"part {position} is not Name=Value")
        elif name is None:
            problems.append(
                f"unknown part {raw_name.strip()!r} (known: {', '.join(_CONNECTION_STRING_PARTS.values())})"
            )
        elif name in parts:
            problems.append(f"{name} is given twice")
        else:
            parts[name] = value.strip()
    return parts, problems


def _split_host_port(text: str, problems: list[str]) -> tuple[str, int | None]:
    host, separator, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    port: int | None = None
    if separator:
        if port_text.isdecimal() and 1 <= int(port_text) <= 65535:
            port = int(port_text)
        else:
            problems.append(f"HostName port must be 1-65535 (got {port_text!r})")
    if (problem := hostname_problem(host)) is not None:
        problems.append(f"HostName {problem} (got {host!r})")
    return host, port


def _key_problem(text: str) -> str | None:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64"
    return None if key else "is empty"

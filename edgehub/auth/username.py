"""The IoT Hub MQTT CONNECT username (``{host}/{d}[/{m}]/?api-version=…``) and client id rules.

Pure string parsing; it neither authenticates (see registry) nor checks the host name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import unquote

from edgehub.errors import AuthError
from edgehub.message import Identity

_MAX_SHOWN = 80


class MqttUsername(NamedTuple):
    """A parsed username: the host the client addressed, who it claims to be, its query parameters."""

    host: str
    identity: Identity
    query: Mapping[str, str]

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")

    @property
    def client_type(self) -> str | None:
        """``DeviceClientType``: the SDK's user agent, e.g. ``azure-iot-device-python/2.12``."""
        return self.query.get("DeviceClientType")

    @property
    def model_id(self) -> str | None:
        """``model-id``: the IoT Plug and Play model the client announces."""
        return self.query.get("model-id")


def parse_mqtt_username(username: str) -> MqttUsername:
    """Parse the username forms edgeHub accepts, plus a missing api-version.

    ``{host}/{d}/?{query}``, ``{host}/{d}/{m}/?{query}``, the older ``{host}/{d}[/{m}]/{query}``
    whose last segment holds ``api-version=`` (no ``?``), and ``{host}/{d}[/{m}][/]`` with
    no query. The host and ids are taken verbatim (the Azure SDKs do not URL-encode
    them); query values are percent-decoded; for a repeated name the first value wins
    (as edgeHub's MqttUsernameParser). Raises AuthError when no device id can be found.
    """
    path, query_text = _split_query(username)
    segments = path.split("/")
    if len(segments) not in (2, 3) or not all(segments):
        raise AuthError(f"MQTT username '{_shown(username)}' is not {{host}}/{{device}}[/{{module}}]/?…")
    host, device_id, *module = segments
    identity = Identity(device_id, module[0] if module else None)
    return MqttUsername(host, identity, _parse_query(query_text))


def check_client_id(client_id: str, identity: Identity) -> None:
    """IoT Hub rule: the MQTT client id is ``{d}`` for a device, ``{d}/{m}`` for a module.

    Ids are case-sensitive, as in IoT Hub. Raises AuthError on a mismatch.
    """
    if client_id != identity.id:
        raise AuthError(
            f"MQTT client id '{_shown(client_id)}' does not match username identity {_shown(identity.id)}"
        )


def parse_mqtt_connect(username: str, client_id: str) -> MqttUsername:
    """Parse the username and check the client id against it, in one step for the MQTT head."""
    parsed = parse_mqtt_username(username)
    check_client_id(client_id, parsed.identity)
    return parsed


def _split_query(username: str) -> tuple[str, str]:
    # The query starts at the first "/?": a '?' inside an id is legal in IoT Hub, so
    # only a '?' that opens a segment starts the query (edgeHub does the same).
    path, sep, query = username.partition("/?")
    if sep:
        return path, query
    head, slash, last = username.rpartition("/")
    if slash and "api-version=" in last:
        return head, last  # older SDKs: {host}/{d}[/{m}]/api-version=…&DeviceClientType=…
    return username.removesuffix("/"), ""


def _parse_query(text: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for item in text.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        # Percent-decoding only: '+' stays '+', as in the Azure SDKs' own parsers.
        query.setdefault(unquote(name), unquote(value))
    return query


def _shown(text: str) -> str:
    shown = text[:_MAX_SHOWN].encode("unicode_escape").decode("ascii")
    return shown if len(text) <= _MAX_SHOWN else shown + "…"

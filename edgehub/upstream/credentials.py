"""The hub's identity upstream: MQTT client id, IoT Hub username, SAS token passwords and when to renew them.

Pure values and arithmetic over times passed in; it never reads a clock or sleeps, and reaches out
only through a signer it is given (WorkloadCredentials: the IoT Edge workload API).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import quote

from edgehub.auth.sas import SAS_PREFIX, make_sas_token, sas_resource
from edgehub.message import Identity

API_VERSION: Final = "2018-06-30"
"""The IoT Hub MQTT api-version in the username, as the Azure IoT SDKs send it."""

DEFAULT_TOKEN_TTL: Final = 3600.0
"""Lifetime of each SAS token (the Azure IoT SDKs' default is one hour)."""

RENEW_AT_FRACTION: Final = 0.8
"""Renew after this fraction of a token's lifetime (the Azure IoT C SDK's SAS_REFRESH_MULTIPLIER):
IoT Hub closes an MQTT connection whose token expired, and a token can only be replaced by
connecting again, so the link reconnects with a fresh token well before that."""


@dataclass(frozen=True, slots=True)
class SasToken:
    """One password: the token text and the times it was made and expires (Unix seconds)."""

    text: str = field(repr=False)
    issued_at: float
    expiry: int

    @property
    def renew_at(self) -> float:
        """When to reconnect with a fresh token (Unix seconds)."""
        return self.issued_at + (self.expiry - self.issued_at) * RENEW_AT_FRACTION


class Credentials(Protocol):
    """How one identity authenticates upstream: SasCredentials (a key), PresentedToken (the token a
    local client presented), or a signer of the IoT Edge workload API."""

    @property
    def identity(self) -> Identity: ...

    @property
    def client_id(self) -> str: ...

    @property
    def username(self) -> str: ...

    def token(self, now: float) -> SasToken:
        """A token valid from ``now``; raises AuthError when none can be had any more."""
        ...


@dataclass(frozen=True, slots=True)
class IotHubLogin:
    """An identity as IoT Hub names it over MQTT: client id, username and the ``sr`` of its tokens.

    ``hub_hostname`` is ``IotHubHostName`` (the connection string's HostName): it names the hub
    in the username and in the token's ``sr``, also when the link connects to a
    ``GatewayHostName`` parent, which checks the same identity.
    """

    hub_hostname: str
    identity: Identity

    @property
    def client_id(self) -> str:
        """``{d}`` or ``{d}/{m}`` (IoT Hub MQTT client identifier)."""
        return self.identity.id

    @property
    def username(self) -> str:
        """``{host}/{d}[/{m}]/?api-version=…`` (IoT Hub MQTT username)."""
        return f"{self.hub_hostname}/{self.identity.id}/?api-version={API_VERSION}"

    @property
    def resource(self) -> str:
        """The token's ``sr``, before URL-encoding: ``{host}/devices/{d}[/modules/{m}]``."""
        return sas_resource(self.hub_hostname, self.identity)


def _check_ttl(token_ttl: float) -> None:
    if token_ttl < 1:
        raise ValueError(f"SAS token lifetime must be >= 1 s, got {token_ttl}")


@dataclass(frozen=True, slots=True)
class SasCredentials(IotHubLogin):
    """Who an identity is upstream with its symmetric key (``EdgeHubConnectionString``, or a key
    of the local registry): each token is signed here."""

    shared_access_key: str = field(repr=False)
    token_ttl: float = DEFAULT_TOKEN_TTL

    def __post_init__(self) -> None:
        _check_ttl(self.token_ttl)

    def token(self, now: float) -> SasToken:
        """A token valid from ``now`` (Unix seconds) for ``token_ttl``."""
        expiry = int(now + self.token_ttl)
        return SasToken(make_sas_token(self.resource, self.shared_access_key, expiry), now, expiry)


Signer = Callable[[bytes], bytes]
"""HMAC-SHA256 of the given bytes with a key held elsewhere; raises AuthError when it cannot sign."""


@dataclass(frozen=True, slots=True)
class WorkloadCredentials(IotHubLogin):
    """The hub's identity upstream under the IoT Edge runtime: no key here, each token is signed by
    the workload API (``IOTEDGE_WORKLOADURI``) with the module's key, as edgeHub does it.

    ``sign`` does the signing (edgehub.workload's client in the hub); the token is the IoT Hub one,
    ``sig`` = the signature of ``{url-encoded sr}\n{expiry}``.
    """

    sign: Signer = field(repr=False)
    token_ttl: float = DEFAULT_TOKEN_TTL

    def __post_init__(self) -> None:
        _check_ttl(self.token_ttl)

    def token(self, now: float) -> SasToken:
        """A token valid from ``now`` for ``token_ttl``; AuthError when the workload API cannot sign."""
        expiry = int(now + self.token_ttl)
        encoded_resource = quote(self.resource, safe="")
        signature = base64.b64encode(self.sign(f"{encoded_resource}\n{expiry}".encode())).decode("ascii")
        text = f"{SAS_PREFIX} sr={encoded_resource}&sig={quote(signature, safe='')}&se={expiry}"
        return SasToken(text, now, expiry)

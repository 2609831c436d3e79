"""Who sent an HTTP request: the SAS token in ``Authorization`` checked against the registry.

Owns the mapping of a token to the identity its ``sr`` names and the 401 reasons; it reuses
edgehub.auth for parsing and signature checks, never re-implements them, and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

from edgehub.auth.registry import IdentityRegistry
from edgehub.auth.sas import parse_sas_token
from edgehub.errors import AuthError
from edgehub.message import Identity


def token_identity(token: str) -> Identity:
    """The identity a token's ``sr`` names (``{host}/devices/{d}[/modules/{m}]``); AuthError otherwise."""
    parts = parse_sas_token(token).resource.rstrip("/").split("/")
    if len(parts) == 3 and parts[1] == "devices" and parts[2]:
        return Identity(unquote(parts[2]))
    if len(parts) == 5 and parts[1] == "devices" and parts[3] == "modules" and parts[2] and parts[4]:
        return Identity(unquote(parts[2]), unquote(parts[4]))
    raise AuthError("token resource names no device or module")


class HttpAuthenticator:
    """``Authorization: SharedAccessSignature sr=…&sig=…&se=…`` → the identity it proves.

    The registry is read through a callable, so a config reload applies to the next request.
    """

    def __init__(self, registry: Callable[[], IdentityRegistry], now: Callable[[], float]) -> None:
        self._registry = registry
        self._now = now

    def authenticate(self, authorization: str | None) -> Identity:
        """Raises AuthError (a 401) for a missing, malformed, wrongly signed or expired token."""
        if not authorization:
            raise AuthError("no SAS token in the Authorization header")
        identity = token_identity(authorization)
        return self._registry().authenticate_sas(identity, authorization, self._now()).identity

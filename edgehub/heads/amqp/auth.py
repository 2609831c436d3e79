"""Who an AMQP client is: SASL PLAIN usernames, CBS put-token SAS tokens, TLS client certificates.

Reads the current identity registry through a callable (a config reload takes effect for the next
credential); no I/O, no framing. Failures raise AuthError with a reason fit for a log line that
never quotes a token.

- SASL PLAIN (edgeHub SaslIdentity): username ``{d}@sas.{hub}``, ``{d}/modules/{m}@sas.{hub}`` (or
  without ``sas.``; ``{d}/{m}@…`` accepted too), the SAS token as password;
- CBS put-token: the token's resource (``sr``) names the identity; the audience is not trusted;
- X.509 (``ClientCertAuthEnabled``): the certificate must match the identity a link names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import unquote

from edgehub.auth import sas
from edgehub.auth.registry import AuthResult, IdentityRegistry
from edgehub.errors import AuthError
from edgehub.message import Identity
from edgehub.metrics import CLIENT_CONNECT_FAILED

_PLAIN_USER: Final = re.compile(
    r"^(?P<device>[^/@]+)(?:/(?:modules/)?(?P<module>[^/@]+))?@(?:sas\.)?(?P<hub>[^@]+)$", re.IGNORECASE)
_MAX_SHOWN: Final = 80


def parse_plain_username(username: str) -> Identity:
    """The identity a SASL PLAIN username claims; AuthError when it has none of the IoT Hub forms."""
    match = _PLAIN_USER.match(username)
    if match is None:
        raise AuthError(f"SASL PLAIN username '{username[:_MAX_SHOWN]}' is not "
                        "{device}[/modules/{module}]@sas.{hub}")
    module = match.group("module")
    return Identity(unquote(match.group("device")), unquote(module) if module else None)


def token_identity(token: sas.SasToken) -> Identity:
    """The identity a token's resource (``{host}/devices/{d}[/modules/{m}]``) names."""
    parts = token.resource.rstrip("/").split("/")
    if len(parts) in (3, 5) and parts[1].casefold() == "devices" and all(parts[2:]):
        if len(parts) == 3:
            return Identity(parts[2])
        if parts[3].casefold() == "modules":
            return Identity(parts[2], parts[4])
    raise AuthError(f"token resource '{token.resource[:200]}' names no device or module")


class AmqpAuthenticator:
    """Checks AMQP credentials against the registry at ``now`` (Unix seconds)."""

    def __init__(
        self, registry: Callable[[], IdentityRegistry], *, client_cert_auth: bool = False,
        on_token: Callable[[Identity, str, float], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._registry = registry
        self._on_refused = on_refused
        """Told of every refused credential: the hub reads the device scope upstream again
        (rate-limited), where a new identity or a rotated key may be (as the MQTT head does)."""
        self.client_cert_auth = client_cert_auth
        self._on_token = on_token
        """Told of every SAS token accepted: (identity, token, expiry), for the per-identity upstream."""

    def plain(self, username: str, password: str, now: float) -> AuthResult:
        identity = parse_plain_username(username)
        return self._sas(identity, password, now)

    def put_token(self, token: str, now: float) -> AuthResult:
        identity = token_identity(sas.parse_sas_token(token))
        return self._sas(identity, token, now)

    def certificate(self, identity: Identity, chain: Sequence[bytes], now: float) -> AuthResult:
        if not self.client_cert_auth or not chain:
            raise AuthError("no client certificate (or ClientCertAuthEnabled is off)")
        return self._counted(identity, lambda registry: registry.authenticate_x509(identity, chain, now))

    def _sas(self, identity: Identity, token: str, now: float) -> AuthResult:
        result = self._counted(identity, lambda registry: registry.authenticate_sas(identity, token, now))
        if self._on_token is not None and result.expires_at:
            self._on_token(result.identity, token, result.expires_at)
        return result

    def _counted(self, identity: Identity, check: Callable[[IdentityRegistry], AuthResult]) -> AuthResult:
        registry = self._registry()
        try:
            return check(registry)
        except AuthError:
            # Only registered ids become label values (bounded metrics, as the MQTT head).
            label = identity.id if identity in registry else "unknown"
            CLIENT_CONNECT_FAILED.labels(label, "not_authenticated").inc()
            if self._on_refused is not None:
                self._on_refused()
            raise

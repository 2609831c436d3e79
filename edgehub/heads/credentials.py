"""Turns a head's CONNECT credentials into an identity using the current identity registry.

Shared by the heads; reads the registry through a callable so a config reload takes
effect for the next connection. No I/O, no protocol framing.
"""

from __future__ import annotations

from collections.abc import Callable

from edgehub.auth import authorize
from edgehub.auth.registry import AuthResult, IdentityRegistry
from edgehub.auth.username import parse_mqtt_connect
from edgehub.clock import Clock
from edgehub.errors import AuthError
from edgehub.heads.mqtt.policy import Authenticated, ConnectRequest
from edgehub.message import Identity
from edgehub.metrics import CLIENT_CONNECT_FAILED


class RegistryAuthenticator:
    """MQTT CONNECT → Identity: IoT Hub username and client id, then a SAS token in the
    password or, with ClientCertAuthEnabled, the TLS client certificate.

    A session learns how long its credential stays valid (token ``se``, certificate notAfter)
    and is closed then: a client goes on by reconnecting with a fresh token, as with IoT Hub.
    """

    def __init__(
        self, registry: Callable[[], IdentityRegistry], clock: Clock, *,
        client_cert_auth: bool = False, generic_topics: bool = False,
        on_token: Callable[[Identity, str, float], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._on_token = on_token
        """Told of every SAS token a client authenticated with: (identity, token, expiry)."""
        self._on_refused = on_refused
        """Told when a client's credentials were refused: the hub reads the device scope upstream
        again (rate-limited), where a new identity or a rotated key may be, so the client's next
        attempt can succeed."""
        self._registry = registry
        self._clock = clock
        self._client_cert_auth = client_cert_auth
        self._generic_topics = generic_topics

    def authenticate(self, request: ConnectRequest, now: float) -> AuthResult:
        """Check the credentials at ``now`` (Unix seconds); raises AuthError."""
        claimed = parse_mqtt_connect(request.username or "", request.client_id).identity
        registry = self._registry()
        if request.password:
            return registry.authenticate_sas(claimed, request.password.decode("utf-8", "replace"), now)
        if self._client_cert_auth and request.peer_certificates:
            return registry.authenticate_x509(claimed, request.peer_certificates, now)
        raise AuthError("no SAS token in the password and no client certificate")

    def __call__(self, request: ConnectRequest) -> Authenticated:
        now = self._clock.time()
        try:
            result = self.authenticate(request, now)
        except AuthError:
            # Only registered ids become label values: a label per client-chosen id would let
            # unauthenticated peers grow the metrics without bound (issue 15: bounded memory).
            known = Identity.parse(request.client_id) in self._registry()
            CLIENT_CONNECT_FAILED.labels(request.client_id if known else "unknown", "not_authenticated").inc()
            if self._on_refused is not None:
                self._on_refused()
            raise
        valid_for = None if result.expires_at is None else result.expires_at - now
        if self._on_token is not None and result.method == "sas" and request.password and result.expires_at:
            self._on_token(result.identity, request.password.decode("utf-8", "replace"), result.expires_at)
        return Authenticated(result.identity, valid_for)

    def may_publish(self, identity: Identity, topic: str) -> bool:
        return authorize.may_publish(identity, topic, generic_topics=self._generic_topics)

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        return authorize.may_subscribe(identity, topic_filter, generic_topics=self._generic_topics)

"""Who a generic-mode client is when it brings no credentials, and the rule that keeps such an
anonymous client off the IoT Hub topics.

Policy wrappers around the head's Authenticator and Authorizer; no I/O.
"""

from __future__ import annotations

from typing import Final

from edgehub.errors import AuthError
from edgehub.heads.mqtt.policy import Authenticated, Authenticator, Authorizer, ConnectRequest
from edgehub.message import Identity

ANONYMOUS_DEVICE: Final = "$anonymous"
"""The device id of anonymous identities (``$anonymous/{client id}``): ``$`` is not allowed
in IoT Hub device ids, so no registry identity can be mistaken for one."""


def is_anonymous(identity: Identity) -> bool:
    return identity.device_id == ANONYMOUS_DEVICE


class AnonymousAuthenticator:
    """``inner``'s verdict for clients with a password or certificate; a client with neither is
    anonymous (``mqttSettings__allowAnonymous``) or refused."""

    def __init__(self, inner: Authenticator, *, allow_anonymous: bool) -> None:
        self._inner = inner
        self._allow = allow_anonymous

    def __call__(self, request: ConnectRequest) -> Authenticated | Identity:
        if request.password is None and not request.peer_certificates:
            if not self._allow:
                raise AuthError("no credentials, and anonymous clients are not allowed "
                                "(mqttSettings__allowAnonymous)")
            return Authenticated(Identity(ANONYMOUS_DEVICE, request.client_id or None))
        return self._inner(request)


class NoAnonymousIotHub:
    """``inner``'s rules for IoT Hub topics, and none of them for an anonymous identity."""

    def __init__(self, inner: Authorizer) -> None:
        self._inner = inner

    def may_publish(self, identity: Identity, topic: str) -> bool:
        return not is_anonymous(identity) and self._inner.may_publish(identity, topic)

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        return not is_anonymous(identity) and self._inner.may_subscribe(identity, topic_filter)

"""Tests of edgehub.heads.credentials: credentials checked against the registry, and their lifetime."""

from __future__ import annotations

import base64

import pytest

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.errors import AuthError
from edgehub.heads.credentials import RegistryAuthenticator
from edgehub.heads.mqtt.policy import Authenticated, ConnectRequest
from edgehub.message import Identity
from edgehub.testing.clock import FakeClock

KEY = base64.b64encode(b"k" * 32).decode()
CHILD_HUB = Identity("child", "$edgeHub")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authenticator(clock: FakeClock) -> RegistryAuthenticator:
    registry = IdentityRegistry(
        [IdentitySpec("sensor1", primary_key=KEY), IdentitySpec("child", "$edgeHub", primary_key=KEY)],
        ["localhost"],
    )
    return RegistryAuthenticator(lambda: registry, clock)


def connect(identity: Identity, password: str | None) -> ConnectRequest:
    return ConnectRequest(
        identity.id, f"localhost/{identity.id}/?api-version=2021-04-12",
        password.encode() if password is not None else None,
    )


def token(identity: Identity, expiry: float) -> str:
    return make_sas_token(sas_resource("localhost", identity), KEY, int(expiry))


def test_a_sas_token_is_valid_until_its_expiry(
    authenticator: RegistryAuthenticator, clock: FakeClock,
) -> None:
    sensor = Identity("sensor1")
    proof = authenticator(connect(sensor, token(sensor, clock.time() + 600)))
    assert proof == Authenticated(sensor, 600.0)


async def test_the_lifetime_counts_from_the_connect(
    authenticator: RegistryAuthenticator, clock: FakeClock,
) -> None:
    expiry = clock.time() + 600
    await clock.advance(100)
    proof = authenticator(connect(CHILD_HUB, token(CHILD_HUB, expiry)))
    assert proof == Authenticated(CHILD_HUB, 500.0)


def test_expired_or_missing_credentials_are_refused(
    authenticator: RegistryAuthenticator, clock: FakeClock,
) -> None:
    sensor = Identity("sensor1")
    with pytest.raises(AuthError, match="expired"):
        authenticator(connect(sensor, token(sensor, clock.time() - 1)))
    with pytest.raises(AuthError, match="no SAS token"):
        authenticator(connect(sensor, None))


def test_the_authorizer_lets_a_child_hub_act_for_its_children(authenticator: RegistryAuthenticator) -> None:
    assert authenticator.may_publish(CHILD_HUB, "devices/leaf1/messages/events/")
    assert not authenticator.may_publish(Identity("sensor1"), "devices/leaf1/messages/events/")
    assert authenticator.may_subscribe(CHILD_HUB, "devices/+/messages/devicebound/#")


def test_refused_credentials_are_told_so_the_hub_can_read_the_scope_again(clock: FakeClock) -> None:
    registry = IdentityRegistry([IdentitySpec("sensor1", primary_key=KEY)], ["localhost"])
    refused: list[None] = []
    authenticator = RegistryAuthenticator(lambda: registry, clock, on_refused=lambda: refused.append(None))
    newcomer, sensor = Identity("newcomer"), Identity("sensor1")
    with pytest.raises(AuthError):
        authenticator(connect(newcomer, token(newcomer, clock.time() + 600)))
    authenticator(connect(sensor, token(sensor, clock.time() + 600)))
    assert len(refused) == 1

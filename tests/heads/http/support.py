"""Shared pieces of the HTTP head tests: a registry with SAS keys, tokens, a gated fake hub.

Test support only; every HTTP exchange in the tests goes through a real aiohttp client.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from typing import Any, Final

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.errors import StoreFullError
from edgehub.heads.http.auth import HttpAuthenticator
from edgehub.message import Identity, Message

KEY: Final = base64.b64encode(b"k" * 32).decode()
OTHER_KEY: Final = base64.b64encode(b"o" * 32).decode()
HOST: Final = "localhost"
DEVICE: Final = Identity("d1")
OTHER: Final = Identity("d2")
CALLER: Final = Identity("edge", "caller")
TARGET: Final = Identity("edge", "target")


def registry() -> IdentityRegistry:
    return IdentityRegistry(
        [IdentitySpec(i.device_id, i.module_id, primary_key=KEY) for i in (DEVICE, OTHER, CALLER, TARGET)],
        [HOST],
    )


def authenticator() -> HttpAuthenticator:
    built = registry()
    return HttpAuthenticator(lambda: built, time.time)


def token(identity: Identity, *, key: str = KEY, expiry: int | None = None) -> str:
    return make_sas_token(sas_resource(HOST, identity), key, expiry or int(time.time()) + 600)


class FakeHub:
    """HubPort that records ingests; ``gate`` holds them, ``full`` refuses with StoreFullError."""

    def __init__(self) -> None:
        self.ingested: list[Message] = []
        self.gate: asyncio.Event | None = None
        self.waiting = 0
        self.full = False

    async def ingest(self, messages: Sequence[Message]) -> None:
        self.waiting += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.full:
                raise StoreFullError("full")
            self.ingested.extend(messages)
        finally:
            self.waiting -= 1

    def attach(self, identity: Identity, link: Any) -> None:
        pass

    def detach(self, identity: Identity, link: Any) -> None:
        pass

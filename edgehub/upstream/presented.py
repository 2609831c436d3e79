"""The SAS tokens local clients presented, kept for their own connections upstream.

A module of its own because every hub records them (the heads call ``record`` on each
authentication) while the upstream link that uses them is loaded only when one is configured.
"""

from __future__ import annotations

from typing import Final

from edgehub.message import Identity

PRESENTED_TOKEN_MARGIN: Final = 60.0
"""A presented token this close to its expiry is not used any more."""


class PresentedTokens:
    """The SAS tokens local clients authenticated with, by identity, while they are valid.

    The second source of upstream credentials (after a key in the local registry): a client's
    own token serves for its own connection upstream until it expires, as long as the client
    keeps reconnecting with fresh ones.
    """

    def __init__(self) -> None:
        self._tokens: dict[Identity, tuple[str, float]] = {}

    def record(self, identity: Identity, token: str, expiry: float) -> None:
        known = self._tokens.get(identity)
        if known is None or expiry >= known[1]:
            self._tokens[identity] = (token, expiry)

    def valid(self, identity: Identity, now: float) -> tuple[str, float] | None:
        known = self._tokens.get(identity)
        if known is None or known[1] - PRESENTED_TOKEN_MARGIN <= now:
            return None
        return known

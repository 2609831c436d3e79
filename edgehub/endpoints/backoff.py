"""Exponential backoff with jitter for endpoint retries: 1 s doubling to a 60 s cap, reset on success.

Pure arithmetic over an injected random source; it never sleeps or reads a clock (the pump waits).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Final

DEFAULT_INITIAL: Final = 1.0
DEFAULT_CAP: Final = 60.0
"""edgeHub's retry strategy also caps at 60 s; unlike edgeHub, a reachability
signal cuts any wait short (see EndpointPump)."""


class Backoff:
    """Delays for consecutive failures: ``initial * factor**n`` capped at ``cap``, minus jitter.

    Jitter is subtracted, never added: a delay lies in ``(base * (1 - jitter), base]``,
    so the cap is a hard upper bound and pumps that failed together spread out.
    ``random`` returns a float in [0, 1); inject ``lambda: 0.0`` for exact delays.
    """

    def __init__(
        self,
        *,
        initial: float = DEFAULT_INITIAL,
        cap: float = DEFAULT_CAP,
        factor: float = 2.0,
        jitter: float = 0.5,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if initial <= 0:
            raise ValueError(f"initial backoff must be > 0 s, got {initial}")
        if cap < initial:
            raise ValueError(f"backoff cap ({cap} s) must be >= initial ({initial} s)")
        if factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {factor}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {jitter}")
        self._initial = initial
        self._cap = cap
        self._factor = factor
        self._jitter = jitter
        self._random = random
        self._base = initial
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last reset."""
        return self._failures

    def next_delay(self) -> float:
        """The wait after one more failure; advances the sequence."""
        base = self._base
        self._failures += 1
        self._base = min(self._cap, base * self._factor)
        return base * (1.0 - self._jitter * self._random())

    def reset(self) -> None:
        """Forget the failures (after a success): the next delay is ``initial`` again."""
        self._base = self._initial
        self._failures = 0

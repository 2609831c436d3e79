"""Tests of Backoff: doubling from 1 s to the 60 s cap, jitter bounds, reset, refused settings.

Pure arithmetic: no clock, no sleeping.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from edgehub.endpoints.backoff import Backoff


def test_delays_double_from_one_second_up_to_the_cap() -> None:
    backoff = Backoff(random=lambda: 0.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert backoff.failures == 10


def test_reset_after_success_starts_again_at_the_initial_delay() -> None:
    backoff = Backoff(random=lambda: 0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1


def test_jitter_only_shortens_a_delay_so_the_cap_holds() -> None:
    backoff = Backoff(jitter=0.5, random=lambda: 0.999)
    delays = [backoff.next_delay() for _ in range(12)]
    bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60]
    assert all(base * 0.5 < delay <= base for delay, base in zip(delays, bases, strict=True))
    assert max(delays) < 60


def test_same_random_source_gives_the_same_delays() -> None:
    first = Backoff(random=random.Random(7).random)
    second = Backoff(random=random.Random(7).random)
    assert [first.next_delay() for _ in range(8)] == [second.next_delay() for _ in range(8)]


def test_custom_initial_factor_and_cap() -> None:
    backoff = Backoff(initial=0.5, factor=3, cap=10, random=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.5, 4.5, 10, 10]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"initial": 0}, "initial backoff must be > 0"),
        ({"initial": 5, "cap": 1}, "cap"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"jitter": 1.0}, "jitter must be in"),
        ({"jitter": -0.1}, "jitter must be in"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Backoff(**options)

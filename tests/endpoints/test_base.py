"""Tests of the Endpoint protocol's helpers: SendResult and ReachableListeners.

No pump and no store here; those are tested in test_pump.py.
"""

from __future__ import annotations

import logging

import pytest

from edgehub.endpoints.base import ReachableListeners, SendResult


def test_send_result_defaults_to_no_rejection() -> None:
    assert SendResult(3) == SendResult(3, rejected=False)


def test_send_result_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="delivered must be >= 0"):
        SendResult(-1)


def test_listeners_are_called_on_every_notify_until_unsubscribed() -> None:
    listeners = ReachableListeners()
    calls: list[str] = []
    unsubscribe_a = listeners.subscribe(lambda: calls.append("a"))
    listeners.subscribe(lambda: calls.append("b"))
    listeners.notify()
    unsubscribe_a()
    unsubscribe_a()  # twice is harmless
    listeners.notify()
    assert calls == ["a", "b", "b"]
    assert len(listeners) == 1


def test_a_failing_listener_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    listeners = ReachableListeners()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    listeners.subscribe(broken)
    listeners.subscribe(lambda: calls.append("ok"))
    with caplog.at_level(logging.ERROR, logger="edgehub.endpoints.base"):
        listeners.notify()
    assert calls == ["ok"]
    assert "reachable listener" in caplog.text


def test_a_listener_may_unsubscribe_while_being_notified() -> None:
    listeners = ReachableListeners()
    calls: list[str] = []

    def once() -> None:
        calls.append("once")
        unsubscribe()

    unsubscribe = listeners.subscribe(once)
    listeners.notify()
    listeners.notify()
    assert calls == ["once"]

"""Tests of edgehub.metrics_core: counters, gauges and summaries with labels, and a text exposition
that Prometheus' own parser reads back (prometheus-client is a test dependency only)."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgehub.metrics_core import CONTENT_TYPE, SUMMARY_WINDOW, Counter, Gauge, Registry, Summary, exposition

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def parsed(registry: Registry, common: dict[str, str] | None = None) -> dict[SampleKey, float]:
    text = exposition(registry.collect(), common or {}).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counter_is_exposed_as_total_with_its_labels() -> None:
    registry = Registry()
    sent = Counter("edgehub_messages_sent", "sent", ["from", "to"], registry=registry)
    sent.labels("dev1", "upstream").inc(3)
    sent.labels(**{"from": "dev1", "to": "upstream"}).inc()

    assert parsed(registry) == {("edgehub_messages_sent_total", (("from", "dev1"), ("to", "upstream"))): 4.0}
    assert registry.get_sample_value("edgehub_messages_sent_total", {"from": "dev1", "to": "upstream"}) == 4.0
    assert registry.get_sample_value("edgehub_messages_sent_total", {"from": "x", "to": "upstream"}) is None


def test_help_and_type_lines_name_the_counter_as_prometheus_does() -> None:
    registry = Registry()
    Counter("edgehub_offline_count", "Total times\noffline", registry=registry)

    text = exposition(registry.collect(), {}).decode()

    assert text == ("# HELP edgehub_offline_count_total Total times\\noffline\n"
                    "# TYPE edgehub_offline_count_total counter\n"
                    "edgehub_offline_count_total 0.0\n")


def test_gauge_goes_up_down_and_is_set() -> None:
    registry = Registry()
    clients = Gauge("edgehub_connected_clients", "clients", registry=registry)
    clients.inc()
    clients.inc()
    clients.dec()
    queue = Gauge("edgehub_queue_length", "queue", ["endpoint"], registry=registry)
    queue.labels("$upstream").set(7)

    assert registry.get_sample_value("edgehub_connected_clients") == 1.0
    assert clients._value.get() == 1.0
    assert queue.labels("$upstream")._value.get() == 7.0


def test_common_labels_join_every_sample_and_values_are_escaped() -> None:
    registry = Registry()
    Counter("edgehub_gettwin", "twins", ["id"], registry=registry).labels('a"b\\c').inc()

    samples = parsed(registry, {"iothub": "hub.example", "edge_device": "gw"})

    assert samples == {("edgehub_gettwin_total", (("edge_device", "gw"), ("id", 'a"b\\c'),
                                                  ("iothub", "hub.example"))): 1.0}


def test_summary_reports_quantiles_sum_and_count_over_its_window() -> None:
    registry = Registry()
    durations = Summary("edgehub_direct_method_duration_seconds", "d", ["to"], registry=registry)
    child = durations.labels("m")
    child.observe_all([float(n) for n in range(1, 101)])

    samples = parsed(registry)

    assert samples[("edgehub_direct_method_duration_seconds_count", (("to", "m"),))] == 100
    assert samples[("edgehub_direct_method_duration_seconds_sum", (("to", "m"),))] == 5050
    assert samples[("edgehub_direct_method_duration_seconds", (("quantile", "0.5"), ("to", "m")))] == 51
    assert samples[("edgehub_direct_method_duration_seconds", (("quantile", "0.99"), ("to", "m")))] == 100


def test_summary_without_observations_reports_nan_quantiles() -> None:
    registry = Registry()
    Summary("edgehub_ingest_duration_seconds", "i", registry=registry)

    samples = parsed(registry)

    assert math.isnan(samples[("edgehub_ingest_duration_seconds", (("quantile", "0.5"),))])
    assert samples[("edgehub_ingest_duration_seconds_count", ())] == 0


def test_summary_window_keeps_only_the_latest_observations() -> None:
    summary = Summary("s", "s")
    for value in range(SUMMARY_WINDOW + 10):
        summary.observe(float(value))

    count, _, window = summary.labels().snapshot()

    assert count == SUMMARY_WINDOW + 10
    assert window[0] == 10.0
    assert len(window) == SUMMARY_WINDOW


def test_wrong_number_of_labels_is_refused() -> None:
    counter = Counter("c", "c", ["a", "b"])

    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("only one")


def test_a_counter_never_goes_down() -> None:
    with pytest.raises(ValueError, match="only goes up"):
        Counter("c", "c").inc(-1)


def test_content_type_is_the_text_format_0_0_4() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"

"""edgehub.metrics: the per-batch recorders count each sender and output once, whichever mapping
objects carry their properties."""

from __future__ import annotations

from types import MappingProxyType

from edgehub.message import Message, SystemProperty
from edgehub.metrics import INNER, SentRecorder, record_received


def _sender(device: str, module: str, output: str) -> MappingProxyType[str, str]:
    return MappingProxyType({
        SystemProperty.CONNECTION_DEVICE_ID: device, SystemProperty.CONNECTION_MODULE_ID: module,
        SystemProperty.OUTPUT_NAME: output,
    })


def _value(name: str, **labels: str) -> float:
    return INNER.get_sample_value(name, labels) or 0.0


def test_received_counts_one_series_per_sender_and_output_across_distinct_equal_mappings() -> None:
    a1, a2 = _sender("dev", "metrics-a", "out"), _sender("dev", "metrics-a", "out")
    b = _sender("dev", "metrics-b", "o2")
    before_a = _value("edgehub_messages_received_total", id="dev/metrics-a", route_output="out")
    before_b = _value("edgehub_messages_received_total", id="dev/metrics-b", route_output="o2")
    size_before = _value("edgehub_message_size_bytes_sum", id="dev/metrics-a")
    record_received([Message(b"x" * 3, system_properties=a1), Message(b"y" * 5, system_properties=b),
                     Message(b"z" * 7, system_properties=a2), Message(b"w", system_properties=a1)])
    assert _value("edgehub_messages_received_total", id="dev/metrics-a", route_output="out") - before_a == 3
    assert _value("edgehub_messages_received_total", id="dev/metrics-b", route_output="o2") - before_b == 1
    assert _value("edgehub_message_size_bytes_sum", id="dev/metrics-a") - size_before == 11


def test_sent_counts_each_sender_once_and_observes_each_message_s_wait() -> None:
    recorder = SentRecorder("/modules/sink/inputs/in")
    a1, a2 = _sender("dev", "metrics-c", "out"), _sender("dev", "metrics-c", "out")
    labels = {"from": "dev/metrics-c", "to": "sink", "from_route_output": "out", "to_route_input": "in",
              "priority": "0"}
    before = _value("edgehub_messages_sent_total", **labels)
    waits_before = _value("edgehub_message_process_duration_seconds_sum", **{
        "from": "dev/metrics-c", "to": "sink", "priority": "0"})
    recorder.record(0, [Message(b"", system_properties=a1, enqueued_ms=1_000),
                        Message(b"", system_properties=a2, enqueued_ms=3_000)], 0.01, 5_000)
    assert _value("edgehub_messages_sent_total", **labels) - before == 2
    assert _value("edgehub_message_process_duration_seconds_sum", **{
        "from": "dev/metrics-c", "to": "sink", "priority": "0"}) - waits_before == 6.0

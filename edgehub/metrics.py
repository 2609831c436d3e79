"""Prometheus metrics of the hub with edgeHub's names and labels (Azure/iotedge doc/BuiltInMetrics.md).

Owns the definitions, the common labels ``iothub``, ``edge_device``, ``instance_number`` and the
text exposition; it imports no hub part and does no I/O (the listeners serve ``exposition()``).

Every metric is defined without the common labels and gets them at scrape time, so they are
bound once (``set_common_labels`` at hub start) and no hot path passes them. Durations and
sizes are summaries, as in edgeHub: ``_count``, ``_sum`` and the quantiles 0.5, 0.9, 0.95,
0.99, 0.999 and 0.9999 over the last 512 observations of each label set.
Counting is aggregated per batch (one ``inc`` per distinct label set of a batch), and callers
cache the ``labels()`` children they use per message. The metric types and the text format are
edgehub.metrics_core's (no prometheus-client in the hub).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Final

from edgehub.message import Message, SystemProperty
from edgehub.metrics_core import (
    CONTENT_TYPE,
    Counter,
    CounterChild,
    Gauge,
    Registry,
    Summary,
    SummaryChild,
)
from edgehub.metrics_core import exposition as _exposition

COMMON_LABELS: Final = ("iothub", "edge_device", "instance_number")
UPSTREAM_TARGET: Final = "upstream"
"""``to`` of messages sent to ``$upstream``, as edgeHub labels them."""



def random_guid() -> str:
    """A random (version 4) UUID in its 8-4-4-4-12 form (RFC 9562 §5.4), without the uuid module
    (it loads platform and _uuid: 0.2 MiB a low-memory hub would keep)."""
    octets = bytearray(os.urandom(16))
    octets[6] = octets[6] & 0x0F | 0x40  # version 4
    octets[8] = octets[8] & 0x3F | 0x80  # variant 10xx
    text = octets.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_common: dict[str, str] = {"iothub": "", "edge_device": "", "instance_number": random_guid()}


def set_common_labels(iothub: str, edge_device: str, instance_number: str | None = None) -> None:
    """Bind the labels every metric carries. ``instance_number`` is a fresh GUID per run
    (edgeHub: "on restart, all metrics will be reset; this Guid makes it easier to reconcile")."""
    _common["iothub"] = iothub
    _common["edge_device"] = edge_device
    if instance_number is not None:
        _common["instance_number"] = instance_number


def common_labels() -> dict[str, str]:
    return dict(_common)


INNER: Final = Registry()
"""The metrics as defined (no common labels): what tests read with ``sample_value``; /metrics
shows them with the common labels added."""


def exposition() -> tuple[bytes, str]:
    """The body and content type of a /metrics answer (Prometheus text format 0.0.4)."""
    return _exposition(INNER.collect(), dict(_common)), CONTENT_TYPE


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one sample (without the common labels), 0 when absent."""
    return INNER.get_sample_value(name, labels or {}) or 0.0


# --- messages -------------------------------------------------------------------------------------

MESSAGES_RECEIVED: Final = Counter(
    "edgehub_messages_received", "Total number of messages received from clients (after the durable write)",
    ["id", "route_output"], registry=INNER,
)
MESSAGES_SENT: Final = Counter(
    "edgehub_messages_sent", "Total number of messages sent to clients or upstream (confirmed)",
    ["from", "to", "from_route_output", "to_route_input", "priority"], registry=INNER,
)
MESSAGES_DROPPED: Final = Counter(
    "edgehub_messages_dropped",
    "Total number of messages removed because of reason (no_route, ttl_expiry, rejected, "
    "no_subscription, too_large_for_client)",
    ["reason", "from", "from_route_output"], registry=INNER,
)
MESSAGES_UNACK: Final = Counter(
    "edgehub_messages_unack", "Total number of messages not acknowledged to their client "
    "(storage_failure, store_full)",
    ["reason", "from", "from_route_output"], registry=INNER,
)
QUEUE_LENGTH: Final = Gauge(
    "edgehub_queue_length", "Current length of edgeHub's queue for a given priority",
    ["endpoint", "priority"], registry=INNER,
)
MESSAGE_SIZE: Final = Summary(
    "edgehub_message_size_bytes", "Message size from clients", ["id"], registry=INNER,
)
MESSAGE_PROCESS_DURATION: Final = Summary(
    "edgehub_message_process_duration_seconds",
    "Time taken to process a message from the queue (enqueued until its destination confirmed it)",
    ["from", "to", "priority"], registry=INNER,
)
MESSAGE_SEND_DURATION: Final = Summary(
    "edgehub_message_send_duration_seconds", "Time taken to send a message (one batch until confirmed)",
    ["from", "to", "from_route_output", "to_route_input"], registry=INNER,
)
INGEST_DURATION: Final = Summary(
    "edgehub_ingest_duration_seconds", "Routing and durable write of one ingested batch (not in edgeHub)",
    registry=INNER,
)

# --- clients and connectivity ---------------------------------------------------------------------

CONNECTED_CLIENTS: Final = Gauge(
    "edgehub_connected_clients", "Current number of connected clients to edge hub", registry=INNER,
)
CLIENT_CONNECT_SUCCESS: Final = Counter(
    "edgehub_client_connect_success",
    "Total number of times individual client successfully connect to edgeHub", ["id"], registry=INNER,
)
CLIENT_CONNECT_FAILED: Final = Counter(
    "edgehub_client_connect_failed", "Total number of times individual client failed to connect to edgeHub",
    ["id", "reason"], registry=INNER,
)
CLIENT_DISCONNECT: Final = Counter(
    "edgehub_client_disconnect", "Total number of times individual client disconnected from edgeHub",
    ["id"], registry=INNER,
)
OFFLINE_COUNT: Final = Counter(
    "edgehub_offline_count", "Total number of times edgeHub went offline (lost its upstream)",
    ["id"], registry=INNER,
)
OFFLINE_DURATION: Final = Summary(
    "edgehub_offline_duration_seconds", "Time edge hub was offline", ["id"], registry=INNER,
)
OPERATION_RETRY: Final = Counter(
    "edgehub_operation_retry", "Total number of times edgeHub operations were retried",
    ["id", "operation"], registry=INNER,
)

# --- twins and direct methods (updated by the twin and method core) ------------------------------

GET_TWIN: Final = Counter(
    "edgehub_gettwin", "Total number of GetTwin calls", ["source", "id"], registry=INNER,
)
GET_TWIN_DURATION: Final = Summary(
    "edgehub_gettwin_duration_seconds", "Time taken for get twin operations", ["source", "id"],
    registry=INNER,
)
REPORTED_PROPERTIES: Final = Counter(
    "edgehub_reported_properties", "Total reported property updates calls", ["target", "id"],
    registry=INNER,
)
REPORTED_PROPERTIES_DURATION: Final = Summary(
    "edgehub_reported_properties_update_duration_seconds", "Time taken to update reported properties",
    ["target", "id"], registry=INNER,
)
DIRECT_METHODS: Final = Counter(
    "edgehub_direct_methods", "Total number of direct messages sent", ["from", "to"], registry=INNER,
)
DIRECT_METHOD_DURATION: Final = Summary(
    "edgehub_direct_method_duration_seconds", "Time taken to resolve a direct method call",
    ["from", "to"], registry=INNER,
)

# --- ours -----------------------------------------------------------------------------------------

STORE_SIZE: Final = Gauge(
    "edgehub_store_size_bytes", "Bytes counted against storeLimits.maxSizeBytes (not in edgeHub)",
    registry=INNER,
)


# --- batch helpers for the hot paths --------------------------------------------------------------

_DEVICE: Final = SystemProperty.CONNECTION_DEVICE_ID
_MODULE: Final = SystemProperty.CONNECTION_MODULE_ID
_OUTPUT: Final = SystemProperty.OUTPUT_NAME

_received_children: dict[tuple[str, str], tuple[CounterChild, SummaryChild]] = {}


def sender_of(message: Message) -> tuple[str, str]:
    """(``from``/``id``, ``route_output``) of a message: its sender's id and output name."""
    system = message.system_properties
    device = system.get(_DEVICE, "")
    module = system.get(_MODULE)
    return (f"{device}/{module}" if module else device), system.get(_OUTPUT, "")


def _by_system_properties(
    messages: Sequence[Message], now_ms: int | None = None,
) -> dict[int, tuple[Mapping[str, str], list[float]]]:
    """The messages grouped by their system properties mapping (a head shares one among the messages
    of one topic, so a batch has few): per group, each message's seconds since it was enqueued at
    ``now_ms``, or its body size when ``now_ms`` is None. Keyed by identity, not contents: groups
    with equal contents are merged by the caller."""
    groups: dict[int, tuple[Mapping[str, str], list[float]]] = {}
    for message in messages:
        system = message.system_properties
        value = len(message.body) if now_ms is None else (now_ms - message.enqueued_ms) / 1000
        group = groups.get(id(system))
        if group is None:
            groups[id(system)] = (system, [value])
        else:
            group[1].append(value)
    return groups


def record_received(messages: Sequence[Message]) -> None:
    """``messages_received_total`` and ``message_size_bytes`` for one durably ingested batch:
    one increment per sender and output of the batch."""
    sizes: dict[tuple[str | None, str | None, str | None], list[float]] = {}
    for system, group in _by_system_properties(messages).values():
        key = (system.get(_DEVICE), system.get(_MODULE), system.get(_OUTPUT))
        known = sizes.get(key)
        if known is None:
            sizes[key] = group
        else:
            known.extend(group)
    for (device, module, output), group in sizes.items():
        identity = f"{device or ''}/{module}" if module else (device or "")
        children = _received_children.get((identity, output or ""))
        if children is None:
            children = (MESSAGES_RECEIVED.labels(identity, output or ""), MESSAGE_SIZE.labels(identity))
            _received_children[(identity, output or "")] = children
        children[0].inc(len(group))
        children[1].observe_all(group)


def record_unacked(reason: str, messages: Sequence[Message]) -> None:
    """``messages_unack_total{reason}`` for a batch no client ack was sent for."""
    counts: dict[tuple[str, str], int] = {}
    for message in messages:
        key = sender_of(message)
        counts[key] = counts.get(key, 0) + 1
    for (sender, output), count in counts.items():
        MESSAGES_UNACK.labels(reason, sender, output).inc(count)


def endpoint_target(endpoint: str) -> tuple[str, str]:
    """(``to``, ``to_route_input``) of an endpoint queue name, as edgeHub labels them: the
    module's id and its input, the device for devicebound, ``upstream`` for ``$upstream``."""
    parts = endpoint.split("/")
    if len(parts) == 5 and parts[1] == "modules" and parts[3] == "inputs":
        device = _common["edge_device"]
        return (f"{device}/{parts[2]}" if device else parts[2]), parts[4]
    if len(parts) == 5 and parts[1] == "devices":
        return parts[2], ""
    if endpoint == "$upstream":
        return UPSTREAM_TARGET, ""
    return endpoint, ""


class SentRecorder:
    """``messages_sent_total``, ``message_send_duration_seconds`` and
    ``message_process_duration_seconds`` of one endpoint, with its children cached."""

    def __init__(self, endpoint: str) -> None:
        self._to, self._to_input = endpoint_target(endpoint)
        self._children: dict[tuple[str, str, int], tuple[
            CounterChild, SummaryChild, SummaryChild]] = {}

    def record(self, priority: int, messages: Sequence[Message], send_seconds: float, now_ms: int) -> None:
        """``messages`` were confirmed by the endpoint after ``send_seconds``; one increment per
        sender and output of the batch, and each message's time since it was enqueued."""
        waits: dict[tuple[str, str | None, str], list[float]] = {}
        for system, group in _by_system_properties(messages, now_ms).values():
            key = (system.get(_DEVICE, ""), system.get(_MODULE), system.get(_OUTPUT, ""))
            known = waits.get(key)
            if known is None:
                waits[key] = group
            else:
                known.extend(group)
        for (device, module, output), group in waits.items():
            sender = f"{device}/{module}" if module else device
            children = self._children.get((sender, output, priority))
            if children is None:
                children = (
                    MESSAGES_SENT.labels(sender, self._to, output, self._to_input, str(priority)),
                    MESSAGE_SEND_DURATION.labels(sender, self._to, output, self._to_input),
                    MESSAGE_PROCESS_DURATION.labels(sender, self._to, str(priority)),
                )
                self._children[(sender, output, priority)] = children
            children[0].inc(len(group))
            children[1].observe(send_seconds)
            children[2].observe_all(group)

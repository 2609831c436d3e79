"""Prometheus metrics of the hub, named as DESIGN.md §4 (prefix ``edgehub_``).

Definitions only; the HTTP listener lives in the hub. Nothing here may import hub parts.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY: Final = CollectorRegistry(auto_describe=True)

MESSAGES_RECEIVED: Final = Counter(
    "edgehub_messages_received", "Messages accepted from clients (after the durable write).",
    ["protocol"], registry=REGISTRY,
)
MESSAGES_SENT: Final = Counter(
    "edgehub_messages_sent", "Messages an endpoint confirmed.", ["endpoint"], registry=REGISTRY,
)
MESSAGES_DROPPED: Final = Counter(
    "edgehub_messages_dropped", "Messages dropped before delivery (ttl, rejected, store_full, no_route).",
    ["reason", "endpoint"], registry=REGISTRY,
)
QUEUE_LENGTH: Final = Gauge(
    "edgehub_queue_length", "Messages waiting per endpoint queue.", ["endpoint", "priority"],
    registry=REGISTRY,
)
CONNECTED_CLIENTS: Final = Gauge(
    "edgehub_connected_clients", "Clients connected to a protocol head.", ["protocol"], registry=REGISTRY,
)
OFFLINE_COUNT: Final = Counter(
    "edgehub_offline_count", "Times an endpoint or the upstream went offline.", ["endpoint"],
    registry=REGISTRY,
)
OFFLINE_DURATION: Final = Histogram(
    "edgehub_offline_duration_seconds", "How long an endpoint or the upstream stayed offline.",
    ["endpoint"], registry=REGISTRY,
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
MESSAGE_PROCESS_DURATION: Final = Histogram(
    "edgehub_message_process_duration_seconds", "Ingest to durable write, per batch.", registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
MESSAGE_SEND_DURATION: Final = Histogram(
    "edgehub_message_send_duration_seconds", "Endpoint send of one batch until confirmed.",
    ["endpoint"], registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
)
STORE_SIZE: Final = Gauge(
    "edgehub_store_size_bytes", "Bytes counted against storeLimits.maxSizeBytes.", registry=REGISTRY,
)

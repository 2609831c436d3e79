"""Counters, gauges and summaries with labels, a registry of them, and the Prometheus text
exposition format 0.0.4: what edgehub.metrics defines its metrics with.

Standard library only (prometheus-client and what it imports cost about 3 MiB of memory for
a handful of counters); no I/O, no hub part. Values are updated on the event loop thread; a
summary's window is copied under a lock, so a scrape from any thread is consistent.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
QUANTILES: Final = (0.5, 0.9, 0.95, 0.99, 0.999, 0.9999)
"""edgeHub's summary quantiles."""
SUMMARY_WINDOW: Final = 512
"""Observations per label set the quantiles are computed over."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric as exposed: ``# HELP``/``# TYPE`` and its samples."""

    name: str
    documentation: str
    type: str
    samples: Sequence[Sample]


class Collector(Protocol):
    def collect(self) -> Iterable[Family]: ...


class Registry:
    """The collectors a /metrics answer shows, in registration order."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[Family]:
        for collector in self._collectors:
            yield from collector.collect()

    def get_sample_value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The value of the sample ``name`` with exactly ``labels``, None when there is none."""
        wanted = dict(labels or {})
        for family in self.collect():
            for sample in family.samples:
                if sample.name == name and dict(sample.labels) == wanted:
                    return sample.value
        return None


class Value:
    """One number of a label set (``get()`` reads it)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def get(self) -> float:
        return self.value


class CounterChild:
    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = Value()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._value.value += amount


class GaugeChild:
    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = Value()

    def inc(self, amount: float = 1) -> None:
        self._value.value += amount

    def dec(self, amount: float = 1) -> None:
        self._value.value -= amount

    def set(self, value: float) -> None:
        self._value.value = float(value)


class SummaryChild:
    """Count, sum and a sliding window of the last SUMMARY_WINDOW observations."""

    __slots__ = ("_lock", "count", "sum", "window")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.count = 0
        self.sum = 0.0
        self.window: deque[float] = deque(maxlen=SUMMARY_WINDOW)

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.window.append(value)

    def observe_all(self, values: Sequence[float]) -> None:
        """Many observations at once (a batch): one call instead of one per message."""
        self.count += len(values)
        self.sum += sum(values)
        self.window.extend(values)

    def snapshot(self) -> tuple[int, float, list[float]]:
        with self._lock:
            return self.count, self.sum, list(self.window)


Child = TypeVar("Child", CounterChild, GaugeChild, SummaryChild)


class _Metric(Generic[Child]):
    """A metric with label names; ``labels(...)`` gives (and keeps) the child of a label set."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: Registry | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Child] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()
        if registry is not None:
            registry.register(self)

    def _new_child(self) -> Child:
        raise NotImplementedError

    def collect(self) -> list[Family]:
        raise NotImplementedError

    def labels(self, *values: object, **by_name: object) -> Child:
        key = tuple(str(by_name[n]) for n in self.labelnames) if by_name else tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    @property
    def _unlabelled(self) -> Child:
        return self._children[()]

    def _labelled(self) -> Iterator[tuple[dict[str, str], Child]]:
        for key, child in list(self._children.items()):
            yield dict(zip(self.labelnames, key, strict=True)), child


class Counter(_Metric[CounterChild]):
    """A counter; exposed as ``{name}_total`` (Prometheus' counter naming)."""

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        self._unlabelled.inc(amount)

    @property
    def _value(self) -> Value:
        return self._unlabelled._value

    def collect(self) -> list[Family]:
        total = self.name + "_total"
        samples = [Sample(total, labels, child._value.value) for labels, child in self._labelled()]
        return [Family(total, self.documentation, "counter", samples)]


class Gauge(_Metric[GaugeChild]):
    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def inc(self, amount: float = 1) -> None:
        self._unlabelled.inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._unlabelled.dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled.set(value)

    @property
    def _value(self) -> Value:
        return self._unlabelled._value

    def collect(self) -> list[Family]:
        samples = [Sample(self.name, labels, child._value.value) for labels, child in self._labelled()]
        return [Family(self.name, self.documentation, "gauge", samples)]


class Summary(_Metric[SummaryChild]):
    """A summary with quantiles over a sliding window, as edgeHub's (``_count``, ``_sum`` and
    the QUANTILES over the last SUMMARY_WINDOW observations of each label set)."""

    def _new_child(self) -> SummaryChild:
        return SummaryChild(self._lock)

    def observe(self, value: float) -> None:
        """For a summary without labels."""
        self._unlabelled.observe(value)

    def collect(self) -> list[Family]:
        samples: list[Sample] = []
        for labels, child in self._labelled():
            count, total, window = child.snapshot()
            for quantile, value in zip(QUANTILES, _quantiles(window), strict=True):
                samples.append(Sample(self.name, {**labels, "quantile": str(quantile)}, value))
            samples.append(Sample(self.name + "_sum", labels, total))
            samples.append(Sample(self.name + "_count", labels, count))
        return [Family(self.name, self.documentation, "summary", samples)]


def _quantiles(window: list[float]) -> Iterator[float]:
    if not window:
        # edgeHub reports NaN when nothing was observed lately.
        yield from (math.nan for _ in QUANTILES)
        return
    ordered = sorted(window)
    last = len(ordered) - 1
    for q in QUANTILES:
        yield ordered[min(last, int(q * len(ordered)))]


def exposition(families: Iterable[Family], common: Mapping[str, str]) -> bytes:
    """The text format 0.0.4 of ``families``, every sample carrying the ``common`` labels too."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.documentation)}\n")
        lines.append(f"# TYPE {family.name} {family.type}\n")
        for sample in family.samples:
            merged = sorted({**common, **sample.labels}.items())
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in merged)
            lines.append(f"{sample.name}{{{labels}}} {_number(sample.value)}\n" if labels
                         else f"{sample.name} {_number(sample.value)}\n")
    return "".join(lines).encode()


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))

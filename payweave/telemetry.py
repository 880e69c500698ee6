"""Temporal's own SDK metrics, served at the same ``/metrics`` as payweave's.

Every Temporal client of a payweave process (API, worker, CLI) is made on one :class:`Runtime` whose Core
metrics go into a :class:`MetricBuffer` instead of a second HTTP server of Temporal's
(``PrometheusConfig``). :class:`TemporalMetrics`, a ``prometheus_client`` collector in the default registry,
drains that buffer every second on a thread of its own and at every scrape, and keeps the running totals.
So a process has ONE scrape target: the API's ``GET /metrics``, the worker's ``PAYWEAVE_WORKER_METRICS_PORT``.

The series are named as Temporal's own Prometheus exporter names them with ``counters_total_suffix`` and
``durations_as_seconds`` on: ``temporal_workflow_completed_total``,
``temporal_workflow_task_schedule_to_start_latency_bucket`` (seconds), ``temporal_worker_task_slots_available``
and so on, labelled with Temporal's attributes (``namespace``, ``task_queue``, ``workflow_type``,
``activity_type``, ...). Histograms use :data:`BUCKETS`.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from temporalio.common import MetricAttributes
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

log = logging.getLogger("payweave.telemetry")

# Seconds. Temporal's latencies run from a millisecond (a workflow task) to an hour (a saga waiting for payment).
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600,
)  # fmt: skip
BUFFER_SIZE = 100_000  # updates between two drains; Core drops (and logs) what does not fit
DRAIN_INTERVAL_SECONDS = 1.0
LABELS_CACHE_SIZE = 10_000

Labels = tuple[tuple[str, str], ...]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _label_value(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@dataclass
class _Histogram:
    buckets: list[int]  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0
    count: int = 0


@dataclass
class _Family:
    kind: int
    documentation: str
    values: dict[Labels, float] = field(default_factory=dict)  # counters and gauges
    histograms: dict[Labels, _Histogram] = field(default_factory=dict)


class TemporalMetrics(Collector):
    """Running totals of the updates a :class:`MetricBuffer` hands out, as Prometheus families."""

    def __init__(self, buffer: MetricBuffer, buckets: tuple[float, ...] = BUCKETS) -> None:
        self._buffer = buffer
        self._bounds = buckets
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        # Core hands out the same attributes object for the same attribute set: convert each once. The object
        # is kept alongside, so its id cannot be reused by another one while cached.
        self._labels: dict[int, tuple[MetricAttributes, Labels]] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        """Drain every second from now on, on a daemon thread (the buffer must never fill up unread)."""
        threading.Thread(target=self._drain_forever, name="temporal-metrics", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _drain_forever(self) -> None:
        while not self._stop.wait(DRAIN_INTERVAL_SECONDS):
            try:
                self.drain()
            except Exception:  # a bad update must not end the draining for good
                log.exception("draining Temporal's metric buffer failed")

    def drain(self) -> None:
        with self._lock:
            for update in self._buffer.retrieve_updates():
                self._apply(update)

    def _labels_of(self, attributes: MetricAttributes) -> Labels:
        cached = self._labels.get(id(attributes))
        if cached is not None and cached[0] is attributes:
            return cached[1]
        labels = tuple(
            sorted((re.sub(r"[^A-Za-z0-9_]", "_", str(k)), _label_value(v)) for k, v in attributes.items())
        )
        if (
            len(self._labels) >= LABELS_CACHE_SIZE
        ):  # attribute sets made per call would otherwise pile up here
            self._labels.clear()
        self._labels[id(attributes)] = (attributes, labels)
        return labels

    def _apply(self, update: BufferedMetricUpdate) -> None:
        metric = update.metric
        family = self._families.get(metric.name)
        if family is None:
            family = self._families[metric.name] = _Family(metric.kind, metric.description or metric.name)
        labels = self._labels_of(update.attributes)
        value = float(update.value)
        if family.kind == BUFFERED_METRIC_KIND_COUNTER:  # a delta
            family.values[labels] = family.values.get(labels, 0.0) + value
        elif family.kind == BUFFERED_METRIC_KIND_GAUGE:  # the current value
            family.values[labels] = value
        else:  # one observation
            histogram = family.histograms.get(labels)
            if histogram is None:
                histogram = family.histograms[labels] = _Histogram([0] * (len(self._bounds) + 1))
            histogram.buckets[bisect.bisect_left(self._bounds, value)] += 1
            histogram.total += value
            histogram.count += 1

    def describe(self) -> list[Metric]:
        return []  # the names are only known once Core reports them; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            families = [self._family(name, family) for name, family in sorted(self._families.items())]
        yield from families

    def _family(self, name: str, family: _Family) -> Metric:
        if family.kind == BUFFERED_METRIC_KIND_COUNTER:
            name = name.removesuffix("_total")  # temporal_local_activity_total: one _total, not two
            out = Metric(name, family.documentation, "counter")
            for labels, value in family.values.items():
                out.add_sample(name + "_total", dict(labels), value)
        elif family.kind == BUFFERED_METRIC_KIND_GAUGE:
            out = Metric(name, family.documentation, "gauge")
            for labels, value in family.values.items():
                out.add_sample(name, dict(labels), value)
        else:
            out = Metric(name, family.documentation, "histogram")
            for labels, histogram in family.histograms.items():
                cumulative = 0
                for bound, count in zip((*self._bounds, float("inf")), histogram.buckets, strict=True):
                    cumulative += count
                    out.add_sample(name + "_bucket", {**dict(labels), "le": _le(bound)}, cumulative)
                out.add_sample(name + "_count", dict(labels), histogram.count)
                out.add_sample(name + "_sum", dict(labels), histogram.total)
        return out


@lru_cache(maxsize=1)
def temporal_runtime() -> Runtime:
    """The process's Temporal runtime (made once, on first use), its metrics registered with prometheus_client."""
    buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    collector = TemporalMetrics(buffer)
    REGISTRY.register(collector)
    collector.start()
    return runtime

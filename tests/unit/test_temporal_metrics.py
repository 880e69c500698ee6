"""payweave/telemetry.py: what Temporal's Core records into a MetricBuffer comes out of the collector as
Prometheus counters (deltas summed), gauges (last value) and histograms (cumulative buckets, count, sum).

A real Core runtime records the values (its metric meter is the one the SDK's own metrics go through); no
server is needed for that."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig

from payweave.telemetry import BUCKETS, TemporalMetrics


def test_counters_gauges_and_histograms_as_prometheus_families() -> None:
    buffer = MetricBuffer(10_000, MetricBufferDurationFormat.SECONDS)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    collector = TemporalMetrics(buffer)
    registry = CollectorRegistry()
    registry.register(collector)

    counter = meter.create_counter("temporal_test_request", "requests")
    counter.add(2, {"operation": "Start"})
    counter.add(3, {"operation": "Start"})
    counter.add(1, {"operation": "Signal", "eager": True})
    meter.create_counter("temporal_test_local_total", "ends in _total already").add(4)
    gauge = meter.create_gauge("temporal_test_slots", "slots")
    gauge.set(5, {"worker_type": "ActivityWorker"})
    gauge.set(9, {"worker_type": "ActivityWorker"})
    latency = meter.create_histogram_float("temporal_test_latency", "latency", "s")
    for seconds in (0.003, 0.02, 0.02, 7.0, 10_000.0):
        latency.record(seconds, {"task_queue": "q"})
    collector.drain()  # the first half is drained by hand, the rest at the scrape
    counter.add(10, {"operation": "Start"})

    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "service_name"))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples[("temporal_test_request_total", (("operation", "Start"),))] == 15
    assert samples[("temporal_test_request_total", (("eager", "true"), ("operation", "Signal")))] == 1
    assert samples[("temporal_test_local_total", ())] == 4
    assert samples[("temporal_test_slots", (("worker_type", "ActivityWorker"),))] == 9
    q = (("task_queue", "q"),)
    assert samples[("temporal_test_latency_count", q)] == 5
    assert abs(samples[("temporal_test_latency_sum", q)] - 10_007.043) < 1e-6
    bucket = {
        bound: samples[("temporal_test_latency_bucket", (("le", repr(float(bound))), *q))]
        for bound in BUCKETS
    }
    assert bucket[0.005] == 1 and bucket[0.01] == 1 and bucket[0.025] == 3 and bucket[5] == 3
    assert bucket[10] == 4 and bucket[3600] == 4
    assert samples[("temporal_test_latency_bucket", (("le", "+Inf"), *q))] == 5

"""OpenTelemetry metrics in the Prometheus text formats, for a worker's /metrics endpoint.

A pull `MetricReader` on the process's MeterProvider: each scrape collects the SDK's
current (cumulative) data and renders it with prometheus_client's encoders, OpenMetrics when
the scraper asks for it (Prometheus does), the classic text format otherwise.

Why not `opentelemetry-exporter-prometheus`: as of 0.66b2 it drops the exemplars the SDK
records, and a slow bucket should lead to its trace. This reader keeps them (OpenMetrics
only — the classic format has no exemplars). Names follow the OpenTelemetry → Prometheus
rules the collector's Prometheus exporter applies too (dots to underscores, unit suffix,
`_total` on counters), so the same series come out whichever path a deployment uses.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import Metric as Family
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

UNIT_SUFFIXES = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "", "": ""}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_CUMULATIVE = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}


def prometheus_name(name: str, unit: str) -> str:
    """`pressroom.report.duration` in seconds → `pressroom_report_duration_seconds`."""
    base = _INVALID.sub("_", name)
    suffix = UNIT_SUFFIXES.get(unit, _INVALID.sub("_", unit))
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def _label(key: str) -> str:
    return _INVALID.sub("_", key)


def _exemplar(point: HistogramDataPoint, upper: float, lower: float) -> Exemplar | None:
    """The newest exemplar whose value falls in (lower, upper], with its trace id."""
    best = None
    for exemplar in getattr(point, "exemplars", None) or ():
        in_bucket = exemplar.trace_id and lower < exemplar.value <= upper
        if in_bucket and (best is None or exemplar.time_unix_nano > best.time_unix_nano):
            best = exemplar
    if best is None:
        return None
    return Exemplar(
        {"trace_id": f"{best.trace_id:032x}", "span_id": f"{best.span_id:016x}"},
        best.value,
        best.time_unix_nano / 1e9,
    )


Labels = tuple[tuple[str, str], ...]
# A declared series: ((name, unit, description, bucket bounds or None for a counter), label sets).
Zeros = Sequence[tuple[tuple[str, str, str, tuple[float, ...] | None], Sequence[Labels]]]


def _families(data: MetricsData | None, zeros: Zeros = ()) -> Iterable[Family]:
    seen: dict[str, Family] = {}
    present: set[tuple[str, Labels]] = set()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                family = _family(metric, seen)
                if family is not None:
                    seen[family.name] = family
                for point in metric.data.data_points:
                    attrs = {_label(k): str(v) for k, v in (point.attributes or {}).items()}
                    present.add((metric.name, tuple(sorted(attrs.items()))))
    for (name, unit, doc, bounds), label_sets in zeros:
        for labels in label_sets:
            if (name, labels) not in present:
                _zero(name, unit, doc, bounds, dict(labels), seen)
    return seen.values()


def _zero(
    name: str,
    unit: str,
    doc: str,
    bounds: tuple[float, ...] | None,
    labels: dict[str, str],
    seen: dict[str, Family],
) -> None:
    """A series nothing was recorded for yet, at 0 (so its first event is a visible step)."""
    full = prometheus_name(name, unit)
    family: Any
    if bounds is None:
        full = full.removesuffix("_total")
        family = seen.get(full) or CounterMetricFamily(full, doc, labels=sorted(labels))
        family.add_metric([labels.get(k, "") for k in family._labelnames], 0.0)
    else:
        family = seen.get(full) or HistogramMetricFamily(full, doc, labels=sorted(labels))
        les = [str(floatToGoString(b)) for b in (*bounds, float("inf"))]  # type: ignore[no-untyped-call]
        family.add_metric(
            [labels.get(k, "") for k in family._labelnames], [(le, 0) for le in les], 0.0
        )
    seen[full] = family


def _family(metric: Metric, seen: dict[str, Family]) -> Family | None:
    name = prometheus_name(metric.name, metric.unit or "")
    points: list[Any] = list(metric.data.data_points)
    keys = sorted({_label(k) for p in points for k in (p.attributes or {})})

    def values(point: Any) -> list[str]:
        attrs = {_label(k): str(v) for k, v in (point.attributes or {}).items()}
        return [attrs.get(k, "") for k in keys]

    doc = metric.description or metric.name
    family: Any
    if isinstance(metric.data, Sum) and metric.data.is_monotonic:
        counter_name = name.removesuffix("_total")
        family = seen.get(counter_name) or CounterMetricFamily(counter_name, doc, labels=keys)
        for point in points:
            family.add_metric(values(point), point.value)
    elif isinstance(metric.data, Sum | Gauge):
        family = seen.get(name) or GaugeMetricFamily(name, doc, labels=keys)
        for point in points:
            family.add_metric(values(point), point.value)
    elif isinstance(metric.data, HistogramData):
        family = seen.get(name) or HistogramMetricFamily(name, doc, labels=keys)
        for point in points:
            family.add_metric(values(point), _buckets(point), point.sum)
    else:  # exponential histograms are not used by Pressroom
        return None
    return family  # type: ignore[no-any-return]


def _buckets(point: HistogramDataPoint) -> Sequence[Any]:
    buckets: list[Any] = []
    total = 0
    bounds = [*point.explicit_bounds, float("inf")]
    lower = float("-inf")
    for upper, count in zip(bounds, point.bucket_counts, strict=True):
        total += count
        exemplar = _exemplar(point, upper, lower)
        le = str(floatToGoString(upper))  # type: ignore[no-untyped-call]
        buckets.append((le, total, exemplar) if exemplar else (le, total))
        lower = upper
    return buckets


class PrometheusReader(MetricReader):
    """Collects on demand and renders what it got for one scrape."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._latest: MetricsData | None = None

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._latest = None

    def render(self, accept: str = "", zeros: Zeros = ()) -> tuple[bytes, str]:
        """(body, content type) for a scrape sending this Accept header; `zeros`: series shown
        at 0 while nothing was recorded for them (shared/metrics.py `expected_series`)."""
        with self._lock:
            self._latest = None
            self.collect()
            data = self._latest
        registry = CollectorRegistry(auto_describe=False)
        families: list[Family] = list(_families(data, zeros))
        registry.register(_Static(families))
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type


class _Static:
    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterable[Family]:
        return self._families

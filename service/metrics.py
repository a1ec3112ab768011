"""Prometheus metrics of the request path, on BentoML's /metrics (all workers: BentoML serves the
prometheus_client multiprocess registry of its workers there).

In the shape Triton's users know (Triton's names; prometheus_client adds `_total` to counters), per
model and version:

| metric | kind | what |
|---|---|---|
| `nv_inference_request_success_total` | counter | requests answered |
| `nv_inference_request_failure_total{reason}` | counter | REJECTED (admission), CANCELED, BACKEND |
| `nv_inference_count_total` | counter | rows (items) answered |
| `nv_inference_exec_count_total` | counter | batches run |
| `nv_inference_request_duration_us_total` | counter | µs from queued to answered, summed |
| `nv_inference_queue_duration_us_total` | counter | µs waited in the queue, summed |
| `nv_inference_compute_{input,infer,output}_duration_us_total` | counter | µs of the compute phases, summed |
| `nv_inference_pending_request_count` | gauge | requests queued now (all workers) |
| `model_serving_batch_size` | histogram | rows per batch |
| `model_serving_batch_requests` | histogram | requests per batch (the mean is the load tests' `mean_batch`) |
| `model_serving_request_duration_seconds` | histogram | queued to answered, per request |

prometheus_client is imported when the first model's metrics are made, in the worker, after BentoML
has set PROMETHEUS_MULTIPROC_DIR (importing it earlier would leave it in single-process mode).
"""

from __future__ import annotations

import asyncio
from functools import cache

LABELS = ("model", "version")
# requests per batch and rows per batch: powers of two up to the largest batch any model forms
BATCH_BUCKETS = tuple(float(2**i) for i in range(0, 11))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@cache
def _families() -> dict:
    """Every metric family, created once per process."""
    from prometheus_client import Counter, Gauge, Histogram

    def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, [*LABELS, *extra])

    return {
        "success": counter("nv_inference_request_success", "Requests answered"),
        "failure": counter(
            "nv_inference_request_failure", "Requests failed: REJECTED, CANCELED or BACKEND", ("reason",)
        ),
        "count": counter("nv_inference_count", "Rows (items) answered"),
        "exec": counter("nv_inference_exec_count", "Batches run"),
        "request_us": counter("nv_inference_request_duration_us", "Microseconds from queued to answered"),
        "queue_us": counter("nv_inference_queue_duration_us", "Microseconds waited in the queue"),
        "input_us": counter("nv_inference_compute_input_duration_us", "Microseconds stacking batch inputs"),
        "infer_us": counter("nv_inference_compute_infer_duration_us", "Microseconds in the backend"),
        "output_us": counter("nv_inference_compute_output_duration_us", "Microseconds slicing outputs"),
        "pending": Gauge(
            "nv_inference_pending_request_count", "Requests queued now", LABELS, multiprocess_mode="livesum"
        ),
        "batch_rows": Histogram("model_serving_batch_size", "Rows per batch", LABELS, buckets=BATCH_BUCKETS),
        "batch_requests": Histogram(
            "model_serving_batch_requests", "Requests per batch", LABELS, buckets=BATCH_BUCKETS
        ),
        "latency": Histogram(
            "model_serving_request_duration_seconds",
            "Seconds from queued to answered",
            LABELS,
            buckets=LATENCY_BUCKETS,
        ),
    }


class ModelMetrics:
    """A batcher observer that writes one model's Prometheus metrics. A multiprocess value is an mmap
    write (~1 µs), so the per-request sums are added up in Python and written once per batch; the
    label children are resolved once."""

    def __init__(self, model: str, version: str) -> None:
        f = _families()
        labels = (model, version)
        self._failure = {
            reason: f["failure"].labels(*labels, reason) for reason in ("REJECTED", "CANCELED", "BACKEND")
        }
        self._sums = {  # counter -> value added since the last batch
            f[name].labels(*labels): 0.0
            for name in ("success", "count", "request_us", "queue_us", "input_us", "infer_us", "output_us")
        }
        self._success, self._count, self._request_us, self._queue_us, *self._phases = list(self._sums)
        self._exec = f["exec"].labels(*labels)
        self._pending = f["pending"].labels(*labels)
        self._batch_rows = f["batch_rows"].labels(*labels)
        self._batch_requests = f["batch_requests"].labels(*labels)
        self._latency = f["latency"].labels(*labels)

    def batch_done(
        self, rows: int, requests: int, input_s: float, infer_s: float, output_s: float, pending: int
    ) -> None:
        self._exec.inc()
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)
        self._pending.set(pending)
        sums = self._sums
        for counter, value in sums.items():
            if value:
                counter.inc(value)
                sums[counter] = 0.0

    def request_done(self, rows: int, timing, end: float, ok: bool, reason: str = "") -> None:
        if not ok:
            self._failure[reason or "BACKEND"].inc()
            return
        seconds = end - timing.enqueue
        sums = self._sums
        sums[self._success] += 1
        sums[self._count] += rows
        sums[self._request_us] += seconds * 1e6
        sums[self._queue_us] += timing.queue * 1e6
        input_us, infer_us, output_us = self._phases
        sums[input_us] += timing.input * 1e6
        sums[infer_us] += timing.infer * 1e6
        sums[output_us] += timing.output * 1e6
        self._latency.observe(seconds)


@cache
def _http_families() -> dict:
    from prometheus_client import Counter, Gauge

    return {
        "requests": Counter(
            "model_serving_http_requests",
            "HTTP requests answered by the service's routes",
            ("route", "status"),
        ),
        "in_progress": Gauge(
            "model_serving_http_requests_in_progress",
            "HTTP requests being handled by the service's routes",
            ("route",),
            multiprocess_mode="livesum",
        ),
    }


class HttpMetrics:
    """Requests per route and status, and requests in progress per route, of this worker. Counted in
    Python per request and written to Prometheus at most every `period` seconds (a multiprocess value
    is an mmap write; a scrape every few seconds needs no more)."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self.answered: dict[tuple[str, int], int] = {}
        self.in_progress: dict[str, int] = {}
        self._scheduled = False

    def started(self, route: str) -> None:
        self.in_progress[route] = self.in_progress.get(route, 0) + 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.period, self.flush)

    def finished(self, route: str, status: int) -> None:
        self.in_progress[route] -= 1
        key = (route, status)
        self.answered[key] = self.answered.get(key, 0) + 1

    def flush(self) -> None:
        self._scheduled = False
        families = _http_families()
        answered, self.answered = self.answered, {}
        for (route, status), count in answered.items():
            families["requests"].labels(route, str(status)).inc(count)
        for route, count in self.in_progress.items():
            families["in_progress"].labels(route).set(count)
        if any(self.in_progress.values()):  # keep the gauge current while requests are in flight
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.period, self.flush)

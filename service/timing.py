"""Where a prediction's time went, from the batcher's own clock (service/batching.py).

- `Timing`: one request's record: when it was queued, when its first batch started, how long its
  batches ran and how many rows they held. `header()` is its W3C `Server-Timing` value, e.g.
  `queue;dur=0.412, compute;dur=11.203, batch;desc="64", backend;desc="onnx/cpu"` (durations in ms;
  `batch`: the rows of the batch the request ran in, `64+36` for a request split over two batches).
- `TritonStats`: one model's counters in the shape of Triton's statistics extension (GET
  /v2/models/stats): requests (success, fail, queue, compute_input / compute_infer / compute_output),
  items, batches, and per batch size. A batcher observer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Timing:
    enqueue: float = 0.0  # time.perf_counter() when queued
    dispatch: float | None = None  # start of its first batch
    # seconds its batches spent stacking rows, in the backend, and slicing output rows back
    input: float = 0.0
    infer: float = 0.0
    output: float = 0.0
    batches: list[int] = field(default_factory=list)  # rows of each batch it ran in

    def add_batch(self, start: float, input_s: float, infer_s: float, output_s: float, rows: int) -> None:
        if self.dispatch is None or start < self.dispatch:
            self.dispatch = start
        self.input += input_s
        self.infer += infer_s
        self.output += output_s
        self.batches.append(rows)

    @property
    def queue(self) -> float:
        return 0.0 if self.dispatch is None else max(0.0, self.dispatch - self.enqueue)

    @property
    def compute(self) -> float:
        return self.input + self.infer + self.output

    def header(self, placement: str) -> str:
        sizes = "+".join(map(str, self.batches))
        return (
            f"queue;dur={1000 * self.queue:.3f}, compute;dur={1000 * self.compute:.3f}, "
            f'batch;desc="{sizes}", backend;desc="{placement}"'
        )


def _counter(count: int = 0, ns: int = 0) -> dict:
    return {"count": count, "ns": ns}


@dataclass
class TritonStats:
    """One model's statistics since this worker started, kept the way Triton keeps them: per request
    `success` / `fail` (count, ns from queued to answered), `queue` (ns waited), and the three compute
    phases of the batches it ran in (`compute_input`: rows stacked into the batch, `compute_infer`: the
    backend, `compute_output`: output rows sliced back); per batch size the same three; items answered
    (`inference_count`) and batches run (`execution_count`)."""

    success: list[int] = field(default_factory=lambda: [0, 0])
    fail: list[int] = field(default_factory=lambda: [0, 0])
    queue: list[int] = field(default_factory=lambda: [0, 0])
    compute_input: list[int] = field(default_factory=lambda: [0, 0])
    compute_infer: list[int] = field(default_factory=lambda: [0, 0])
    compute_output: list[int] = field(default_factory=lambda: [0, 0])
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    by_batch: dict[int, list[int]] = field(default_factory=dict)  # rows -> [batches, in ns, infer ns, out ns]

    def batch_done(
        self, rows: int, requests: int, input_s: float, infer_s: float, output_s: float, pending: int = 0
    ) -> None:
        self.execution_count += 1
        entry = self.by_batch.setdefault(rows, [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += int(input_s * 1e9)
        entry[2] += int(infer_s * 1e9)
        entry[3] += int(output_s * 1e9)

    def request_done(self, rows: int, timing, end: float, ok: bool, reason: str = "") -> None:
        total = self.success if ok else self.fail
        total[0] += 1
        total[1] += int((end - timing.enqueue) * 1e9)
        if not ok:
            return
        for total, seconds in (
            (self.queue, timing.queue),
            (self.compute_input, timing.input),
            (self.compute_infer, timing.infer),
            (self.compute_output, timing.output),
        ):
            total[0] += 1
            total[1] += int(seconds * 1e9)
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def snapshot(self) -> dict:
        """The counts as JSON (what service/stats_board.py shares between the workers)."""
        return {
            "success": self.success, "fail": self.fail, "queue": self.queue,
            "compute_input": self.compute_input, "compute_infer": self.compute_infer,
            "compute_output": self.compute_output, "inference_count": self.inference_count,
            "execution_count": self.execution_count, "last_inference_ms": self.last_inference_ms,
            "by_batch": {str(rows): counts for rows, counts in self.by_batch.items()},
        }  # fmt: skip

    @classmethod
    def total(cls, snapshots: list[dict]) -> TritonStats:
        """The sum of several workers' snapshots (the latest of their last inferences)."""
        out = cls()
        for snap in snapshots:
            for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
                pair = getattr(out, key)
                pair[0] += snap[key][0]
                pair[1] += snap[key][1]
            out.inference_count += snap["inference_count"]
            out.execution_count += snap["execution_count"]
            out.last_inference_ms = max(out.last_inference_ms, snap["last_inference_ms"])
            for rows, counts in snap["by_batch"].items():
                entry = out.by_batch.setdefault(int(rows), [0, 0, 0, 0])
                for i, value in enumerate(counts):
                    entry[i] += value
        return out

    def as_triton(self, name: str, version: str) -> dict:
        """The model's entry of Triton's `model_stats`."""
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": _counter(*self.success),
                "fail": _counter(*self.fail),
                "queue": _counter(*self.queue),
                "compute_input": _counter(*self.compute_input),
                "compute_infer": _counter(*self.compute_infer),
                "compute_output": _counter(*self.compute_output),
                "cache_hit": _counter(),
                "cache_miss": _counter(),
            },
            "batch_stats": [
                {
                    "batch_size": rows,
                    "compute_input": _counter(count, input_ns),
                    "compute_infer": _counter(count, infer_ns),
                    "compute_output": _counter(count, output_ns),
                }
                for rows, (count, input_ns, infer_ns, output_ns) in sorted(self.by_batch.items())
            ],
        }

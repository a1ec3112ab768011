"""Where a prediction's time went.

- `Timing`: one request's record, filled by the batcher (service/patches/dispatch_timing.py): when it
  was queued, when its first batch started, how long its batches ran and how many items they held.
- `ServerTiming`: ASGI middleware that gives every POST a fresh record and, when the request was
  predicted, answers with the W3C `Server-Timing` header, e.g.
  `Server-Timing: queue;dur=0.412, compute;dur=11.203, batch;desc="64", backend;desc="onnx/cpu"`
  (durations in milliseconds; `batch`: the items of the batch the request ran in, `64+36` for a
  request split over two batches).
- `Stats`: per-batcher counters in the shape of Triton's statistics extension (GET /v2/models/stats).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Timing:
    enqueue: float = 0.0  # time.time() when queued
    dispatch: float | None = None  # start of its first batch
    compute: float = 0.0  # seconds its batches ran (inputs stacked, model, outputs formed)
    batches: list[int] = field(default_factory=list)  # items of each batch it ran in

    def add_batch(self, start: float, seconds: float, items: int) -> None:
        self.dispatch = start if self.dispatch is None else min(self.dispatch, start)
        self.compute += seconds
        self.batches.append(items)

    @property
    def queue(self) -> float:
        return 0.0 if self.dispatch is None else max(0.0, self.dispatch - self.enqueue)

    def header(self, placement: str) -> str:
        sizes = "+".join(map(str, self.batches))
        return (
            f"queue;dur={1000 * self.queue:.3f}, compute;dur={1000 * self.compute:.3f}, "
            f'batch;desc="{sizes}", backend;desc="{placement}"'
        )


TIMING: ContextVar[Timing | None] = ContextVar("server_timing", default=None)


def record_unbatched(start: float, items: int) -> None:
    """For a prediction that does not go through a batcher (an image upload): it ran from `start` to now."""
    record = TIMING.get()
    if record is not None:
        record.enqueue = start
        record.add_batch(start, time.time() - start, items)


class ServerTiming:
    """ASGI middleware: `Server-Timing` on every response to a request that was predicted.
    `placement()` gives its `backend` ("onnx/cpu"), asked once, at the first prediction."""

    def __init__(self, app, placement: Callable[[], str]) -> None:
        self.app = app
        self.placement_of = placement
        self.placement: str | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        record = Timing()
        token = TIMING.set(record)

        async def send_with_timing(message) -> None:
            if message["type"] == "http.response.start" and record.batches:
                if self.placement is None:
                    self.placement = self.placement_of()
                header = record.header(self.placement).encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", header)]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            TIMING.reset(token)


def _counter(count: int = 0, ns: int = 0) -> dict:
    return {"count": count, "ns": ns}


@dataclass
class Stats:
    """One batcher's counters since the worker started (Triton's statistics extension)."""

    success: list[int] = field(default_factory=lambda: [0, 0])  # requests, ns from queued to answered
    fail: list[int] = field(default_factory=lambda: [0, 0])
    queue: list[int] = field(default_factory=lambda: [0, 0])
    compute: list[int] = field(default_factory=lambda: [0, 0])  # per request: ns of its batches
    inference_count: int = 0  # items answered
    execution_count: int = 0  # batches run
    last_inference_ms: int = 0
    by_batch: dict[int, list[int]] = field(default_factory=dict)  # items -> [batches, ns]

    def batch_done(self, items: int, seconds: float) -> None:
        self.execution_count += 1
        entry = self.by_batch.setdefault(items, [0, 0])
        entry[0] += 1
        entry[1] += int(seconds * 1e9)

    def request_done(self, record: Timing, items: int, ok: bool, end: float) -> None:
        total = self.success if ok else self.fail
        total[0] += 1
        total[1] += int((end - record.enqueue) * 1e9)
        if record.dispatch is not None:
            self.queue[0] += 1
            self.queue[1] += int(record.queue * 1e9)
            self.compute[0] += 1
            self.compute[1] += int(record.compute * 1e9)
        if ok:
            self.inference_count += items
            self.last_inference_ms = int(end * 1000)

    def as_triton(self, name: str, version: str) -> dict:
        """The model's entry of `model_stats`; the batch's whole run is counted as compute_infer."""
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
                "compute_input": _counter(),
                "compute_infer": _counter(*self.compute),
                "compute_output": _counter(),
                "cache_hit": _counter(),
                "cache_miss": _counter(),
            },
            "batch_stats": [
                {
                    "batch_size": items,
                    "compute_input": _counter(),
                    "compute_infer": _counter(count, ns),
                    "compute_output": _counter(),
                }
                for items, (count, ns) in sorted(self.by_batch.items())
            ],
        }

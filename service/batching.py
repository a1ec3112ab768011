"""One batcher per model in each worker: requests in, tensor batches to the backend, rows back out.

    batcher = Batcher("mnist_cnn", backend, item_shape=(1, 28, 28), max_batch_size=64, max_latency_s=3.0)
    rows = await batcher.infer(x)          # x: float32 (n, 1, 28, 28) -> the model's (n, 10) rows

- A request is one float32 array of n rows (images, feature rows), already validated by its codec.
- A batch forms as soon as the model is free, from whatever is queued, first come first served, up to
  `max_batch_size` rows; a request larger than that is split over consecutive batches and its output
  rows are joined again. The rows are stacked into one contiguous float32 array, a buffer allocated
  once (`allocate`: pinned host memory on a GPU), unless the batch is one request (then it is used as
  it is), and the backend runs it in the batcher's own thread (the event loop goes on parsing the next
  requests), or on the event loop itself when its measured cost is at most INLINE_S (the hop to the
  thread would cost more). Output rows are sliced back per request.
- Admission by deadline: a request is refused at once (`Overloaded`, 503 + Retry-After) only when the
  measured cost of the rows ahead of it plus its own would pass its deadline: its own wait, not the
  whole queue's. The cost of a batch of n rows is `fixed + per_row * n`, fitted to the batches this
  batcher ran (`CostModel`, seeded by the warm-up).
- A failing batch fails only its own requests (`BatchFailed`); a request whose caller went away
  (its task cancelled) before its rows were sent is dropped from the queue.
- Each request's queue wait, batches and compute time go to its `Timing` (Server-Timing); each batch
  and request to the `observers` (Triton statistics, Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import BatchFailed, Overloaded
from service.timing import Timing

logger = logging.getLogger("bentoml.model_serving.batching")
# A batch the cost model expects to take at most this long runs on the event loop instead of the
# batcher's thread: the hop there and back (a queue, a thread wake-up, a call_soon_threadsafe) costs
# more CPU than such a batch (BENCHMARKS.md); the loop is held no longer than this.
INLINE_S = 300e-6


@dataclass
class CostModel:
    """Seconds the backend takes for a batch of n rows: `fixed + per_row * n`, least squares over the
    last `window` batches (refitted every `refit_every`), never below zero."""

    fixed: float
    per_row: float
    window: int = 64
    refit_every: int = 8
    samples: deque = field(default_factory=deque)
    _added: int = 0

    @classmethod
    def fit(cls, samples: Sequence[tuple[int, float]]) -> CostModel:
        """From (rows, seconds) measurements, e.g. the warm-up's."""
        model = cls(0.0, 0.0)
        for rows, seconds in samples:
            model.samples.append((rows, seconds))
        model._refit()
        return model

    def add(self, rows: int, seconds: float) -> None:
        self.samples.append((rows, seconds))
        if len(self.samples) > self.window:
            self.samples.popleft()
        self._added += 1
        if self._added % self.refit_every == 0:
            self._refit()

    def _refit(self) -> None:
        """Least squares in closed form over the window (a pure-Python pass: np.polyfit cost ~50 µs a
        refit, more than most batches of a small model)."""
        count = len(self.samples)
        if not count:
            return
        sn = st = snn = snt = 0.0
        low, high, fastest = math.inf, -math.inf, math.inf
        for rows, seconds in self.samples:
            sn += rows
            st += seconds
            snn += rows * rows
            snt += rows * seconds
            low, high, fastest = min(low, rows), max(high, rows), min(fastest, seconds)
        mean_n, mean_t = sn / count, st / count
        if high > low:
            slope = (snt - sn * mean_t) / (snn - sn * mean_n)
            intercept = mean_t - slope * mean_n
            if slope >= 0 and intercept >= 0:
                self.fixed, self.per_row = intercept, slope
                return
            if slope < 0:  # noise across few sizes: no per-row cost visible, all of it fixed
                self.fixed, self.per_row = mean_t, 0.0
                return
        # one batch size only (or a negative intercept): keep the fixed part, the rest per row
        self.fixed = min(self.fixed, fastest)
        self.per_row = max(0.0, (mean_t - self.fixed) / mean_n)

    def batch_seconds(self, rows: int) -> float:
        return self.fixed + self.per_row * rows

    def seconds(self, rows: int, max_batch_size: int) -> float:
        """Time to run `rows` queued rows in batches of at most `max_batch_size`."""
        return math.ceil(rows / max_batch_size) * self.fixed + self.per_row * rows


class Observer(Protocol):
    """Told of every batch and every finished request (Triton statistics, Prometheus metrics).
    `reason` of a request that failed: REJECTED (admission), CANCELED (its caller went away), BACKEND."""

    def batch_done(
        self, rows: int, requests: int, input_s: float, infer_s: float, output_s: float, pending: int
    ) -> None: ...

    def request_done(self, rows: int, timing: Timing, end: float, ok: bool, reason: str = "") -> None: ...


@dataclass(eq=False, slots=True)
class Request:
    x: np.ndarray  # (rows, *item_shape) float32, C-contiguous
    future: asyncio.Future
    timing: Timing
    expected_s: float = 0.0  # its expected wait when it was admitted
    sent: int = 0  # rows handed to batches so far
    received: int = 0  # rows answered so far
    out: np.ndarray | None = None  # the joined output of a request split over several batches

    @property
    def rows(self) -> int:
        return len(self.x)


Part = tuple[Request, int, int]  # (request, its first row in this batch, rows)


class Batcher:
    def __init__(
        self,
        name: str,
        run: Callable[[np.ndarray], np.ndarray],
        item_shape: tuple[int, ...],
        max_batch_size: int,
        max_latency_s: float,
        cost: CostModel | None = None,
        allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
        observers: Sequence[Observer] = (),
        latency_setting: str = "max_latency_ms",
        queue_delay_s: float = 0.0,
        inline_s: float = INLINE_S,
    ) -> None:
        self.name = name
        self.run = run
        self.item_shape = tuple(item_shape)
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s  # a request's deadline: queued + computed
        self.latency_setting = latency_setting  # named in the refusal, so that a user knows the knob
        # a batch short of max_batch_size waits until its oldest request has waited this long (Triton's
        # max_queue_delay_microseconds): where requests reach the batcher one at a time, as gRPC calls
        # do, a batch otherwise holds one request and each pays a whole batch's fixed cost
        self.queue_delay_s = queue_delay_s
        # a batch expected to take at most this long runs on the event loop itself (below: the hop)
        self.inline_s = inline_s
        self.cost = cost or CostModel(0.0, 0.0)
        shape = (max_batch_size, *self.item_shape)
        self.buffer = allocate(shape) if allocate else np.empty(shape, dtype=np.float32)
        self.observers = list(observers)
        self.queue: deque[Request] = deque()
        self.queued_rows = 0  # rows waiting, not yet handed to a batch
        self.reserved = 0  # requests admitted before their body was read (`reserve`), not yet queued
        self.mean_rows = 1.0  # rows per request, recent mean: a reserved request's estimated size
        self.busy_until: float | None = None  # expected end of the running batch (perf_counter)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")

    # --- requests

    def expected_seconds(self, rows: int, now: float) -> float:
        """When a request of `rows` rows arriving now would be answered: the rest of the running batch,
        then every row ahead of it (queued, and reserved by requests still being read, at the recent
        mean request size) and its own, in batches of at most max_batch_size."""
        running = max(0.0, self.busy_until - now) if self.busy_until is not None else 0.0
        ahead = self.queued_rows + self.reserved * self.mean_rows
        return running + self.queue_delay_s + self.cost.seconds(ahead + rows, self.max_batch_size)

    def admit(self, rows: float, now: float | None = None) -> float:
        """Admission by deadline: the seconds until a request of `rows` rows arriving now would be
        answered, or `Overloaded` when that passes the deadline. Never refused when nothing is
        running, queued or reserved (one request alone always runs, whatever its size)."""
        now = time.perf_counter() if now is None else now
        expected = self.expected_seconds(rows, now)
        if expected > self.max_latency_s and (
            self.queued_rows or self.reserved or self.busy_until is not None
        ):
            self._tell(round(rows), Timing(now), False, "REJECTED")
            raise Overloaded(
                f"overloaded: {self.name} would answer a request of {rows:.0f} row(s) in "
                f"~{expected * 1e3:.0f} ms ({self.queued_rows} row(s) queued ahead of it, {self.reserved} "
                f"request(s) being read), past its deadline of {self.max_latency_s * 1e3:.0f} ms "
                f"({self.latency_setting}); retry later",
                max(1.0, expected - self.max_latency_s),
            )
        return expected

    def reserve(self) -> None:
        """Admission of a request whose rows are not known yet (its body is still to be read and
        parsed), counted at the recent mean request size: refused at once when that would miss the
        deadline, so that under overload a refusal costs neither the body's parsing nor its memory.
        The reservation keeps its place ahead of later requests until `submit(..., reserved=True)` or
        `release()`."""
        self.admit(self.mean_rows)
        self.reserved += 1

    def release(self) -> None:
        """Give a reservation back (the request turned out malformed, or its client left)."""
        self.reserved -= 1

    def submit(self, x: np.ndarray, timing: Timing | None = None, reserved: bool = False) -> Request:
        """Queue a request (admission by deadline first: `Overloaded` when it would miss it).
        `reserved`: it holds a reservation, which this consumes (also when it is refused)."""
        now = time.perf_counter()
        rows = len(x)
        if reserved:
            self.reserved -= 1
        expected = self.admit(rows, now)
        self.mean_rows += 0.1 * (rows - self.mean_rows)
        loop = asyncio.get_running_loop()
        if timing is None:
            timing = Timing(now)
        else:
            timing.enqueue = now
        request = Request(np.ascontiguousarray(x, dtype=np.float32), loop.create_future(), timing, expected)
        self.queue.append(request)
        self.queued_rows += rows
        if self._task is None:
            self._task = loop.create_task(self._serve(), name=f"batcher-{self.name}")
        self._wake.set()
        return request

    async def result(self, request: Request) -> np.ndarray:
        """The request's output rows. If the caller is cancelled (the client went away, a timeout), rows
        not yet sent to a batch are never computed."""
        try:
            return await request.future
        except asyncio.CancelledError:
            if not request.future.done():
                request.future.cancel()
            raise

    async def infer(self, x: np.ndarray, timing: Timing | None = None) -> np.ndarray:
        return await self.result(self.submit(x, timing))

    # --- the batch loop

    def _take(self) -> tuple[list[Part], int]:
        """The next batch: queued requests in order, up to max_batch_size rows (the last one split)."""
        parts: list[Part] = []
        size = 0
        queue = self.queue
        while queue and size < self.max_batch_size:
            request = queue[0]
            if request.future.done():  # cancelled while queued: its unsent rows are dropped
                queue.popleft()
                self.queued_rows -= request.rows - request.sent
                if request.sent == 0:
                    self._tell(request.rows, request.timing, False, "CANCELED")
                continue
            take = min(request.rows - request.sent, self.max_batch_size - size)
            parts.append((request, request.sent, take))
            request.sent += take
            size += take
            self.queued_rows -= take
            if request.sent == request.rows:
                queue.popleft()
        return parts, size

    def _compute(self, parts: list[Part], size: int):
        """In the batcher's thread: stack, run, slice. Returns the output pieces and the three times."""
        t0 = time.perf_counter()
        if len(parts) == 1:
            request, first, rows = parts[0]
            batch = request.x[first : first + rows]  # one request: its own rows, no copy
        else:
            batch = self.buffer[:size]
            offset = 0
            for request, first, rows in parts:
                batch[offset : offset + rows] = request.x[first : first + rows]
                offset += rows
        t1 = time.perf_counter()
        out = self.run(batch)
        t2 = time.perf_counter()
        if len(out) != size:
            raise RuntimeError(f"the backend answered a batch of {size} rows with {len(out)} rows")
        pieces = []
        offset = 0
        for _, _, rows in parts:
            pieces.append(out[offset : offset + rows])
            offset += rows
        t3 = time.perf_counter()
        return pieces, t1 - t0, t2 - t1, t3 - t2

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.queue_delay_s and self.queued_rows < self.max_batch_size:
                await self._hold()
            parts, size = self._take()
            if not parts:
                continue
            start = time.perf_counter()
            expected = self.cost.batch_seconds(size)
            self.busy_until = start + expected
            inline = expected <= self.inline_s and bool(self.cost.samples)  # a measured cost only
            try:
                if inline:  # cheaper than the hop to the thread and back: run it here
                    pieces, input_s, infer_s, output_s = self._compute(parts, size)
                else:
                    pieces, input_s, infer_s, output_s = await loop.run_in_executor(
                        self._executor, self._compute, parts, size
                    )
            except Exception as exc:
                self.busy_until = None
                logger.error(
                    "%s: a batch of %d rows failed: %s: %s", self.name, size, type(exc).__name__, exc
                )
                self._fail(parts, exc)
                continue
            except asyncio.CancelledError:  # closing: the batch in flight fails its requests
                self._fail(parts, BatchFailed("the server is shutting down"))
                raise
            self.busy_until = None
            end = time.perf_counter()
            # the batch's own cost, measured in its thread: not the event loop's delay in taking the
            # result, which a flood of requests to parse can make large (and the estimate would then
            # refuse everything while the model idles)
            self.cost.add(size, input_s + infer_s + output_s)
            self._deliver(parts, pieces, start, (input_s, infer_s, output_s), size, end)
            for observer in self.observers:  # after the requests: observers may flush per batch
                self._observe(
                    observer.batch_done, size, len(parts), input_s, infer_s, output_s, len(self.queue)
                )
            if inline:  # let the loop read the next requests before the next batch
                await asyncio.sleep(0)

    async def _hold(self) -> None:
        """Wait until the queue holds a full batch or its oldest request has waited queue_delay_s."""
        while self.queue and self.queued_rows < self.max_batch_size:
            wait = self.queue[0].timing.enqueue + self.queue_delay_s - time.perf_counter()
            if wait <= 0:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                return

    def _deliver(
        self, parts: list[Part], pieces: list[np.ndarray], start: float, phases: tuple, size: int, end: float
    ) -> None:
        for (request, first, rows), piece in zip(parts, pieces, strict=True):
            request.timing.add_batch(start, *phases, size)
            request.received += rows
            done = request.received == request.rows
            if request.future.done():  # the caller went away while its rows ran
                if done:
                    self._tell(request.rows, request.timing, False, "CANCELED", end)
                continue
            if rows == request.rows:
                result = piece
            else:  # split over batches: join the pieces in order
                if request.out is None:
                    request.out = np.empty((request.rows, *piece.shape[1:]), dtype=piece.dtype)
                request.out[first : first + rows] = piece
                result = request.out
            if done:
                request.future.set_result(result)
                self._tell(request.rows, request.timing, True, "", end)

    def _fail(self, parts: list[Part], exc: BaseException) -> None:
        error = exc if isinstance(exc, BatchFailed) else BatchFailed(f"{type(exc).__name__}: {exc}")
        end = time.perf_counter()
        for request, _, _ in parts:
            if not request.future.done():
                request.future.set_exception(error)
                self._tell(request.rows, request.timing, False, "BACKEND", end)
            # the rest of a failed split request is dropped: its answer can no longer be whole
            if request.sent < request.rows and request in self.queue:
                self.queue.remove(request)
                self.queued_rows -= request.rows - request.sent
                request.sent = request.rows

    def _tell(self, rows: int, timing: Timing, ok: bool, reason: str, end: float | None = None) -> None:
        end = time.perf_counter() if end is None else end
        for observer in self.observers:
            self._observe(observer.request_done, rows, timing, end, ok, reason)

    def _observe(self, call, *args) -> None:
        """An observer's call; a failing one is logged, never the end of the batch loop."""
        try:
            call(*args)
        except Exception:
            logger.exception("%s: an observer failed (%s)", self.name, getattr(call, "__qualname__", call))

    async def close(self) -> None:
        """Answer what is queued, then stop the loop and the thread."""
        while self.queue or self.busy_until is not None:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

"""The batcher (service/batching.py) in-process, with a fake backend whose cost is known: batches form
from what is queued while the model is busy, large requests are split and joined again, admission
refuses only what would miss its own deadline, a failing batch fails only its own requests, a
cancelled request is never computed, and every request's timing and the statistics are recorded."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import Batcher, CostModel
from service.errors import BatchFailed, Overloaded
from service.timing import Timing, TritonStats

pytestmark = pytest.mark.inprocess


class FakeBackend:
    """Sums each row (so every answer identifies its row), sleeps `per_row` s per row + `fixed`, records
    the batches it ran; `fail_when(batch)` makes a batch raise; `gate` holds a batch until set."""

    def __init__(self, fixed=0.0, per_row=0.0, fail_when=None, gate: threading.Event | None = None):
        self.fixed, self.per_row, self.fail_when, self.gate = fixed, per_row, fail_when, gate
        self.batches: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(x.copy())
        time.sleep(self.fixed + self.per_row * len(x))
        if self.fail_when is not None and self.fail_when(x):
            raise RuntimeError("the backend failed")
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True)


def rows(ids, width=2) -> np.ndarray:
    """A request whose rows are each filled with their own id."""
    return np.repeat(np.asarray(ids, dtype=np.float32)[:, None], width, axis=1)


def batcher(backend, max_batch=4, deadline=10.0, cost=None, **kw) -> Batcher:
    return Batcher("m", backend, (2,), max_batch, deadline, cost=cost or CostModel(0.0, 0.0), **kw)


def run(coro):
    return asyncio.run(coro)


def test_requests_queued_while_the_model_is_busy_form_one_batch_and_get_their_own_rows():
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main():
        b = batcher(backend, max_batch=64)
        first = asyncio.ensure_future(b.infer(rows([100])))
        await asyncio.sleep(0.05)  # the first batch is running (held by the gate)
        rest = [asyncio.ensure_future(b.infer(rows([i, i + 0.5]))) for i in range(10)]
        await asyncio.sleep(0.05)
        gate.set()
        out = await asyncio.gather(first, *rest)
        await b.close()
        return out

    out = run(main())
    assert [len(x) for x in backend.batches] == [1, 20]  # one batch of everything that queued
    assert out[0].ravel().tolist() == [200.0]
    for i, answer in enumerate(out[1:]):
        assert answer.ravel().tolist() == [2 * i, 2 * i + 1]
    assert all(x.flags["C_CONTIGUOUS"] and x.dtype == np.float32 for x in backend.batches)


def test_a_queue_delay_lets_requests_arriving_one_by_one_share_a_batch():
    """Requests that reach an idle model one at a time (as gRPC calls do) run alone without a queue
    delay; with one (Triton's max_queue_delay_microseconds), a batch waits for its oldest request's
    delay or a full batch, whichever comes first."""

    async def arrive(b, n, gap_s):
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(b.infer(rows([i]))))
            await asyncio.sleep(gap_s)
        out = await asyncio.gather(*tasks)
        await b.close()
        return out

    alone, delayed, full = FakeBackend(), FakeBackend(), FakeBackend()
    run(arrive(batcher(alone, max_batch=64), 6, 0.01))
    assert [len(x) for x in alone.batches] == [1] * 6
    out = run(arrive(batcher(delayed, max_batch=64, queue_delay_s=0.2), 6, 0.01))
    assert [len(x) for x in delayed.batches] == [6]
    assert [answer.ravel().tolist() for answer in out] == [[2.0 * i] for i in range(6)]
    # a full batch does not wait for the delay
    start = time.perf_counter()
    run(arrive(batcher(full, max_batch=4, queue_delay_s=5.0), 8, 0.0))
    assert [len(x) for x in full.batches] == [4, 4] and time.perf_counter() - start < 2.0


def test_a_request_larger_than_a_batch_is_split_and_joined_in_order():
    backend = FakeBackend()

    async def main():
        b = batcher(backend, max_batch=4)
        timing = Timing()
        small = asyncio.ensure_future(b.infer(rows([1000])))
        big = await b.infer(rows(range(10)), timing)
        await small
        await b.close()
        return big, timing

    big, timing = run(main())
    assert big.ravel().tolist() == [2.0 * i for i in range(10)]
    assert [len(x) for x in backend.batches] == [4, 4, 3]  # 1 + 10 rows in batches of at most 4
    assert timing.batches == [4, 4, 3] and timing.compute > 0 and timing.queue >= 0


def test_a_failing_batch_fails_only_its_own_requests():
    """Requests in the batch that raises get BatchFailed; the requests of the next batch are answered."""
    gate = threading.Event()
    backend = FakeBackend(gate=gate, fail_when=lambda x: (x == 13).any())

    async def main():
        b = batcher(backend, max_batch=2)
        tasks = [asyncio.ensure_future(b.infer(rows([i]))) for i in (12, 13, 14, 15)]
        await asyncio.sleep(0.02)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        again = await b.infer(rows([16]))
        await b.close()
        return results, again

    results, again = run(main())
    assert isinstance(results[0], BatchFailed) and isinstance(results[1], BatchFailed)  # batch [12, 13]
    assert [r.ravel().tolist() for r in results[2:]] == [[28.0], [30.0]]  # batch [14, 15]
    assert again.ravel().tolist() == [32.0]


def test_admission_refuses_only_what_would_miss_its_own_deadline():
    """Cost 10 ms per row, deadline 100 ms: with 8 rows queued behind a running batch, a 1-row request
    (expected ~90-100 ms) is admitted and a 3-row one (~110 ms+) refused at once, naming the deadline;
    the admitted ones are all answered."""
    gate = threading.Event()
    backend = FakeBackend(per_row=0.001, gate=gate)

    async def main():
        b = batcher(backend, max_batch=64, deadline=0.1, cost=CostModel(0.0, 0.01))
        running = asyncio.ensure_future(b.infer(rows([0])))
        await asyncio.sleep(0.02)
        queued = [asyncio.ensure_future(b.infer(rows([i]))) for i in range(1, 9)]
        await asyncio.sleep(0)
        admitted = b.submit(rows([9]))
        t0 = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            b.submit(rows([10, 11, 12]))
        refusal_s = time.perf_counter() - t0
        gate.set()
        await asyncio.gather(running, *queued, b.result(admitted))
        await b.close()
        return refused.value, refusal_s

    refused, refusal_s = run(main())
    assert refusal_s < 0.01 and refused.retry_after_s >= 1
    assert "past its deadline of 100 ms (max_latency_ms)" in str(refused)


def test_an_idle_model_admits_any_request():
    """A request alone is never refused, whatever its cost (it could not be answered sooner)."""

    async def main():
        b = batcher(FakeBackend(), max_batch=4, deadline=0.001, cost=CostModel(1.0, 1.0))
        out = await b.infer(rows(range(8)))
        await b.close()
        return out

    assert len(run(main())) == 8


def test_a_cancelled_request_is_never_computed():
    """The caller of a queued request goes away (its task cancelled: a client that disconnected, a
    timeout): its rows are dropped before they reach a batch."""
    gate = threading.Event()
    backend = FakeBackend(gate=gate)
    stats = TritonStats()

    async def main():
        b = batcher(backend, max_batch=64, observers=(stats,))
        running = asyncio.ensure_future(b.infer(rows([1])))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(b.infer(rows([777, 778])))
        stays = asyncio.ensure_future(b.infer(rows([5])))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(running, stays)
        await b.close()
        return gone

    gone = run(main())
    assert gone.cancelled()
    assert not any((x == 777).any() for x in backend.batches)
    assert stats.fail[0] == 1 and stats.success[0] == 2


def test_timing_and_triton_statistics_count_every_phase():
    backend = FakeBackend(per_row=0.001)
    stats = TritonStats()

    async def main():
        b = batcher(backend, max_batch=4, observers=(stats,))
        timings = [Timing() for _ in range(3)]
        await asyncio.gather(*(b.infer(rows([i] * 3), t) for i, t in enumerate(timings)))
        await b.close()
        return timings

    timings = run(main())
    doc = stats.as_triton("m", "1")
    assert doc["inference_count"] == 9 and doc["execution_count"] == len(backend.batches)
    inference = doc["inference_stats"]
    assert inference["success"]["count"] == 3
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[phase]["count"] == 3, phase
    assert inference["compute_infer"]["ns"] >= 9 * 1e6 * 0.9  # 9 rows x 1 ms, at least
    assert sum(entry["compute_infer"]["count"] for entry in doc["batch_stats"]) == len(backend.batches)
    header = timings[0].header("fake/cpu")
    assert header.startswith("queue;dur=") and 'backend;desc="fake/cpu"' in header


def test_cost_model_fits_the_batches_it_sees():
    model = CostModel.fit([(1, 0.0011), (8, 0.0018), (64, 0.0074)])
    assert model.fixed == pytest.approx(0.001, abs=2e-4) and model.per_row == pytest.approx(1e-4, rel=0.1)
    for _ in range(64):  # the machine got slower (a busy neighbour): the estimate follows
        model.add(64, 0.0148)
        model.add(1, 0.0022)
    assert model.batch_seconds(64) == pytest.approx(0.0148, rel=0.05)
    assert model.seconds(130, 64) == pytest.approx(3 * model.fixed + 130 * model.per_row)


def test_requests_still_being_read_count_ahead_at_the_mean_request_size():
    """`reserve()` admits a request before its body is parsed, at the recent mean request size, and
    keeps its place: once the reservations alone pass the deadline, the next request is refused before
    its body is read. `release()` gives a place back, `submit(reserved=True)` turns it into rows."""
    gate = threading.Event()

    async def main():
        b = batcher(FakeBackend(gate=gate), max_batch=64, deadline=0.1, cost=CostModel(0.0, 0.01))
        running = asyncio.ensure_future(b.infer(rows([0] * 4)))  # mean request size -> ~1.3 rows
        await asyncio.sleep(0.02)
        admitted = 0
        with pytest.raises(Overloaded, match="request\\(s\\) being read"):
            for _ in range(20):
                b.reserve()
                admitted += 1
        assert 5 <= admitted <= 9  # ~1.3 rows x 10 ms each against 100 ms
        b.release()
        b.reserve()  # the released place can be taken again
        request = b.submit(rows([5]), reserved=True)
        assert b.reserved == admitted - 1
        gate.set()
        await asyncio.gather(running, b.result(request))
        await b.close()

    run(main())


def test_statistics_board_sums_the_workers_files_with_its_own_live_counts(tmp_path):
    """Two workers' boards on one folder: each answers with its own live counts plus the other's last
    published ones; a model of another version (another server's leftovers) is not added."""
    from service.stats_board import StatsBoard
    from service.timing import Timing, TritonStats

    def worker(name: str, requests: int, version: str = "3") -> tuple[StatsBoard, TritonStats]:
        board, stats = StatsBoard(tmp_path, worker=name), TritonStats()
        board.watch("housing_mlp", version, stats)
        for _ in range(requests):
            timing = Timing(enqueue=0.0)
            timing.add_batch(0.001, 0.0001, 0.002, 0.0001, 1)
            stats.batch_done(1, 1, 0.0001, 0.002, 0.0001)
            stats.request_done(1, timing, end=0.004, ok=True)
        return board, stats

    a, _ = worker("a", 3)
    b, b_stats = worker("b", 5)
    old, _ = worker("old", 7, version="2")
    a.write()
    old.write()
    total = b.totals()["housing_mlp"].as_triton("housing_mlp", "3")
    stats = total["inference_stats"]
    counts = {k: stats[k]["count"] for k in ("success", "queue", "compute_infer")}
    assert counts == {"success": 8, "queue": 8, "compute_infer": 8}
    assert total["execution_count"] == 8 and total["batch_stats"][0]["compute_infer"]["count"] == 8
    # b's own counts are live; a's as last written
    b_stats.request_done(1, Timing(enqueue=0.0), end=0.001, ok=False)
    assert b.totals()["housing_mlp"].as_triton("housing_mlp", "3")["inference_stats"]["fail"]["count"] == 1
    assert StatsBoard(None).totals() == {}

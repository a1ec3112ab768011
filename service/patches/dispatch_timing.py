"""Timing of the adaptive batcher (bentoml 1.4.x): CorkDispatcher knows when each request was queued,
when its batch started and how long the batch ran, and tells no one. The patched methods fill the
request's `service.timing.Timing` record (the `Server-Timing` header) and the batcher's
`service.timing.Stats` (Triton's statistics extension):

- inbound_call: the stock one (queue the job, wake the controller, await the result), plus the record;
- outbound_call: the stock one, timed, each of its jobs' records and the stats updated before the
  waiting requests resume (nothing awaits between the stock call setting their results and here);
- split_job: the stock one; the two halves of a request bigger than a batch count for that request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bentoml._internal.marshal.dispatcher import CorkDispatcher, Job

from service.timing import TIMING, Stats, Timing

stock_inbound_call = CorkDispatcher.inbound_call  # replaced whole: the job must be known to time it
stock_outbound_call = CorkDispatcher.outbound_call
stock_split_job = CorkDispatcher.split_job


@dataclass
class _State:
    stats: Stats = field(default_factory=Stats)
    records: dict[int, Timing] = field(default_factory=dict)  # id(queued job) -> its request's record
    roots: dict[int, int] = field(default_factory=dict)  # id(half of a split job) -> id(queued job)


def state(dispatcher: CorkDispatcher) -> _State:
    return dispatcher.__dict__.setdefault("_timing", _State())


def stats(dispatcher: CorkDispatcher) -> Stats:
    return state(dispatcher).stats


def items(self, data) -> int:
    """Rows/images of a request: len() of the lists our APIs batch, else BentoML's own count (slow:
    a registry lookup per call)."""
    return len(data) if isinstance(data, list) else self.get_batch_size(data)


async def inbound_call(self, data):
    record = TIMING.get() or Timing()  # a call from outside an HTTP request still counts in the stats
    own = state(self)
    job = Job(time.time(), data, self._loop.create_future())
    record.enqueue = job.enqueue_time
    own.records[id(job)] = record
    self._queue.append(job)
    async with self._wake_event:
        self._wake_event.notify_all()
    ok = False
    try:
        result = await job.future
        ok = not isinstance(result, Exception)
        return result
    finally:
        own.records.pop(id(job), None)
        own.stats.request_done(record, items(self, data), ok, time.time())


async def outbound_call(self, inputs_info, training: bool = False):
    own = state(self)
    records = [own.records.get(own.roots.pop(id(job), id(job))) for job in inputs_info]
    try:
        size = sum(items(self, job.data) for job in inputs_info)
    except Exception:  # the stock code falls back to counting requests too
        size = len(inputs_info)
    start = time.time()
    try:
        await stock_outbound_call(self, inputs_info, training)
    finally:
        seconds = time.time() - start
        own.stats.batch_done(size, seconds)
        for record in records:
            if record is not None:
                record.add_batch(start, seconds, size)


def split_job(self, job, split_indexes):
    first, second = stock_split_job(self, job, split_indexes)
    roots = state(self).roots
    root = roots.pop(id(job), id(job))
    roots[id(first)] = roots[id(second)] = root
    return first, second


def apply() -> None:
    CorkDispatcher.inbound_call = inbound_call
    CorkDispatcher.outbound_call = outbound_call
    CorkDispatcher.split_job = split_job

"""The data plane of one worker, under every protocol: the models it serves, readiness, the V2 model
metadata, Triton's model configuration and statistics, admission and inference. The protocol layers
are thin: HTTP (service/http.py: the JSON API, the upload, V2 REST) and gRPC (service/oip_grpc.py)
decode a request into one InferRequest, call `DataPlane.predict`, and encode what it returns; every
refusal is a `service.errors.Refused`, whose kind says its HTTP status and gRPC code.

    plane = DataPlane(settings, "model_serving")      # settings as an argument: no globals
    plane.attach({name: ServedModel.start(...)}, placement)
    model = plane.model("mnist_cnn", version=None)     # NOT_FOUND, NOT_READY
    request, rows = await plane.predict(model, nbytes, decoding, timing)

Admission, the same for every protocol (`predict`): the bytes the request brings in memory
(MAX_INFLIGHT_BYTES, service/limits.py), then a place in its model's batcher at the recent mean
request size (its deadline, MODELS__<NAME>__MAX_LATENCY_MS, service/batching.py), both before the
request is decoded; then its rows are queued with their real size (admitted again by deadline), batched
with the other requests of the model, and answered. A refusal costs neither the decoding nor the memory.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

from models.formats import FORMATS
from service import oip
from service.batching import Batcher, CostModel
from service.errors import NOT_READY, ClientGone, Kind, Refused, too_many
from service.interface import InferRequest, ModelInterface, interfaces
from service.limits import InflightBytes
from service.metrics import ModelMetrics
from service.settings import ServiceSettings
from service.stats_board import StatsBoard
from service.timing import Timing, TritonStats

# A request expected to wait longer than this in its batcher watches its connection meanwhile (where
# its protocol can tell): when the client goes away, its rows are dropped from the queue instead of
# computed. Shorter waits are not worth a watcher task per request.
WATCH_DISCONNECT_S = 0.05


class ServedModel:
    """One model served in this worker: what it speaks (its interface and settings), the store's version
    behind it, its backend, its batcher and its Triton statistics."""

    __slots__ = ("interface", "tag", "metadata", "number", "backend", "batcher", "stats")

    def __init__(
        self,
        interface: ModelInterface,
        tag: str,
        metadata: dict,
        number: int,
        backend,
        batcher: Batcher,
        stats: TritonStats,
    ) -> None:
        self.interface = interface
        self.tag = tag  # the BentoML tag, name:version
        self.metadata = metadata  # the stored version's metadata (metrics, parity, files)
        self.number = number  # the version's place among the model's versions in the store (oldest = 1)
        self.backend = backend  # models.backends.Backend
        self.batcher = batcher
        self.stats = stats

    @classmethod
    def start(
        cls,
        interface: ModelInterface,
        backend,
        tag: str,
        metadata: dict,
        number: int = 1,
        cost: CostModel | None = None,
        metrics: bool = True,
        board: StatsBoard | None = None,
    ) -> ServedModel:
        """The model with its batcher, observed by its Triton statistics, (`metrics`) its Prometheus
        metrics and (`board`) the statistics shared with the other workers."""
        stats = TritonStats()
        version = str(number)
        observers = [stats, *([ModelMetrics(interface.name, version)] if metrics else [])]
        if board is not None:
            observers.append(board.watch(interface.name, version, stats))
        limits = interface.limits
        batcher = Batcher(
            interface.name,
            backend,
            interface.spec.input_shape,
            limits.max_batch_size,
            limits.max_latency_ms / 1000,
            cost=cost,
            allocate=getattr(backend, "allocate", None),  # pinned host memory on a GPU
            observers=observers,
            latency_setting=limits.setting("max_latency_ms"),
            queue_delay_s=limits.queue_delay_us / 1e6,
        )
        return cls(interface, tag, metadata, number, backend, batcher, stats)

    @property
    def name(self) -> str:
        return self.interface.name

    @property
    def version(self) -> str:
        """The Open Inference Protocol's version, an integer as Triton's clients expect (perf_analyzer
        parses it as one): the n-th registered version of the model in the store. The BentoML tag
        is in /status and the V2 model config's parameters."""
        return str(self.number)

    @property
    def bentoml_version(self) -> str:
        return self.tag.split(":", 1)[1]

    def serves(self, version: str | None) -> bool:
        """Whether a request for `version` (None: any) is this model's: its integer or BentoML version."""
        return version is None or version in (self.version, self.bentoml_version)

    def status(self) -> dict:
        limits, cost = self.interface.limits, self.batcher.cost
        return {
            "tag": self.tag,
            "v2_version": self.version,
            **self.backend.describe(),
            "input": self.metadata.get("io", {}).get("input"),
            "test_metrics": {k: v for k, v in self.metadata.items() if k.startswith("test_")},
            "batching": {
                "max_batch_size": limits.max_batch_size,
                "max_latency_ms": limits.max_latency_ms,
                "queue_delay_us": limits.queue_delay_us,
                "cost_ms": {"fixed": cost.fixed * 1e3, "per_row": cost.per_row * 1e3},
            },
        }


class DataPlane:
    """The worker's served models and everything every protocol asks of them. `attach()` gives it the
    models (the service does, once they are loaded and warmed up); until then it is not ready and
    refuses predictions with NOT_READY."""

    def __init__(
        self,
        settings: ServiceSettings,
        server_name: str,
        models: dict[str, ModelInterface] | None = None,
    ) -> None:
        self.settings = settings
        self.server_name = server_name
        self.interfaces = interfaces(settings) if models is None else models
        self.models: dict[str, ServedModel] = {}
        self.memory = InflightBytes(settings.inflight_bytes_budget())
        self.max_concurrency = settings.max_concurrency
        self.timeout_s = settings.request_timeout_s
        # the requests of every protocol this worker holds now: their tasks and when they came in; a
        # watchdog cancels those past REQUEST_TIMEOUT_S, checking every `_period` seconds (one timer for
        # all of them: asyncio.timeout per request cost ~5 % of a call's CPU)
        self._started: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._period = max(0.01, min(1.0, self.timeout_s / 10))
        self.workers = settings.worker_count()
        self.board: StatsBoard | None = None  # the statistics shared between workers
        self.placement: dict = {}
        self._label = ""  # Server-Timing's backend: "onnx/cpu"

    # --- the worker's models

    def attach(
        self, models: dict[str, ServedModel], placement: dict, board: StatsBoard | None = None
    ) -> None:
        self.models = models
        self.board = board
        self.placement = placement
        self._label = f"{placement['backend']}/{placement['device']}"

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model of a request: NOT_FOUND for an unknown model or version, NOT_READY while
        the worker's models load."""
        if name not in self.interfaces:
            raise Refused(Kind.NOT_FOUND, f"unknown model {name!r}; served: {sorted(self.interfaces)}")
        model = self.models.get(name)
        if model is None:
            raise Refused(Kind.NOT_READY, NOT_READY)
        if not model.serves(version):
            raise Refused(
                Kind.NOT_FOUND,
                f"{name} version {version!r} is not served; served: {model.version!r} ({model.tag})",
            )
        return model

    async def close(self) -> None:
        """Answer the requests in flight, then stop the batchers."""
        for model in self.models.values():
            await model.batcher.close()

    # --- admission and inference

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def enter(self) -> asyncio.Task:
        """The current task's request is in flight: TOO_MANY past MAX_CONCURRENCY (a generous hard
        cap; a count is the wrong measure of cost, which admission by bytes and deadline is). It is
        cancelled once past REQUEST_TIMEOUT_S (within a tenth of it, at most a second, later): its
        caller answers TIMED_OUT when `timed_out(task)` says so. `leave(task)` when answered."""
        if len(self._started) >= self.max_concurrency:
            raise Refused(Kind.TOO_MANY, too_many(self.max_concurrency))
        task = asyncio.current_task()
        self._started[task] = time.monotonic()
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._period, self._watch)
        return task

    def leave(self, task: asyncio.Task) -> None:
        self._started.pop(task, None)
        self._expired.discard(task)

    def timed_out(self, task: asyncio.Task) -> bool:
        """After a CancelledError: whether the watchdog cancelled `task` for REQUEST_TIMEOUT_S (then the
        cancellation is taken back, so that the caller can answer)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _watch(self) -> None:
        self._watchdog = None
        oldest = time.monotonic() - self.timeout_s
        for task, started in self._started.items():
            if started < oldest and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._started:
            self._watchdog = asyncio.get_running_loop().call_later(self._period, self._watch)

    async def predict(
        self,
        model: ServedModel,
        nbytes: int,
        decoding: Coroutine[Any, Any, InferRequest],
        timing: Timing,
        disconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[InferRequest, np.ndarray]:
        """A request through admission to its model's output rows: its `nbytes` held in the worker's
        budget and a place in the batcher reserved at the recent mean request size (OVERLOADED at once
        otherwise, `decoding` never run), then `decoding` (a 4xx there gives the reservation back),
        then its rows batched. `disconnected`: returns when the client goes away (ClientGone then, its
        rows never computed if still queued)."""
        try:
            self.memory.hold(nbytes)
        except BaseException:
            decoding.close()
            raise
        try:
            batcher = model.batcher
            try:
                batcher.reserve()
            except BaseException:
                decoding.close()
                raise
            try:
                request = await decoding
            except BaseException:
                batcher.release()
                raise
            queued = batcher.submit(request.array, timing, reserved=True)
            if disconnected is None or queued.expected_s < WATCH_DISCONNECT_S:
                return request, await batcher.result(queued)
            return request, await _unless_gone(batcher.result(queued), disconnected())
        finally:
            self.memory.release(nbytes)

    def server_timing(self, timing: Timing) -> str:
        return timing.header(self._label)

    # --- metadata, configuration, statistics

    def server_metadata(self) -> dict:
        import bentoml

        return oip.server_metadata(self.server_name, bentoml.__version__)

    def metadata(self, model: ServedModel) -> dict:
        """The V2 model metadata of a served model."""
        return oip.model_metadata(model.interface, model.version, FORMATS[model.backend.kind].triton[0])

    def config(self, model: ServedModel) -> dict:
        """Triton's model configuration of a served model."""
        kind = "KIND_GPU" if model.backend.device == "cuda" else "KIND_CPU"
        triton = FORMATS[model.backend.kind].triton
        return oip.model_config(model.interface, model.version, triton, kind, self.workers, model.tag)

    def statistics(self, names: list[str] | None = None) -> list[dict]:
        """Triton's `model_stats` of the models named (all by default), summed over the workers."""
        if not self.ready:
            raise Refused(Kind.NOT_READY, NOT_READY)
        totals = self.board.totals() if self.board else {n: m.stats for n, m in self.models.items()}
        return [totals[name].as_triton(name, self.models[name].version) for name in names or self.models]

    def status(self) -> dict:
        """/status: what serves what, where, with which settings (secrets as "**********")."""
        import bentoml

        return {
            "ready": self.ready,
            "worker": {"index": bentoml.server_context.worker_index, "pid": os.getpid()},
            "workers": self.workers,
            "placement": self.placement,
            # this worker's admission by bytes: held now, the most it held, its budget (MAX_INFLIGHT_BYTES)
            "inflight_bytes": {
                "held": self.memory.held,
                "peak": self.memory.peak,
                "budget": self.memory.budget,
            },
            "requests_in_flight": self.in_flight,
            "settings": self.settings.model_dump(mode="json"),
            "models": {name: model.status() for name, model in self.models.items()},
        }


async def _unless_gone(result: Awaitable[np.ndarray], gone: Awaitable[None]) -> np.ndarray:
    """`result`, unless `gone` returns first (ClientGone; the result is cancelled: its queued rows are
    never computed)."""
    result = asyncio.ensure_future(result)
    watcher = asyncio.ensure_future(gone)
    try:
        done, _ = await asyncio.wait((result, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # this task was cancelled (REQUEST_TIMEOUT_S): so is the request
        watcher.cancel()
        result.cancel()
        raise
    watcher.cancel()
    if result in done:
        return result.result()
    result.cancel()
    raise ClientGone()

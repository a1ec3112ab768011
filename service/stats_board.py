"""Triton's statistics summed over the server's workers. Each worker batches its own requests and
keeps its own counts (service/timing.py `TritonStats`); it publishes them as a file in a folder all
workers share (`triton_stats/` in the Prometheus multiprocess folder BentoML gives its workers and
empties when the server starts), at most every `period` seconds and only when they changed.
`/v2/models/stats` (and gRPC's ModelStatistics) answer with the answering worker's live counts plus
the others' files: every count of a worker's snapshot is from one moment, so the sums stay
consistent (perf_analyzer checks that the compute counts agree), at most `period` old for the
others. A worker that exits leaves its last file: counts since the server started, as Prometheus
keeps a dead worker's counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from service.timing import TritonStats

logger = logging.getLogger("bentoml.model_serving")
FOLDER_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by `bentoml serve` in every worker


class StatsBoard:
    def __init__(self, folder: Path | None, period: float = 0.1, worker: str | None = None) -> None:
        self.folder = folder
        self.period = period
        self.worker = worker or str(os.getpid())  # this worker's file: <worker>.json
        self.models: dict[str, tuple[str, TritonStats]] = {}  # name -> (version, this worker's stats)
        self._pending: asyncio.TimerHandle | None = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls) -> StatsBoard:
        """Shared through the workers' Prometheus folder under `bentoml serve`; this worker alone
        elsewhere (an app run in-process)."""
        root = os.environ.get(FOLDER_ENV)
        return cls(Path(root) / "triton_stats" if root else None)

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / f"{self.worker}.json"

    def watch(self, name: str, version: str, stats: TritonStats) -> StatsBoard:
        """Publish `stats` of model `name`; returns the observer for its batcher (this board)."""
        self.models[name] = (version, stats)
        return self

    # the batcher's observer: a change schedules one write `period` seconds later
    def batch_done(self, *args) -> None:
        self._changed()

    def request_done(self, *args) -> None:
        self._changed()

    def _changed(self) -> None:
        if self.folder is None or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_later(self.period, self.write)

    def write(self) -> None:
        self._pending = None
        doc = {name: {"version": v, **stats.snapshot()} for name, (v, stats) in self.models.items()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)

    def totals(self) -> dict[str, TritonStats]:
        """Every model's statistics over all workers: this one's live counts + the others' files."""
        snapshots = {name: [stats.snapshot()] for name, (_, stats) in self.models.items()}
        if self.folder is not None:
            for path in self.folder.glob("*.json"):
                if path == self.path:
                    continue
                try:
                    doc = json.loads(path.read_text())
                except (OSError, ValueError):  # being replaced, or a worker that died mid-write
                    continue
                for name, snap in doc.items():
                    if name in self.models and snap.get("version") == self.models[name][0]:
                        snapshots[name].append(snap)
        return {name: TritonStats.total(snaps) for name, snaps in snapshots.items()}

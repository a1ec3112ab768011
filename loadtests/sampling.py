"""Resource sampling during a load test: the server's CPU and its workers' memory, the load generator's
CPU, and the GPU's utilisation and memory (NVML), every `period` seconds in a background thread.

CPU figures are rates over a time window (`summary(t0, t1)`), normally the window in which the load
generator was actually sending: start-up (imports, building request bodies) and shutdown of the
generator are left out, so that server % and generator % of one run add up to at most the machine's
CPUs x 100.
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
import psutil


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (nan once it has exited)."""
    procs = tree(pid)
    if not procs:
        return float("nan")
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def worker_rss_mb(pid: int) -> list[float]:
    """Resident memory (MiB) of each worker process of a server (the arbiter's descendants; the
    process itself when it has none, as uvicorn with one worker)."""
    rss = []
    procs = tree(pid)
    for proc in procs[1:] or procs[:1]:
        try:
            rss.append(proc.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            pass
    return rss


class Gpu:
    """NVML handle of GPU 0 (utilisation % over the driver's last sample period, memory used)."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)

    def read(self) -> tuple[float, float]:
        util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
        used = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20
        return float(util), float(used)

    def close(self) -> None:
        self.nvml.nvmlShutdown()


@dataclass
class Sample:
    t: float  # time.time()
    server_cpu_s: float
    worker_rss_mb: float
    generator_cpu_s: float  # nan without a generator
    gpu_util_pct: float  # nan without a GPU
    gpu_mem_mb: float


class ResourceSampler(threading.Thread):
    """Samples a server (and optionally a load generator and the GPU) until `stop()`."""

    def __init__(self, server_pid: int, period: float = 1.0, gpu: bool = False) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.period = server_pid, period
        self.generator_pid: int | None = None
        self.gpu = Gpu() if gpu else None
        self.samples: list[Sample] = []
        self._done = threading.Event()

    def sample(self) -> Sample:
        gen = cpu_seconds(self.generator_pid) if self.generator_pid else float("nan")
        util, mem = self.gpu.read() if self.gpu else (float("nan"), float("nan"))
        return Sample(
            time.time(), cpu_seconds(self.server_pid), sum(worker_rss_mb(self.server_pid)), gen, util, mem
        )

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append(self.sample())
            self._done.wait(self.period)

    def stop(self, path: Path | None = None) -> None:
        """Stop sampling (one last sample), close NVML, write the samples as CSV if a path is given."""
        self._done.set()
        self.join()
        self.samples.append(self.sample())
        if self.gpu:
            self.gpu.close()
        if path is not None:
            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow([f.name for f in fields(Sample)])
                writer.writerows(astuple(s) for s in self.samples)

    def summary(self, t0: float | None = None, t1: float | None = None) -> dict:
        """Figures over [t0, t1] (time.time(); default: the whole sampling): CPU % of the server and
        the generator (100 = one core), GPU busy % (mean) and memory, workers' memory (final, peak,
        first, growth %)."""
        s = self.samples
        t0 = s[0].t if t0 is None else max(t0, s[0].t)
        t1 = s[-1].t if t1 is None else min(t1, s[-1].t)
        t = np.array([x.t for x in s])

        def rate(values: list[float]) -> float:  # cumulative seconds -> % of one core over the window
            v = np.array(values)
            known = ~np.isnan(v)  # the generator: not started yet / exited
            tk, vk = t[known], np.maximum.accumulate(v[known])
            if t1 <= t0 or len(tk) < 2 or tk[0] > t0 + self.period or tk[-1] < t1 - self.period:
                return float("nan")
            return float(100 * (np.interp(t1, tk, vk) - np.interp(t0, tk, vk)) / (t1 - t0))

        inside = [x for x in s if t0 <= x.t <= t1] or s
        rss = [x.worker_rss_mb for x in s]
        util = [x.gpu_util_pct for x in inside]
        gpu_mem = [x.gpu_mem_mb for x in s]
        return {
            "server_cpu_pct": rate([x.server_cpu_s for x in s]),
            "generator_cpu_pct": rate([x.generator_cpu_s for x in s]),
            "gpu_util_pct": float(np.mean(util)),
            "gpu_mem_mb": gpu_mem[-1],
            "gpu_mem_growth_pct": 100 * (gpu_mem[-1] - gpu_mem[0]) / gpu_mem[0]
            if gpu_mem[0]
            else float("nan"),
            "rss_mb": rss[-1],
            "rss_first_mb": rss[0],
            "rss_peak_mb": max(rss),
            "rss_growth_pct": 100 * (rss[-1] - rss[0]) / rss[0] if rss[0] else float("nan"),
        }

"""Load-test the service for every device x backend x users combination and write one report.

    python -m loadtests.run                                   # cpu, onnx + torchscript, 1/8/32 users
    python -m loadtests.run --devices cpu,cuda --duration 60 --housing-rows 1000
    python -m loadtests.run --servers ours,stock --backends onnx   # vs stock BentoML, same model.onnx

For each device/backend it starts `bentoml serve` on a free 127.0.0.1 port, waits for /readyz, runs
Locust headless once per endpoint and user count (bounded by --duration), then stops the server.
Output folder: Locust's CSV + HTML per run, results.json, report.md (a table per endpoint) and plots.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

from loadtests.report import batch_histogram, locust_stats, mean_batch, write_report
from loadtests.server import REPO, SERVERS, Server

logger = logging.getLogger("loadtests.run")

ENDPOINTS = {  # endpoint -> (Locust user class, items per request option)
    "predict_housing": ("HousingUser", "housing_rows"),
    "classify_digits": ("DigitsJsonUser", "mnist_images"),
    "classify_digit_image": ("DigitsPngUser", None),
}
STOCK_ENDPOINTS = ("predict_housing", "classify_digits")  # loadtests/stock_service.py: ONNX on CPU only


def csv_list(kind=str):
    return lambda text: [kind(v) for v in text.split(",") if v]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--devices", type=csv_list(), default=["cpu"], help="cpu,cuda (cuda skipped without a GPU)"
    )
    p.add_argument("--backends", type=csv_list(), default=["onnx", "torchscript"])
    p.add_argument(
        "--servers",
        type=csv_list(),
        default=["ours"],
        help="ours = service/service.py; stock = the same model.onnx on stock BentoML "
        "(loadtests/stock_service.py)",
    )
    p.add_argument("--users", type=csv_list(int), default=[1, 8, 32], help="concurrent Locust users")
    p.add_argument("--endpoints", type=csv_list(), default=list(ENDPOINTS), help="endpoints to load")
    p.add_argument("--duration", type=int, default=20, help="seconds per Locust run")
    p.add_argument("--housing-rows", type=int, default=1, help="rows per housing request")
    p.add_argument("--mnist-images", type=int, default=1, help="images per /classify_digits request")
    p.add_argument(
        "--processes", type=int, default=1, help="Locust worker processes (distributed mode if > 1)"
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default reports/<timestamp>)")
    return p


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the BentoML server's workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def worker_rss_mb(pid: int) -> list[float]:
    """Resident memory (MiB) of each worker process of the server (the arbiter's children)."""
    rss = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            rss.append(proc.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            pass
    return rss


class MemorySampler(threading.Thread):
    """Samples the workers' resident memory every `period` seconds while a run lasts."""

    def __init__(self, pid: int, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float]] = []  # (seconds since start, total worker RSS MiB)
        self._done = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._done.is_set():
            self.samples.append((time.monotonic() - t0, sum(worker_rss_mb(self.pid))))
            self._done.wait(self.period)

    def stop(self, path: Path | None = None) -> dict:
        """Stop, write the samples as CSV (if a path is given) and summarize: final and peak RSS and
        the growth over the run in %."""
        self._done.set()
        self.join()
        if path is not None:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows([("seconds", "worker_rss_mb"), *self.samples])
        rss = [r for _, r in self.samples]
        return {
            "rss_mb": rss[-1],
            "rss_growth_pct": 100 * (rss[-1] - rss[0]) / rss[0],
            "rss_peak_mb": max(rss),
        }


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (Locust, once run_locust has waited for it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_locust(url: str, endpoint: str, users: int, args, prefix: Path) -> None:
    user_class, _ = ENDPOINTS[endpoint]
    cmd = [
        sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
        "--host", url, "-u", str(users), "-r", str(users), "-t", f"{args.duration}s", "--stop-timeout", "10",
        "--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary", "--loglevel", "WARNING",
        "--housing-rows", str(args.housing_rows), "--mnist-images", str(args.mnist_images),
        "--checks-file", f"{prefix}-checks", user_class,
    ]  # fmt: skip
    if args.processes > 1:
        cmd[4:4] = ["--processes", str(args.processes)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.duration + 120)
    (prefix.parent / f"{prefix.name}.log").write_text(proc.stdout + proc.stderr)
    if not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust wrote no stats for {prefix.name}:\n{proc.stderr[-2000:]}")


def checked_count(prefix: Path, endpoint: str) -> int:
    return sum(json.loads(Path(f).read_text()).get(endpoint, 0) for f in glob.glob(f"{prefix}-checks-*.json"))


def measure(
    server: Server, name: str, device: str, backend: str, endpoint: str, users: int, args, out: Path
) -> dict:
    prefix = out / f"{name}-{device}-{backend}-{endpoint}-u{users}"
    before = batch_histogram(requests.get(f"{server.url}/metrics", timeout=10).text)
    cpu0, locust_cpu0 = cpu_seconds(server.proc.pid), children_cpu_seconds()
    memory = MemorySampler(server.proc.pid)
    memory.start()
    run_locust(server.url, endpoint, users, args, prefix)
    cpu = cpu_seconds(server.proc.pid) - cpu0  # per second of load (Locust's start-up excluded)
    locust_cpu = children_cpu_seconds() - locust_cpu0  # the load generator, start-up included
    rss = memory.stop(Path(f"{prefix}-memory.csv"))
    after = batch_histogram(requests.get(f"{server.url}/metrics", timeout=10).text)
    stats = locust_stats(Path(f"{prefix}_stats.csv"))[endpoint]
    option = ENDPOINTS[endpoint][1]
    items = getattr(args, option) if option else 1
    checked = checked_count(prefix, endpoint)
    row = {
        "server": name, "device": device, "backend": backend, "endpoint": endpoint, "users": users, **stats,
        "items_per_request": items, "items_per_s": stats["rps"] * items,
        "mean_batch": mean_batch(before, after, endpoint), "server_cpu_pct": 100 * cpu / args.duration,
        "locust_cpu_pct": 100 * locust_cpu / args.duration,
        # responses the locustfile checked; Locust's CSV is written just before the last in-flight
        # requests finish, so it can count a few fewer than were checked
        "checked": checked, **rss,
    }  # fmt: skip
    logger.info(
        "%s %s/%s %s users=%d: %.0f req/s p50 %.1f ms p99 %.1f ms max %.0f ms failures %d, "
        "workers %.0f MiB (%+.1f %%)",
        name, device, backend, endpoint, users, row["rps"], row["p50_ms"], row["p99_ms"], row["max_ms"],
        row["failures"], row["rss_mb"], row["rss_growth_pct"],
    )  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    out = args.out or Path("reports") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for device in args.devices:
        if device == "cuda" and not cuda_available():
            skipped.append("cuda: skipped, no GPU on this machine (torch.cuda.is_available() is False)")
            logger.warning(skipped[-1])
            continue
        for name in args.servers:
            for backend in args.backends:
                endpoints = args.endpoints
                if name == "stock":
                    if backend != "onnx" or device != "cpu":
                        skipped.append(
                            f"stock/{device}/{backend}: skipped, the stock baseline is ONNX on CPU"
                        )
                        continue
                    endpoints = [e for e in endpoints if e in STOCK_ENDPOINTS]
                env = {"MODEL_BACKEND": backend, "MODEL_DEVICE": device}
                with Server(env, target=SERVERS[name]) as server:
                    logger.info("serving %s %s/%s at %s", name, device, backend, server.url)
                    for endpoint in endpoints:
                        for users in args.users:
                            results.append(measure(server, name, device, backend, endpoint, users, args, out))
    header = "\n".join([
        "# Load test report", "",
        f"Command: `python -m loadtests.run {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"Machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"shared by Locust and the server. {args.duration} s per run; {args.housing_rows} row(s) per "
        f"housing request, "
        f"{args.mnist_images} image(s) per /classify_digits request; Locust processes: {args.processes}.",
        *[f"- {s}" for s in skipped], "",
    ])  # fmt: skip
    report = write_report(results, out, header)
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()

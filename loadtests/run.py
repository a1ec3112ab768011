"""Load-test the service for every server x device x backend x workers x users combination; one report.

    python -m loadtests.run                                   # cpu, onnx + torchscript, 1/8/32 users
    python -m loadtests.run --devices cpu,cuda --offline reports/offline.json   # CPU vs GPU
    python -m loadtests.run --devices cuda --workers 1,2,4 --backends torchscript   # workers per GPU
    python -m loadtests.run --servers ours,stock --backends onnx   # vs stock BentoML, same model.onnx
    python -m loadtests.run --combos cpu/onnx,cuda/torchscript/4,cuda/aoti/4 --endpoints classify_digits \
        --mnist-images 1,64 --users 32    # exactly these device/backend[/workers], two sizes per start

For each combination it starts `bentoml serve` on a free 127.0.0.1 port, waits for every worker to
be ready, runs Locust headless once per endpoint and user count (bounded by --duration), then stops
the server. A combination that cannot start (no GPU, a backend the machine lacks) is recorded in the
report with its error and the sweep goes on. results.json, report.md (a table per endpoint) and the
plots are rewritten after every run, so an interrupted sweep keeps what it measured. The exit status
is 1 when any combination or run failed (each listed at the top of report.md).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from loadtests.catalog import endpoints
from loadtests.report import batch_histogram, locust_stats, mean_batch, write_report
from loadtests.sampling import ResourceSampler
from loadtests.server import REPO, SERVERS, Server
from models import registry
from models.device import available_cpus, nvidia_gpus
from models.formats import FORMATS
from training.data import default_data_dir, require_datasets
from training.errors import DatasetMissingError

logger = logging.getLogger("loadtests.run")

ENDPOINTS = endpoints()  # every model's endpoints (loadtests/catalog.py): report name -> LoadEndpoint
DEFAULT_ENDPOINTS = ["predict_housing", "classify_digits", "classify_digit_image"]
# the baselines (loadtests/stock_service.py, loadtests/fastapi_baseline.py): ONNX on CPU, the JSON
# endpoints of housing_mlp and mnist_cnn
BASELINE_ENDPOINTS = tuple(e.name for e in ENDPOINTS.values() if e.kind == "json" and e.stock_api)


class GeneratorError(RuntimeError):
    """Locust itself failed (not the server): its own error, in one line."""


def csv_list(kind=str):
    return lambda text: [kind(v) for v in text.split(",") if v]


def combo_list(text: str) -> list[tuple[str, str, int]]:
    """`cpu/onnx,cuda/torchscript/4` -> [(device, backend, workers)] (workers 0 = the service default)."""
    combos = []
    for item in (v for v in text.split(",") if v):
        parts = item.split("/")
        if len(parts) not in (2, 3) or parts[0] not in ("cpu", "cuda") or parts[1] not in FORMATS:
            raise argparse.ArgumentTypeError(
                f"{item!r}: a combination is device/backend[/workers], device cpu or cuda, backend one of "
                f"{', '.join(FORMATS)}"
            )
        try:
            workers = int(parts[2]) if len(parts) == 3 else 0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: workers must be a number") from None
        combos.append((parts[0], parts[1], workers))
    return combos


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--devices", type=csv_list(), default=["cpu"], help="cpu,cuda")
    p.add_argument("--backends", type=csv_list(), default=list(FORMATS), help="formats (models/formats.py)")
    p.add_argument(
        "--servers",
        type=csv_list(),
        default=["ours"],
        help="ours = service/service.py; stock = the same model.onnx on stock BentoML "
        "(loadtests/stock_service.py); fastapi = on plain FastAPI (loadtests/fastapi_baseline.py)",
    )
    p.add_argument(
        "--workers", type=csv_list(int), default=[0], help="WORKERS of the server (0 = the service default)"
    )
    p.add_argument(
        "--combos",
        type=combo_list,
        default=None,
        help="exactly these device/backend[/workers] combinations (e.g. cpu/onnx,cuda/torchscript/4) "
        "instead of every --devices x --backends x --workers",
    )
    p.add_argument("--users", type=csv_list(int), default=[1, 8, 32], help="concurrent Locust users")
    p.add_argument(
        "--endpoints",
        type=csv_list(),
        default=DEFAULT_ENDPOINTS,
        help=f"endpoints to load, of: {', '.join(ENDPOINTS)} (v2_*: the Open Inference Protocol)",
    )
    p.add_argument("--duration", type=int, default=20, help="seconds per Locust run")
    p.add_argument(
        "--housing-rows", type=csv_list(int), default=[1], help="rows per housing request (several: 1,1000)"
    )
    p.add_argument(
        "--mnist-images",
        type=csv_list(int),
        default=[1],
        help="images per /classify_digits and V2 MNIST request (several: 1,64, each at one server start)",
    )
    p.add_argument(
        "--items",
        type=csv_list(int),
        default=[1],
        help="items per request of the other models' endpoints (loadtests/catalog.py)",
    )
    p.add_argument(
        "--processes", type=int, default=1, help="Locust worker processes (distributed mode if > 1)"
    )
    p.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), help="datasets the request bodies come from"
    )
    p.add_argument(
        "--offline",
        type=Path,
        default=None,
        help="results of `python -m loadtests.offline` (its --out): adds served / offline throughput",
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default reports/<timestamp>)")
    return p


def error_line(log: str) -> str:
    """The line of a log (Locust's, or a server's that failed to start) that says what went wrong."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln.split(":", 1)[0] or ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:500]


def request_sizes(endpoint: str, args) -> list[int]:
    """The items per request to run an endpoint with: --housing-rows, --mnist-images or --items (1 for
    uploads)."""
    option = ENDPOINTS[endpoint].items_option
    return getattr(args, option) if option else [1]


def run_locust(
    url: str,
    endpoint: str,
    users: int,
    items: int,
    args,
    prefix: Path,
    sampler: ResourceSampler,
    grpc_host: str = "127.0.0.1:8001",
) -> None:
    user_class, option = ENDPOINTS[endpoint].user, ENDPOINTS[endpoint].items_option
    sizes = {"housing_rows": 1, "mnist_images": 1, "items": 1, **({option: items} if option else {})}
    cmd = [
        sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
        "--host", url, "-u", str(users), "-r", str(users), "-t", f"{args.duration}s", "--stop-timeout", "10",
        "--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary", "--loglevel", "WARNING",
        "--housing-rows", str(sizes["housing_rows"]), "--mnist-images", str(sizes["mnist_images"]),
        "--items", str(sizes["items"]), "--grpc-host", grpc_host,
        "--checks-file", f"{prefix}-checks", user_class,
    ]  # fmt: skip
    if args.processes > 1:
        cmd[3:3] = ["--processes", str(args.processes)]  # a Locust option, before -f's value
    env = {**os.environ, "DATA_DIR": str(args.data_dir)}
    log = prefix.parent / f"{prefix.name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler.generator_pid = proc.pid
        try:
            proc.wait(timeout=args.duration + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not Path(f"{prefix}_stats.csv").exists():
        raise GeneratorError(f"locust wrote no stats (exit {proc.returncode}): {error_line(log.read_text())}")


def checks(prefix: Path, endpoint: str) -> tuple[int, float, float, dict]:
    """(responses checked, first request's start, last request's end, mean Server-Timing queue and
    compute ms) over the Locust processes, from the locustfile's --checks-file summaries: the load's
    own window, Locust's start-up and shutdown (loading the test splits, stopping users) outside it."""
    summaries = [json.loads(Path(f).read_text()) for f in glob.glob(f"{prefix}-checks-*.json")]
    windows = [s["window"] for s in summaries if s["window"]]
    if not windows:
        raise GeneratorError(f"locust made no {endpoint} request")
    checked = sum(s["checked"].get(endpoint, 0) for s in summaries)
    timed = [s.get("timing", {}).get(endpoint, [0, 0.0, 0.0]) for s in summaries]
    n = sum(t[0] for t in timed)
    split = {
        "queue_ms": sum(t[1] for t in timed) / n if n else float("nan"),
        "compute_ms": sum(t[2] for t in timed) / n if n else float("nan"),
    }
    return checked, min(w[0] for w in windows), max(w[1] for w in windows), split


def offline_ceilings(path: Path | None) -> dict[tuple[str, str, str], float]:
    """(device, backend, model) -> best offline items/s at a batch size the service can form."""
    if path is None:
        return {}
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    best: dict[tuple[str, str, str], float] = {}
    for row in json.loads(path.read_text()):
        if row["model"] in registry.models() and row["batch"] <= settings.model(row["model"]).max_batch_size:
            key = (row["device"], row["backend"], row["model"])
            best[key] = max(best.get(key, 0.0), row["items_per_s"])
    return best


def metrics_text(server: Server) -> str:
    """The server's Prometheus text ("" for a server without /metrics: the FastAPI baseline)."""
    response = requests.get(f"{server.url}/metrics", timeout=10)
    return response.text if response.status_code == 200 else ""


def measure(
    server: Server, combo: dict, endpoint: str, users: int, items: int, args, out: Path, ceilings: dict
) -> dict:
    name, device, backend = combo["server"], combo["device"], combo["backend"]
    size = f"-x{items}" if items != 1 else ""
    prefix = out / f"{name}-{device}-{backend}-w{server.workers}-{endpoint}{size}-u{users}"
    for stale in glob.glob(f"{glob.escape(str(prefix))}[-_.]*"):  # a previous run into the same folder
        Path(stale).unlink()
    before = batch_histogram(metrics_text(server))
    sampler = ResourceSampler(server.proc.pid, period=0.5, gpu=device == "cuda")
    sampler.start()
    try:
        run_locust(server.url, endpoint, users, items, args, prefix, sampler, server.grpc_address)
    finally:
        sampler.stop(Path(f"{prefix}-resources.csv"))
    after = batch_histogram(metrics_text(server))
    stats = locust_stats(Path(f"{prefix}_stats.csv")).get(endpoint)
    if stats is None:  # Locust ran but sent nothing (its users failed to start)
        log = prefix.parent / f"{prefix.name}.log"
        raise GeneratorError(f"locust sent no {endpoint} request: {error_line(log.read_text())}")
    checked, t0, t1, split = checks(prefix, endpoint)
    # Throughput over the load's window (Locust's own req/s divides by the time since its master
    # started, start-up included, in distributed mode).
    stats["rps"] = stats["requests"] / max(t1 - t0, 1e-3)
    model, api = ENDPOINTS[endpoint].model, ENDPOINTS[endpoint].stock_api
    ceiling = ceilings.get((device, backend, model))
    row = {
        **combo, "workers": server.workers, "endpoint": endpoint, "model": model, "users": users, **stats,
        "items_per_request": items, "items_per_s": stats["rps"] * items,
        "offline_pct": 100 * stats["rps"] * items / ceiling if ceiling else float("nan"),
        # requests per batch: of the model (ours; uploads join its batches), of the API (stock BentoML)
        "mean_batch": mean_batch(before, after, model if name == "ours" else api or ""),
        # where the time went (the answers' Server-Timing): the rest is HTTP, parsing, the network
        **split, "other_ms": stats["avg_ms"] - split["queue_ms"] - split["compute_ms"],
        # responses the locustfile checked; Locust's CSV is written just before the last in-flight
        # requests finish, so it can count a few fewer than were checked
        "checked": checked, "load_seconds": t1 - t0, **sampler.summary(t0, t1),
    }  # fmt: skip
    logger.info(
        "%s %s/%s w%d %s x%d users=%d: %.0f req/s p50 %.1f ms p99 %.1f ms max %.0f ms failures %d; "
        "CPU server %.0f %% generator %.0f %%; GPU %.0f %%; workers %.0f MiB (%+.1f %%)",
        name, device, backend, server.workers, endpoint, items, users, row["rps"], row["p50_ms"],
        row["p99_ms"],
        row["max_ms"], row["failures"], row["server_cpu_pct"], row["generator_cpu_pct"], row["gpu_util_pct"],
        row["rss_mb"], row["rss_growth_pct"],
    )  # fmt: skip
    return row


def sizes(values: list[int]) -> str:
    return " or ".join(map(str, values))


def header(args, argv: list[str] | None) -> str:
    """The report's title, command and machine (asked once per sweep: NVML, psutil)."""
    gpus, why = nvidia_gpus()
    return "\n".join([
        "# Load test report", "",
        f"Command: `python -m loadtests.run {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"Machine: {available_cpus()} CPUs usable ({psutil.cpu_count()} in the host), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, GPU: {', '.join(gpus) or 'none (' + why + ')'}; "
        f"the CPUs are shared by Locust and the server (CPU columns: 100 = one core, "
        f"{100 * available_cpus()} = all). {args.duration} s per run; {sizes(args.housing_rows)} row(s) "
        f"per housing request, {sizes(args.mnist_images)} image(s) per MNIST request; Locust processes: "
        f"{args.processes}.",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> Path:
    """The sweep; returns the report's path (see `sweep` for what went wrong in it)."""
    return sweep(argv)[0]


def sweep(argv: list[str] | None = None) -> tuple[Path, list[str]]:
    """The sweep: (report path, the problems recorded in it: combinations that could not start, runs
    whose generator or server failed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        require_datasets(args.data_dir)
    except DatasetMissingError as exc:
        raise SystemExit(f"error: the request bodies come from the test splits: {exc}") from None
    out = args.out or Path("reports") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    ceilings = offline_ceilings(args.offline)
    results: list[dict] = []
    problems: list[str] = []
    report = out / "report.md"
    intro = header(args, argv)

    def save() -> None:
        write_report(results, out, "\n".join([intro, *[f"- {s}" for s in problems], ""]))

    combos = args.combos or list(itertools.product(args.devices, args.backends, args.workers))
    for (device, backend, workers), name in itertools.product(combos, args.servers):
        label = f"{name}/{device}/{backend}" + (f"/workers={workers}" if workers else "")
        endpoints = args.endpoints
        if name != "ours":
            if backend != "onnx" or device != "cpu":
                problems.append(f"{label}: skipped, the {name} baseline is ONNX on CPU")
                continue
            endpoints = [e for e in endpoints if e in BASELINE_ENDPOINTS]
        env = {"MODEL_BACKEND": backend, "MODEL_DEVICE": device, "DATA_DIR": str(args.data_dir)}
        if workers:
            env["WORKERS"] = str(workers)
        try:
            server = Server(env, target=SERVERS[name])
        except RuntimeError as exc:
            problems.append(f"{label}: failed to start: {error_line(str(exc))}")
            logger.error(problems[-1])
            save()
            continue
        with server:
            logger.info("serving %s (%d workers) at %s", label, server.workers, server.url)
            combo = {"server": name, "device": device, "backend": backend}
            for endpoint, items, users in (
                (e, n, u) for e in endpoints for n in request_sizes(e, args) for u in args.users
            ):
                run = f"{label} {endpoint} x{items} users={users}"
                try:
                    results.append(measure(server, combo, endpoint, users, items, args, out, ceilings))
                except GeneratorError as exc:
                    problems.append(f"{run}: load generator failed: {exc}")
                    logger.error(problems[-1])
                except requests.RequestException as exc:  # the server went away mid-sweep
                    problems.append(f"{run}: server unreachable: {exc}")
                    logger.error(problems[-1])
                save()
    save()
    print(f"report: {report}" + (f" ({len(problems)} problem(s) listed at its top)" if problems else ""))
    return report, problems


if __name__ == "__main__":
    sys.exit(1 if sweep()[1] else 0)  # a run that failed shows in the exit status too

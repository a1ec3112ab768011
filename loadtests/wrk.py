"""Cross-check with a light load generator: wrk (C, one thread) against the service and baselines.

    python -m loadtests.wrk                      # ours + stock, the four cases below, 32 connections
    python -m loadtests.wrk --servers ours --cases housing_1 --duration 300     # a sustained run
    python -m loadtests.wrk --servers ours --cases mnist_64,v2_binary_mnist_64  # JSON vs V2 binary
    python -m loadtests.wrk --servers fastapi,before,ours --before-repo ../before   # before / after
    python -m loadtests.wrk --servers ours,ours:BENTOML_MIDDLEWARE=true   # a server with a setting

Locust (loadtests.run) checks every answer but spends a core of its own in Python; wrk only counts
status codes and costs a few % of a core, so it shows what the service does when the generator is
not the bottleneck (the load-test issue's targets are stated for such a generator). Needs the `wrk`
binary (Debian/Ubuntu: `apt-get install wrk`). Bodies are real test-split rows/images. Servers: `ours`
(this checkout), `stock` (stock BentoML), `fastapi` (plain FastAPI + ONNX Runtime, one uvicorn
process), `before` (the service of another checkout, --before-repo: e.g. `git worktree add ../before
<commit>`); `name:KEY=VALUE` starts it with one more environment variable. `cpu_ms` is the server's
CPU per request over wrk's run (all its processes).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from loadtests.catalog import LEGACY, endpoints
from loadtests.payloads import json_bodies, v2_bodies
from loadtests.protocol import v2_path
from loadtests.sampling import ResourceSampler
from loadtests.server import REPO, SERVERS, Server
from models import registry
from models.specs import HOUSING, MNIST

CASES = {  # name -> (endpoint, items per request, V2 model and binary tensors, or None for plain JSON)
    "housing_1": ("predict_housing", 1, None),
    "mnist_1": ("classify_digits", 1, None),
    "housing_1000": ("predict_housing", 1000, None),
    "mnist_64": ("classify_digits", 64, None),
    "v2_binary_mnist_1": ("v2_mnist_binary", 1, (MNIST.name, True)),
    "v2_binary_mnist_64": ("v2_mnist_binary", 64, (MNIST.name, True)),
    "v2_json_mnist_64": ("v2_mnist_json", 64, (MNIST.name, False)),
    "v2_binary_housing_1000": ("v2_housing_binary", 1000, (HOUSING.name, True)),
    "v2_json_housing_1000": ("v2_housing_json", 1000, (HOUSING.name, False)),
    # every other model of the registry: one item per request, JSON and V2 binary (e.g. digits_mlp_1)
    **{
        case: spec
        for name, entry in registry.models().items()
        if name not in LEGACY
        for case, spec in (
            (f"{name}_1", (entry.json.route.lstrip("/"), 1, None)),
            (f"v2_binary_{name}_1", (f"v2_{name}_binary", 1, (name, True))),
        )
    },
}
DEFAULT_CASES = ["housing_1", "mnist_1", "housing_1000", "mnist_64"]
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def baseline_has(case: str) -> bool:
    """Whether the stock-BentoML and FastAPI baselines serve the case: their JSON routes alone."""
    endpoint, _, v2 = CASES[case]
    return v2 is None and endpoints()[endpoint].stock_api is not None


def request(case: str) -> tuple[str, bytes, dict]:
    """(path, body, headers) of the case's request, from the test split."""
    endpoint, items, v2 = CASES[case]
    if v2 is None:
        return (
            f"/{endpoint}",
            json_bodies(endpoint, items, 1, seed=0)[0],
            {"Content-Type": "application/json"},
        )
    model, binary = v2
    body, headers = v2_bodies(model, items, 1, seed=0, binary=binary)[0]
    return v2_path(model), body, headers


def lua_script(body_file: Path, headers: dict) -> str:
    """POST the bytes of `body_file` (read whole: binary tensors pass unchanged) with `headers`."""
    lines = [
        'wrk.method = "POST"',
        f'local f = assert(io.open("{body_file}", "rb"))',
        'wrk.body = f:read("*a")',
    ]
    lines += ["f:close()", *(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())]
    return "\n".join(lines) + "\n"


def ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * UNITS[unit]


def parse_wrk(output: str) -> dict:
    """Requests/s, p50/p99/max latency (ms) and non-2xx count from `wrk --latency` output."""
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", output)
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, flags=re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "p50_ms": ms(dist["50"]),
        "p99_ms": ms(dist["99"]),
        "max_ms": ms(latency.group(3)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def prepare(case: str, scripts: Path) -> tuple[str, Path]:
    """The case's request path and wrk script (its body from the test split, in a file)."""
    path, body, headers = request(case)
    (scripts / f"{case}.body").write_bytes(body)
    script = scripts / f"{case}.lua"
    script.write_text(lua_script(scripts / f"{case}.body", headers))
    return path, script


def run_case(url: str, case: str, args, path: str, script: Path) -> dict:
    endpoint, items, _ = CASES[case]
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-s", str(script),
           f"{url}{path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60, check=True).stdout
    row = {"case": case, "endpoint": endpoint, "items_per_request": items, **parse_wrk(out)}
    row["items_per_s"] = row["rps"] * items
    return row


def server_of(label: str, before_repo: Path | None) -> Server:
    """The server of a --servers entry, `name[:KEY=VALUE]` (ONNX on the CPU)."""
    name, _, setting = label.partition(":")
    env = {"MODEL_BACKEND": "onnx", "MODEL_DEVICE": "cpu", **dict([setting.split("=", 1)] if setting else [])}
    if name == "before":
        return Server(env, target=SERVERS["ours"], repo=before_repo.resolve())
    return Server(env, target=SERVERS[name], repo=REPO)


def measure(server: Server, label: str, case: str, args, scripts: Path) -> dict:
    """One wrk run of a case against a server, with the server's CPU and memory over wrk's run."""
    path, script = prepare(case, scripts)
    time.sleep(args.pause)  # let the previous case's queued requests drain
    memory = ResourceSampler(server.proc.pid, period=0.5)
    memory.start()
    t0 = time.time()
    row = {"server": label, **run_case(server.url, case, args, path, script)}
    t1 = time.time()
    memory.stop()
    summary = memory.summary(t0, t1)  # over wrk's run only
    row.update({k: summary[k] for k in ("server_cpu_pct", "rss_mb", "rss_growth_pct", "rss_peak_mb")})
    # server CPU per request: its CPU seconds over wrk's run / wrk's requests
    row["cpu_ms"] = 1000 * summary["server_cpu_pct"] / 100 * (t1 - t0) / max(row["requests"], 1)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.wrk", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--servers", default="ours,stock", help=f"of: {', '.join(SERVERS)}, before")
    p.add_argument("--before-repo", type=Path, default=None, help="checkout whose service `before` runs")
    p.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"cases to run, of: {', '.join(CASES)} (the baselines: housing and mnist JSON only)",
    )
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=int, default=15, help="seconds per case")
    p.add_argument("--pause", type=float, default=2.0, help="idle seconds between cases")
    p.add_argument("--out", type=Path, default=None, help="JSON results (default reports/wrk-<time>.json)")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk not found; install it (Debian/Ubuntu: apt-get install wrk)")
    out = args.out or Path("reports") / f"wrk-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    labels = args.servers.split(",")
    if any(label.partition(":")[0] == "before" for label in labels) and args.before_repo is None:
        raise SystemExit("error: --servers before needs --before-repo (a checkout of the service to compare)")
    print(
        "| server | case | req/s | items/s | p50 ms | p99 ms | max ms | non-2xx | server CPU % | cpu_ms "
        "| worker RSS MiB (growth) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scripts:
        for label in labels:
            name = label.partition(":")[0]
            with server_of(label, args.before_repo) as server:
                for case in args.cases.split(","):
                    if name in ("stock", "fastapi") and not baseline_has(case):
                        continue  # the baselines: JSON routes of housing_mlp and mnist_cnn only
                    row = measure(server, label, case, args, Path(scripts))
                    results.append(row)
                    print(f"| {label} | {case} | {row['rps']:,.0f} | {row['items_per_s']:,.0f} | "
                          f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.0f} | "
                          f"{row['non_2xx']} | {row['server_cpu_pct']:.0f} | {row['cpu_ms']:.3f} | "
                          f"{row['rss_mb']:.0f} ({row['rss_growth_pct']:+.1f} %) |",
                          flush=True)  # fmt: skip
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return results


if __name__ == "__main__":
    main()

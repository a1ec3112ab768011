"""Triton's perf_analyzer (scripts/perf_analyzer.sh), unchanged, against servers already running.

Every (server, model, protocol, data, concurrency), one perf_analyzer run each, its own CSV
(`-f`) read back; a JSON file and a Markdown table of throughput, latency and the server-side split.

    python -m loadtests.perf_analyzer --target ours=127.0.0.1:3000,127.0.0.1:8001 \\
        --target triton=127.0.0.1:8010,127.0.0.1:8011 --models housing_mlp,mnist_cnn \\
        --protocols http,grpc --data zero --concurrency 32 --out reports/perf/compare

A target is NAME=HTTP_ADDRESS,GRPC_ADDRESS[,PID] (`make serve` and scripts/triton_yardstick.sh give
those above); with the PID of its server (`bentoml serve`, tritonserver), each row also has the
server's CPU per request: the CPU seconds of that process and its children over the run, over the
requests the server's own statistics counted (Triton's statistics API: ours and Triton's alike). The
runs are sequential, so only one load runs at a time; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from itertools import product
from pathlib import Path

from loadtests.server import REPO

SCRIPT = REPO / "scripts" / "perf_analyzer.sh"
# perf_analyzer's CSV columns (microseconds but the first two) -> ours
COLUMNS = {
    "Inferences/Second": "infer_per_s",
    "p50 latency": "p50_us",
    "p99 latency": "p99_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_input_us",
    "Server Compute Infer": "server_infer_us",
    "Server Compute Output": "server_output_us",
}


def command(address: str, model: str, protocol: str, data: str, levels: str, window_ms: int) -> list[str]:
    """perf_analyzer's command line: `levels` its --concurrency-range (N or START:END:STEP), `data`
    zero or random (its default)."""
    cmd = [
        str(SCRIPT), "-m", model, "-u", address, "-i", protocol, "--concurrency-range", levels,
        "--measurement-interval", str(window_ms),
    ]  # fmt: skip
    return cmd + (["--input-data", "zero"] if data == "zero" else [])


def run(
    address: str,
    model: str,
    protocol: str,
    data: str,
    concurrency: int,
    window_ms: int,
    timeout_s: float,
    extra: tuple[str, ...] = (),
) -> dict:
    """One perf_analyzer run at one concurrency, its CSV row (or {"error": ...}); `extra`: more of its
    options."""
    with tempfile.TemporaryDirectory() as tmp:
        out_csv = Path(tmp) / "pa.csv"
        cmd = [
            *command(address, model, protocol, data, str(concurrency), window_ms),
            *extra,
            "-f",
            str(out_csv),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:  # it kept measuring without reaching a stable window
            return {"error": f"no stable measurement in {timeout_s:g} s"}
        if proc.returncode != 0 or not out_csv.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return {"error": " / ".join(tail) or f"exit {proc.returncode}"}
        (row,) = list(csv.DictReader(out_csv.open()))
    return {ours: float(row[theirs]) for theirs, ours in COLUMNS.items() if theirs in row}


def answered(protocol: str, address: str, model: str) -> int:
    """Requests the server has answered for `model`: its Triton statistics over `protocol`."""
    if protocol == "http":
        import tritonclient.http as client

        stats = client.InferenceServerClient(address).get_inference_statistics(model)
    else:
        import tritonclient.grpc as client

        stats = client.InferenceServerClient(address).get_inference_statistics(model, as_json=True)
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats["model_stats"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (a server and its workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measured(address, model, protocol, data, concurrency, window_ms, timeout_s, pid=None, extra=()) -> dict:
    """`run`, and with the server's `pid` its CPU per request over the run (`server_cpu_ms`)."""
    if pid is None:
        return run(address, model, protocol, data, concurrency, window_ms, timeout_s, extra)
    count, cpu = answered(protocol, address, model), cpu_seconds(pid)
    row = run(address, model, protocol, data, concurrency, window_ms, timeout_s, extra)
    requests = answered(protocol, address, model) - count
    if requests > 0:
        row["server_cpu_ms"] = 1e3 * (cpu_seconds(pid) - cpu) / requests
    return row


def markdown(rows: list[dict]) -> str:
    names = ["server", "model", "protocol", "data", "concurrency", "infer/s", "p50 ms", "p99 ms"]
    names += ["server queue / infer µs", "server CPU ms / request"]
    lines = ["| " + " | ".join(names) + " |", "|---" * len(names) + "|"]
    for r in rows:
        first = f"| {r['server']} | {r['model']} | {r['protocol']} | {r['data']} | {r['concurrency']} | "
        if "error" in r:
            lines.append(f"{first}failed: {r['error']} | | | | |")
            continue
        cpu = f"{r['server_cpu_ms']:.3f}" if "server_cpu_ms" in r else "-"
        lines.append(
            f"{first}{r['infer_per_s']:,.0f} | {r['p50_us'] / 1e3:.1f} | {r['p99_us'] / 1e3:.1f} | "
            f"{r.get('server_queue_us', 0):,.0f} / {r.get('server_infer_us', 0):,.0f} | {cpu} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.perf_analyzer",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--target", action="append", required=True, help="NAME=HTTP_ADDRESS,GRPC_ADDRESS[,SERVER_PID]"
    )
    parser.add_argument("--rounds", type=int, default=1, help="every run this many times, in turn")
    parser.add_argument(
        "--stability-percentage", type=int, default=10,
        help="perf_analyzer's own (its default 10): how far apart its windows may be to count as stable",
    )  # fmt: skip
    parser.add_argument("--models", default="housing_mlp,mnist_cnn")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--data", default="zero", help="zero and/or random (perf_analyzer's default)")
    parser.add_argument("--concurrency", default="32", help="levels, e.g. 1,2,4,8,16,32")
    parser.add_argument("--window-ms", type=int, default=5000, help="perf_analyzer's --measurement-interval")
    parser.add_argument(
        "--timeout-s", type=float, default=240, help="the most one perf_analyzer run may take"
    )
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "perf_analyzer")
    args = parser.parse_args(argv)

    targets = {}
    for spec in args.target:
        name, _, addresses = spec.partition("=")
        http, grpc, *pid = addresses.split(",")
        targets[name] = {"http": http, "grpc": grpc, "pid": int(pid[0]) if pid else None}
    rows = []
    for model in args.models.split(","):
        for protocol in args.protocols.split(","):
            for data in args.data.split(","):
                for level in (int(c) for c in args.concurrency.split(",")):
                    for _, (name, target) in product(range(args.rounds), targets.items()):
                        row = {"server": name, "model": model, "protocol": protocol, "data": data,
                               "concurrency": level}  # fmt: skip
                        row |= measured(
                            target[protocol], model, protocol, data, level, args.window_ms, args.timeout_s,
                            target["pid"], ("--stability-percentage", str(args.stability_percentage)),
                        )  # fmt: skip
                        rows.append(row)
                        print(markdown([row]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "perf_analyzer.json").write_text(json.dumps(rows, indent=2))
    (args.out / "perf_analyzer.md").write_text(markdown(rows))
    print(f"wrote {args.out}/perf_analyzer.json and perf_analyzer.md")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

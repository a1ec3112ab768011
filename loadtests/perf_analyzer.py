"""Triton's perf_analyzer (scripts/perf_analyzer.sh), unchanged, against servers that are already
running: every (server, model, protocol, data, concurrency), one perf_analyzer run each, its own CSV
(`-f`) read back; a JSON file and a Markdown table of throughput, latency and the server-side split.

    python -m loadtests.perf_analyzer --target ours=127.0.0.1:3000,127.0.0.1:8001 \\
        --target triton=127.0.0.1:8010,127.0.0.1:8011 --models housing_mlp,mnist_cnn \\
        --protocols http,grpc --data zero --concurrency 32 --out reports/perf/compare

A target is NAME=HTTP_ADDRESS,GRPC_ADDRESS (`make serve` and scripts/triton_yardstick.sh give those
above). The runs are sequential, so only one load runs at a time; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
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
    address: str, model: str, protocol: str, data: str, concurrency: int, window_ms: int, timeout_s: float
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_csv = Path(tmp) / "pa.csv"
        cmd = [*command(address, model, protocol, data, str(concurrency), window_ms), "-f", str(out_csv)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:  # it kept measuring without reaching a stable window
            return {"error": f"no stable measurement in {timeout_s:g} s"}
        if proc.returncode != 0 or not out_csv.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return {"error": " / ".join(tail) or f"exit {proc.returncode}"}
        (row,) = list(csv.DictReader(out_csv.open()))
    return {ours: float(row[theirs]) for theirs, ours in COLUMNS.items() if theirs in row}


def markdown(rows: list[dict]) -> str:
    names = ["server", "model", "protocol", "data", "concurrency", "infer/s", "p50 ms", "p99 ms"]
    lines = ["| " + " | ".join([*names, "server queue / infer µs"]) + " |", "|---" * 9 + "|"]
    for r in rows:
        first = f"| {r['server']} | {r['model']} | {r['protocol']} | {r['data']} | {r['concurrency']} | "
        if "error" in r:
            lines.append(f"{first}failed: {r['error']} | | | |")
            continue
        lines.append(
            f"{first}{r['infer_per_s']:,.0f} | {r['p50_us'] / 1e3:.1f} | {r['p99_us'] / 1e3:.1f} | "
            f"{r.get('server_queue_us', 0):,.0f} / {r.get('server_infer_us', 0):,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.perf_analyzer",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--target", action="append", required=True, help="NAME=HTTP_ADDRESS,GRPC_ADDRESS")
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
        http, _, grpc = addresses.partition(",")
        targets[name] = {"http": http, "grpc": grpc}
    rows = []
    for model in args.models.split(","):
        for protocol in args.protocols.split(","):
            for data in args.data.split(","):
                for level in (int(c) for c in args.concurrency.split(",")):
                    for name, addresses in targets.items():
                        row = {"server": name, "model": model, "protocol": protocol, "data": data,
                               "concurrency": level}  # fmt: skip
                        row |= run(
                            addresses[protocol], model, protocol, data, level, args.window_ms, args.timeout_s
                        )
                        rows.append(row)
                        print(markdown([row]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "perf_analyzer.json").write_text(json.dumps(rows, indent=2))
    (args.out / "perf_analyzer.md").write_text(markdown(rows))
    print(f"wrote {args.out}/perf_analyzer.json and perf_analyzer.md")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Single-client latency of each endpoint of a running service (p50/p95/p99/max).

Sequential requests of one row / one image / one PNG each; the numbers are appended to a JSON file.

    python -m loadtests.latency --url http://127.0.0.1:3000 --requests 500
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import requests
from tqdm.auto import tqdm

from loadtests.cli import url_parser
from loadtests.payloads import housing_test, mnist_test, png_bytes


def endpoints(n: int) -> dict:
    """endpoint -> list of (kwargs for session.post) drawn from the real test splits."""
    h, m = housing_test(), mnist_test()
    idx = np.arange(n)
    return {
        "predict_housing": [{"json": {"features": [h.x[i % len(h.x)].tolist()]}} for i in idx],
        "classify_digits": [{"json": {"images": [m.x[i % len(m.x), 0].tolist()]}} for i in idx],
        "classify_digit_image": [
            {"files": {"image": ("digit.png", png_bytes(m.x[i % len(m.x), 0]), "image/png")}} for i in idx
        ],
    }


def measure(url: str, n: int, warmup: int = 20) -> dict:
    results = {}
    with requests.Session() as session:
        for route, payloads in endpoints(n).items():
            for p in payloads[:warmup]:
                session.post(f"{url}/{route}", timeout=30, **p).raise_for_status()
            times = []
            for p in tqdm(payloads, desc=route, disable=None):
                start = time.perf_counter()
                session.post(f"{url}/{route}", timeout=30, **p).raise_for_status()
                times.append((time.perf_counter() - start) * 1e3)
            p50, p95, p99 = np.percentile(times, [50, 95, 99])
            results[route] = {
                "requests": n,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "max_ms": max(times),
            }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = url_parser("python -m loadtests.latency", __doc__)
    parser.add_argument("--requests", type=int, default=500, help="timed requests per endpoint")
    parser.add_argument(
        "--out", type=Path, default=Path("reports/latency.json"), help="JSON file to append to"
    )
    args = parser.parse_args(argv)
    status = requests.get(f"{args.url}/status", timeout=10).json()
    backend = {name: m["backend"] + "/" + m["device"] for name, m in status["models"].items()}
    results = measure(args.url, args.requests)
    print(f"single client, {args.requests} sequential requests per endpoint, models {backend}")
    print(f"{'endpoint':24} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for route, r in results.items():
        print(f"{route:24} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(args.out.read_text()) if args.out.exists() else []
    history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": backend, "results": results})
    args.out.write_text(json.dumps(history, indent=2))


if __name__ == "__main__":
    main()

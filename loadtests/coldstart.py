"""Cold start per format: seconds from `bentoml serve` to every worker ready (both models loaded and
warmed up, the preflight included), a few starts each.

    python -m loadtests.coldstart                            # every format, 3 starts each, on the CPU
    python -m loadtests.coldstart --backends onnx,aoti --runs 5 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from loadtests.server import Server
from models.formats import FORMATS


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.coldstart", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--backends", default=",".join(FORMATS), help="formats (models/formats.py)")
    p.add_argument("--device", default="cpu", help="MODEL_DEVICE")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="starts per format")
    p.add_argument("--out", type=Path, default=Path("reports/coldstart.json"))
    args = p.parse_args(argv)
    results: dict[str, list[float]] = {}
    for backend in args.backends.split(","):
        env = {"MODEL_BACKEND": backend, "MODEL_DEVICE": args.device, "WORKERS": str(args.workers)}
        for _ in range(args.runs):
            t0 = time.monotonic()
            with Server(env):
                results.setdefault(backend, []).append(time.monotonic() - t0)
        print(f"{backend:12} " + " / ".join(f"{s:.1f} s" for s in results[backend]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

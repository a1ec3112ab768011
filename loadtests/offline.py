"""Offline model throughput: each format (backend) at several batch sizes, no HTTP, one session using
all the machine's cores (--threads). Gives the ceiling that served throughput is compared with, and
each format's cold start: seconds to load the file and to answer the first batch.

    python -m loadtests.offline                      # every format (models/formats.py), store models
    python -m loadtests.offline --threads 1          # what one service worker's session gets (WORKERS=cores)
    python -m loadtests.offline --devices cpu,cuda   # CPU and GPU ceilings (loadtests.run --offline)
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import bentoml
import numpy as np

from models import registry
from models.device import DeviceUnavailableError, available_cpus
from models.formats import FORMATS
from service.placement import BackendUnavailableError, choose
from service.settings import get_settings


def batches(name: str) -> tuple[int, ...]:
    """1, 8, 64 and the largest batch the service forms for the model (its max_batch_size), or 256."""
    largest = get_settings().model(name).max_batch_size
    return tuple(sorted({1, 8, 64, largest if largest > 64 else 256}))


def throughput(backend, spec, batch: int, seconds: float) -> dict:
    x = np.random.default_rng(0).random((batch, *spec.input_shape), dtype=np.float32)
    for _ in range(3):
        backend(x)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t = time.perf_counter()
        backend(x)
        times.append(time.perf_counter() - t)
    per_batch = float(np.median(times))
    return {"batch": batch, "ms_per_batch": per_batch * 1e3, "items_per_s": batch / per_batch}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.offline", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--backends", default=",".join(FORMATS), help="formats (models/formats.py)")
    parser.add_argument("--devices", default="cpu", help="cpu,cuda")
    parser.add_argument("--threads", type=int, default=available_cpus(), help="intra-op threads")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per batch size")
    parser.add_argument("--models", default="", help="models of the registry (default: all)")
    parser.add_argument("--out", type=Path, default=Path("reports/offline.json"))
    args = parser.parse_args(argv)
    settings = get_settings()
    parser_models = args.models.split(",") if args.models else list(registry.models())
    results = []
    for device, kind in itertools.product(args.devices.split(","), args.backends.split(",")):
        try:
            device = choose(kind, device).device  # `cuda` that cannot be had: skipped, said why
        except (DeviceUnavailableError, BackendUnavailableError) as exc:
            print(f"{device:4} {kind:12} skipped: {exc}")
            continue
        fmt = FORMATS[kind]
        for spec in (registry.get(name).spec for name in parser_models):
            model = bentoml.models.get(settings.model(spec.name).tag)
            if not (Path(model.path) / fmt.filename(device)).is_file():
                print(
                    f"{device:4} {kind:12} {spec.name:12} skipped: {model.tag} has no {fmt.filename(device)}"
                )
                continue
            t0 = time.perf_counter()
            backend = fmt.load(Path(model.path), spec, device, args.threads)
            t1 = time.perf_counter()
            backend(np.zeros((1, *spec.input_shape), dtype=np.float32))
            cold = {"load_s": t1 - t0, "first_batch_s": time.perf_counter() - t1}
            print(f"{device:4} {kind:12} {spec.name:12} cold start: load {cold['load_s']:.3f} s, "
                  f"first batch {cold['first_batch_s']:.3f} s")  # fmt: skip
            for batch in batches(spec.name):
                r = {
                    "backend": kind,
                    "device": device,
                    "model": spec.name,
                    "threads": args.threads,
                    **cold,
                }
                results.append({**r, **throughput(backend, spec, batch, args.seconds)})
                last = results[-1]
                print(f"{device:4} {kind:12} {spec.name:12} batch {batch:5}: {last['ms_per_batch']:8.3f} ms  "
                      f"{last['items_per_s']:12,.0f} items/s")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

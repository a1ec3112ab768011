"""Overload drill: a burst of concurrent requests far above capacity, then the time to recover.

    python -m loadtests.burst                                   # 256 connections, 10 s, 64-image requests
    python -m loadtests.burst --connections 512 --seconds 30 --endpoint predict_housing --items 1

Starts `bentoml serve` on a free 127.0.0.1 port (or targets --url), measures single-request latency,
then keeps --connections clients sending back-to-back for --seconds (bounded) and checks that every
request was answered with its result (200) or a fast refusal (429 over the concurrency limit, 503
shed by the batcher past max_latency_ms): no 5xx other than 503, no hang, no dropped connection.
Afterwards it sends single requests until latency is back to normal and reports how long that took,
and the workers' peak resident memory during the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from loadtests.payloads import json_bodies
from loadtests.sampling import ResourceSampler
from loadtests.server import Server

JSON = {"Content-Type": "application/json"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.burst", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--url", default=None, help="target a running service instead of starting one")
    p.add_argument("--endpoint", default="classify_digits", choices=("classify_digits", "predict_housing"))
    p.add_argument("--items", type=int, default=64, help="images / rows per request")
    p.add_argument("--connections", type=int, default=256, help="concurrent clients in the burst")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the burst")
    p.add_argument("--recovery-timeout", type=float, default=60.0, help="give up waiting for recovery after")
    p.add_argument("--out", type=Path, default=None, help="write the summary as JSON")
    return p


async def single_latencies(client: httpx.AsyncClient, url: str, one: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = await client.post(url, content=one, headers=JSON)
        r.raise_for_status()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def json_one(body: bytes) -> bytes:
    """The first row / image of a request body, as a request of its own."""
    data = json.loads(body)
    field = next(iter(data))
    return json.dumps({field: data[field][:1]}).encode()


async def burst(url: str, bodies: list[bytes], connections: int, seconds: float) -> dict:
    statuses: Counter = Counter()
    latencies: dict[int | str, list[float]] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker(i: int) -> None:
            k = i
            while time.monotonic() < deadline:
                t = time.perf_counter()
                try:
                    r = await client.post(url, content=bodies[k % len(bodies)], headers=JSON)
                    key: int | str = r.status_code
                except httpx.HTTPError as exc:  # a dropped connection or a hang counts against the service
                    key = type(exc).__name__
                statuses[key] += 1
                latencies.setdefault(key, []).append((time.perf_counter() - t) * 1e3)
                k += connections

        t0 = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        elapsed = time.monotonic() - t0
    summary = {str(k): {"responses": statuses[k], "p50_ms": float(np.percentile(v, 50)),
                        "p99_ms": float(np.percentile(v, 99)), "max_ms": float(max(v))}
               for k, v in latencies.items()}  # fmt: skip
    return {"sent": sum(statuses.values()), "burst_seconds": elapsed, "by_status": summary}


async def recovery(url: str, one: bytes, normal_ms: float, timeout: float) -> float:
    """Seconds after the burst until 5 single requests in a row answer 200 within 2x normal + 5 ms."""
    t0 = time.monotonic()
    streak = 0
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() - t0 < timeout:
            t = time.perf_counter()
            r = await client.post(url, content=one, headers=JSON)
            ok = r.status_code == 200 and (time.perf_counter() - t) * 1e3 <= 2 * normal_ms + 5
            streak = streak + 1 if ok else 0
            if streak == 5:
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
    return float("inf")


async def drill(base_url: str, args, pid: int | None) -> dict:
    url = f"{base_url}/{args.endpoint}"
    bodies = json_bodies(args.endpoint, args.items, 32, seed=0)
    one = json_one(bodies[0])
    async with httpx.AsyncClient(timeout=30) as client:
        normal = statistics.median(await single_latencies(client, url, one, 30))
    memory = ResourceSampler(pid, period=0.2) if pid else None
    if memory:
        memory.start()
        await asyncio.sleep(0.5)
    result = await burst(url, bodies, args.connections, args.seconds)
    recovered = await recovery(url, one, normal, args.recovery_timeout)
    result.update({"endpoint": args.endpoint, "items_per_request": args.items,
                   "connections": args.connections, "normal_single_ms": normal,
                   "recovery_seconds": recovered})  # fmt: skip
    if memory:
        memory.stop()
        rss = memory.summary()
        result.update({"rss_before_mb": rss["rss_first_mb"], "rss_peak_mb": rss["rss_peak_mb"]})
    return result


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.url:
        result = asyncio.run(drill(args.url.rstrip("/"), args, None))
    else:
        with Server({"MODEL_DEVICE": "cpu"}) as server:
            result = asyncio.run(drill(server.url, args, server.proc.pid))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

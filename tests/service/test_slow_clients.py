"""Slow clients (slowloris): 500 connections that send their headers, or their body, a byte a second
do not stop normal requests from being served (p99 under 100 ms), and the server answers each of
them 408 and closes it once HEADER_TIMEOUT_S / BODY_TIMEOUT_S have passed. Bounded: ~12 s, loopback."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np

from loadtests.server import Server
from tests.conftest import models_env

SLOW = 500
TIMEOUT_S = 3.0
TRICKLE_FOR_S = 10.0


async def _slow_client(port: int, kind: str, t0: float) -> tuple[str, float]:
    """One connection trickling its head or its body; (what the server answered, when it did)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if kind == "body":  # a complete head, then a body that never arrives
        writer.write(b"POST /predict_housing HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")  # fmt: skip
    else:
        writer.write(b"POST /predict_housing HTTP/1.1\r\nHost: t\r\nX-Slow: ")

    async def trickle() -> None:
        while time.monotonic() - t0 < TRICKLE_FOR_S:
            await asyncio.sleep(1.0)
            try:
                writer.write(b"a")
                await writer.drain()
            except (ConnectionError, RuntimeError):
                return

    task = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(300), timeout=TRICKLE_FOR_S + 5)
    except (TimeoutError, ConnectionError) as exc:
        answer = type(exc).__name__.encode()
    at = time.monotonic() - t0
    task.cancel()
    writer.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), at


async def _scenario(server: Server) -> tuple[list, list[float]]:
    t0 = time.monotonic()
    slow = [
        asyncio.create_task(_slow_client(server.port, "head" if i % 2 else "body", t0)) for i in range(SLOW)
    ]
    await asyncio.sleep(1.0)  # all open and trickling
    latencies = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        while time.monotonic() - t0 < 1.0 + 2 * TIMEOUT_S:  # before and after the slow ones time out
            start = time.perf_counter()
            r = await client.post("/predict_housing", json={"features": [[1.0] * 8]})
            assert r.status_code == 200, r.text
            latencies.append((time.perf_counter() - start) * 1e3)
    return await asyncio.gather(*slow), latencies


def test_slow_clients_are_timed_out_and_do_not_block_others(smoke_models):
    env = models_env(
        smoke_models, WORKERS="2", HEADER_TIMEOUT_S=str(TIMEOUT_S), BODY_TIMEOUT_S=str(TIMEOUT_S)
    )
    with Server(env) as server:
        answers, latencies = asyncio.run(_scenario(server))
    statuses = sorted({a for a, _ in answers})
    assert statuses == ["HTTP/1.1 408 Request Timeout"], statuses
    times = [t for _, t in answers]
    assert max(times) < TIMEOUT_S + 3, max(times)  # answered soon after the timeout, not at the end
    p99 = float(np.percentile(latencies, 99))
    assert len(latencies) > 100 and p99 < 100, (len(latencies), p99)
    p50 = float(np.percentile(latencies, 50))
    print(f"{SLOW} slow connections: all 408 after {min(times):.1f}-{max(times):.1f} s; "
          f"{len(latencies)} normal requests meanwhile, p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip

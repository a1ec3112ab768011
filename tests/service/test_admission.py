"""Admission by cost on real servers (127.0.0.1, bounded): load a server can carry is not refused,
even fresh; requests whose bodies would pass the worker's in-flight byte budget are shed at once
with 503 and the worker goes on. The burst far above capacity is tests/service/test_overload.py."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from loadtests.payloads import json_bodies
from loadtests.server import Server
from tests.conftest import models_env


async def _send(url: str, bodies: list[bytes], connections: int, seconds: float | None = None) -> Counter:
    """Send every body once (or, with `seconds`, round-robin until then) over `connections` connections
    at once; count the statuses (transport errors by name)."""
    statuses: Counter = Counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    deadline = time.monotonic() + (seconds or 0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(k: int) -> None:
            while True:
                try:
                    r = await client.post(
                        url, content=bodies[k % len(bodies)], headers={"Content-Type": "application/json"}
                    )
                    # a refusal is counted with its reason, so that a failure says which limit it was
                    statuses[r.status_code if r.status_code == 200 else f"{r.status_code} {r.text[:90]}"] += 1
                except httpx.TransportError as exc:
                    statuses[type(exc).__name__] += 1
                k += connections
                if (
                    seconds is None
                    and k >= len(bodies)
                    or seconds is not None
                    and time.monotonic() > deadline
                ):
                    return

        await asyncio.gather(*(one(i) for i in range(min(connections, len(bodies)))))
    return statuses


def test_many_connections_of_small_requests_are_all_served(smoke_models):
    """400 single-row requests over 100, 200 and 500 concurrent connections, the first on a fresh
    server: every one 200 (the old count-based limit refused ~10 % at 100 connections)."""
    bodies = json_bodies("predict_housing", 1, 400, seed=0)
    with Server(models_env(smoke_models, WORKERS="2")) as server:
        for connections in (100, 200, 500):
            statuses = asyncio.run(_send(f"{server.url}/predict_housing", bodies, connections))
            assert statuses == Counter({200: 400}), (connections, statuses)


def test_fresh_server_carries_32_connections_of_64_image_requests(smoke_models):
    bodies = json_bodies("classify_digits", 64, 32, seed=0)
    with Server(models_env(smoke_models, WORKERS="2")) as server:
        statuses = asyncio.run(_send(f"{server.url}/classify_digits", bodies, 32, seconds=4))
    assert set(statuses) == {200}, statuses


def test_requests_past_the_byte_budget_are_shed_and_the_worker_goes_on(smoke_models):
    """MAX_INFLIGHT_BYTES of 2 MiB against 12 concurrent requests of 256 images (~1 MB each): some are
    shed at once with 503 naming the budget, the others answered; then a normal request is served."""
    bodies = json_bodies("classify_digits", 256, 12, seed=1)
    env = models_env(smoke_models, WORKERS="1", MAX_INFLIGHT_BYTES=str(2 << 20), MNIST_MAX_LATENCY_MS="60000")
    with Server(env) as server:
        url = f"{server.url}/classify_digits"
        statuses = asyncio.run(_send(url, bodies, 12))
        r = httpx.post(url, json={"images": [[[0.0] * 28] * 28]}, timeout=30)
        alone = httpx.post(url, content=bodies[0], headers={"Content-Type": "application/json"}, timeout=60)
    shed = {k for k in statuses if k != 200}
    assert (
        statuses[200] > 0 and shed and all(str(k).startswith('503 {"error":"overloaded: ') for k in shed)
    ), statuses
    assert r.status_code == 200 and alone.status_code == 200  # one request alone always fits

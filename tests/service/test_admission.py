"""Admission by cost on real servers (127.0.0.1, bounded): load a server can carry is not refused,
even fresh and with a core kept busy by another process (a shared CI machine); requests whose bodies
would pass the worker's in-flight byte budget are shed at once with 503 and the worker goes on. The
burst far above capacity is tests/service/test_overload.py; the deadline rule itself, in-process, is
tests/service/test_batching.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from loadtests.payloads import json_bodies, v2_bodies
from loadtests.protocol import v2_path
from loadtests.server import Server
from models.specs import MNIST
from tests.conftest import models_env


@pytest.fixture
def busy_core():
    """Another process spinning on one core for the test's length (a busy neighbour)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


JSON = {"Content-Type": "application/json"}


async def _send(url: str, bodies: list, connections: int, seconds: float | None = None) -> Counter:
    """Send every body once (or, with `seconds`, round-robin until then) over `connections` connections
    at once; count the statuses (transport errors by name). A body is bytes (JSON) or (bytes, headers)."""
    statuses: Counter = Counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    deadline = time.monotonic() + (seconds or 0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(k: int) -> None:
            while True:
                body = bodies[k % len(bodies)]
                content, extra = body if isinstance(body, tuple) else (body, {})  # (body, headers): V2
                try:
                    r = await client.post(url, content=content, headers={**JSON, **extra})
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


def test_many_connections_of_small_requests_are_all_served(smoke_models, busy_core):
    """400 single-row requests over 100, 200 and 500 concurrent connections, the first on a fresh
    server, one core busy: every one 200 (the old count-based limit refused ~10 % at 100 connections;
    BentoML's batcher, which shed by the cost of its whole queue, 36 of 400 at 200 connections)."""
    bodies = json_bodies("predict_housing", 1, 400, seed=0)
    with Server(models_env(smoke_models, WORKERS="2")) as server:
        for connections in (100, 200, 500):
            statuses = asyncio.run(_send(f"{server.url}/predict_housing", bodies, connections))
            assert statuses == Counter({200: 400}), (connections, statuses)


@pytest.mark.parametrize("protocol", ["json", "v2_json", "v2_binary"])
def test_fresh_server_carries_32_connections_of_64_image_requests(smoke_models, busy_core, protocol):
    """What tritonclient sends (a 64-image V2 JSON body is ~1 MB) or the JSON API, 32 connections, a
    fresh server and a core kept busy: every request 200 (BentoML's batcher and the old 16 MiB
    budget refused 94 % of the V2 JSON ones)."""
    if protocol == "json":
        url, bodies = "/classify_digits", json_bodies("classify_digits", 64, 32, seed=0)
    else:
        url, bodies = (
            v2_path(MNIST.name),
            v2_bodies(MNIST.name, 64, 32, seed=0, binary=protocol == "v2_binary"),
        )
    with Server(models_env(smoke_models, WORKERS="2")) as server:
        statuses = asyncio.run(_send(f"{server.url}{url}", bodies, 32, seconds=4))
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
        alone = httpx.post(url, content=bodies[0], headers=JSON, timeout=60)
    shed = {k for k in statuses if k != 200}
    assert (
        statuses[200] > 0 and shed and all(str(k).startswith('503 {"error":"overloaded: ') for k in shed)
    ), statuses
    assert r.status_code == 200 and alone.status_code == 200  # one request alone always fits

"""Graceful shutdown: SIGTERM to `bentoml serve` (what `docker stop` sends to the container's main
process) lets the requests in flight finish with their answers and refuses new ones."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtests.payloads import json_bodies
from loadtests.server import Server


def in_progress(server) -> int:
    """/classify_digits requests being handled by the workers now (the service's gauge, all workers)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "model_serving_http_requests_in_progress"
            for sample in family.samples
            if sample.labels.get("route") == "/classify_digits"
        )
    )


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(smoke_models):
    env = {
        "MODEL_DEVICE": "cpu",
        "MNIST_MAX_LATENCY_MS": "60000",  # this test is about shutdown: no shedding of the queued requests
        "MAX_INFLIGHT_BYTES": str(64 << 20),  # ... by the deadline or by their bytes (16 x 1.5 MB)
        "HOUSING_MODEL": smoke_models["housing_mlp"]["tag"],
        "MNIST_MODEL": smoke_models["mnist_cnn"]["tag"],
    }
    server = Server(env)
    url = f"{server.url}/classify_digits"
    bodies = json_bodies("classify_digits", 256, 16, seed=1)  # 16 x 256 images: ~1-2 s of model time

    def post(body: bytes):
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        return r, time.monotonic()

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(post, b) for b in bodies]
            next(as_completed(futures))  # the first answer is back: the others are queued behind it
            # ...and every other request has reached a worker (a connection still waiting in the
            # kernel's accept queue is not in flight: closing the listener resets it, as in any server).
            deadline = time.monotonic() + 30
            while in_progress(server) + sum(f.done() for f in futures) < len(bodies):
                assert time.monotonic() < deadline, "the requests never all reached the server"
                time.sleep(0.01)
            sigterm_at = time.monotonic()
            os.kill(server.proc.pid, signal.SIGTERM)
            answers = [f.result() for f in futures]
        finished_after = sum(done > sigterm_at for _, done in answers)
        assert finished_after > 0, "no request was still in flight at SIGTERM; make the requests bigger"
        for (r, _), body in zip(answers, bodies, strict=True):
            assert r.status_code == 200, r.text[:300]
            assert len(r.json()) == len(json.loads(body)["images"])
        with pytest.raises(requests.ConnectionError):
            requests.post(url, data=bodies[0], headers={"Content-Type": "application/json"}, timeout=10)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()

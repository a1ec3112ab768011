"""Locust scenarios for the three endpoints, payloads drawn from the real test splits.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000                 # web UI
    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000 --headless -u 32 -r 32 -t 30s \\
           --housing-rows 1 HousingUser

Every response is checked (status, JSON shape, finite values, label = argmax of the probabilities);
a wrong answer is reported as a failure. `--checks-file PREFIX` writes, per process, how many
responses it checked (so a runner can prove that none went unchecked) and when its first request
started and its last one ended (the window in which the load ran, exact in distributed mode too,
where the master's own statistics arrive in 3-second reports).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter

import numpy as np
from locust import FastHttpUser, events, task

from loadtests.payloads import json_bodies, mnist_test, png_bytes

POOL = 256  # distinct request bodies per endpoint, built once per process before users start
CHECKED: Counter[str] = Counter()
WINDOW: list[float] = []  # [first request's start, last request's end], unix time
BODIES: dict[str, list] = {}


@events.init_command_line_parser.add_listener
def _(parser):
    parser.add_argument(
        "--housing-rows", type=int, default=1, env_var="LOCUST_HOUSING_ROWS", help="rows per housing request"
    )
    parser.add_argument(
        "--mnist-images",
        type=int,
        default=1,
        env_var="LOCUST_MNIST_IMAGES",
        help="images per /classify_digits request",
    )
    parser.add_argument(
        "--wait-ms",
        type=float,
        default=0.0,
        env_var="LOCUST_WAIT_MS",
        help="think time between a user's requests",
    )
    parser.add_argument(
        "--weights",
        default="1,1,1",
        env_var="LOCUST_WEIGHTS",
        help="weights of HousingUser,DigitsJsonUser,DigitsPngUser",
    )
    parser.add_argument(
        "--checks-file",
        default="",
        env_var="LOCUST_CHECKS_FILE",
        help="write checked-response counts to PREFIX-<pid>.json",
    )


@events.init.add_listener
def _(environment, **_kwargs):
    options = environment.parsed_options
    if options is None:
        return
    weights = [int(w) for w in options.weights.split(",")]
    for cls, w in zip((HousingUser, DigitsJsonUser, DigitsPngUser), weights, strict=True):
        cls.weight = w
    build_bodies(options.housing_rows, options.mnist_images)


def build_bodies(housing_rows: int, mnist_images: int) -> None:
    """Request bodies from the real test splits, serialized once (keeps the load generator light)."""
    BODIES["predict_housing"] = json_bodies("predict_housing", housing_rows, POOL, seed=os.getpid())
    BODIES["classify_digits"] = json_bodies("classify_digits", mnist_images, POOL, seed=os.getpid())
    BODIES["classify_digit_image"] = [png_bytes(img) for img in mnist_test().test.x[:POOL, 0]]


@events.test_stop.add_listener
def _(environment, **_kwargs):
    prefix = environment.parsed_options.checks_file if environment.parsed_options else ""
    if prefix:
        with open(f"{prefix}-{os.getpid()}.json", "w") as f:
            json.dump({"checked": dict(CHECKED), "window": WINDOW}, f)


def _wrong(check: bool, message: str) -> str | None:
    return None if check else message


def check_housing(body, n: int) -> str | None:
    if not isinstance(body, list) or len(body) != n:
        return f"expected a list of {n} values"
    return _wrong(
        all(isinstance(v, float) and math.isfinite(v) and -5 < v < 15 for v in body), "implausible value"
    )


def check_digit(p) -> str | None:
    probs = p.get("probabilities") if isinstance(p, dict) else None
    if not isinstance(probs, list) or len(probs) != 10 or not isinstance(p.get("label"), int):
        return "expected {label, probabilities[10]}"
    if abs(sum(probs) - 1) > 1e-4:
        return "probabilities do not sum to 1"
    return _wrong(p["label"] == int(np.argmax(probs)), "label is not the argmax")


def check_digits(body, n: int) -> str | None:
    if not isinstance(body, list) or len(body) != n:
        return f"expected a list of {n} predictions"
    return next((err for err in map(check_digit, body) if err), None)


JSON = {"Content-Type": "application/json"}


class _CheckedUser(FastHttpUser):
    abstract = True
    route = ""

    def wait_time(self):
        return self.environment.parsed_options.wait_ms / 1000

    def on_start(self):
        self.i = int(np.random.default_rng().integers(POOL))

    def next_body(self):
        self.i = (self.i + 1) % POOL
        return BODIES[self.route][self.i]

    def post_checked(self, check, **kwargs) -> None:
        start = time.time()
        with self.client.post(f"/{self.route}", catch_response=True, name=self.route, **kwargs) as resp:
            WINDOW[:] = [WINDOW[0] if WINDOW else start, time.time()]
            CHECKED[self.route] += 1
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                error = check(resp.json())
            except ValueError:
                error = "response is not JSON"
            if error:
                resp.failure(error)
            else:
                resp.success()


class HousingUser(_CheckedUser):
    route = "predict_housing"

    @task
    def predict(self):
        n = self.environment.parsed_options.housing_rows
        self.post_checked(lambda b: check_housing(b, n), data=self.next_body(), headers=JSON)


class DigitsJsonUser(_CheckedUser):
    route = "classify_digits"

    @task
    def classify(self):
        n = self.environment.parsed_options.mnist_images
        self.post_checked(lambda b: check_digits(b, n), data=self.next_body(), headers=JSON)


class DigitsPngUser(_CheckedUser):
    route = "classify_digit_image"

    @task
    def upload(self):
        self.post_checked(check_digit, files={"image": ("digit.png", self.next_body(), "image/png")})

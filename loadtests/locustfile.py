"""Locust scenarios for every model of the registry (loadtests/catalog.py): its JSON endpoint and the
Open Inference Protocol (KServe V2, JSON and binary tensors), and mnist_cnn's image upload, payloads
drawn from the real test splits.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000                 # web UI
    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000 --headless -u 32 -r 32 -t 30s \\
           --housing-rows 1 HousingUser
    ... --mnist-images 64 V2DigitsBinaryUser          # /v2/models/mnist_cnn/infer, binary tensors
    ... --items 8 DigitsMlpJsonUser                  # /classify_digits_8x8 (digits_mlp), 8 images

Every response is checked (status, shape, finite values, label = argmax of the probabilities or
logits); a wrong answer is reported as a failure. `--checks-file PREFIX` writes, per process, how
many responses it checked (so a runner can prove that none went unchecked), when its first request
started and its last one ended (the window in which the load ran, exact in distributed mode too,
where the master's own statistics arrive in 3-second reports), and the sums of the `Server-Timing`
queue and compute durations the answers reported.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter

import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import FastHttpUser, User, events, task

from loadtests.catalog import endpoints
from loadtests.payloads import grpc_requests, json_bodies, mnist_test, png_bytes, v2_bodies
from loadtests.protocol import server_timing, v2_output
from models import registry

# grpc's blocking calls must yield to gevent's other users (Locust's gRPC pattern); done when Locust
# loads this file, before any channel exists
grpc_gevent.init_gevent()

POOL = 256  # distinct request bodies per endpoint, built once per process before users start
CHECKED: Counter[str] = Counter()
WINDOW: list[float] = []  # [first request's start, last request's end], unix time
TIMING: dict[str, list[float]] = {}  # route -> [answers with Server-Timing, sum queue ms, sum compute ms]
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
        help="images per /classify_digits (and V2 mnist_cnn) request",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=1,
        env_var="LOCUST_ITEMS",
        help="items per request of the other models' users (loadtests/catalog.py)",
    )
    parser.add_argument(
        "--grpc-host",
        default="127.0.0.1:8001",
        env_var="LOCUST_GRPC_HOST",
        help="host:port of the server's gRPC port (the V2*GrpcUser classes)",
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
        help="weights of HousingUser,DigitsJsonUser,DigitsPngUser (the V2 users weigh 1)",
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
    for name, w in zip(("HousingUser", "DigitsJsonUser", "DigitsPngUser"), weights, strict=True):
        globals()[name].weight = w
    # Bodies of the users that will run (those named on the command line, else all), serialized once
    # before the load starts: keeps the generator light. Locust's --run-time counts from its own
    # start, so this is kept short: only the test split of the datasets the users need.
    chosen = set(options.user_classes or ())
    for cls in environment.user_classes:
        if (not chosen or cls.__name__ in chosen) and cls.route not in BODIES:
            BODIES[cls.route] = cls.make_bodies(options)


@events.test_stop.add_listener
def _(environment, **_kwargs):
    prefix = environment.parsed_options.checks_file if environment.parsed_options else ""
    if prefix:
        with open(f"{prefix}-{os.getpid()}.json", "w") as f:
            json.dump({"checked": dict(CHECKED), "window": WINDOW, "timing": TIMING}, f)


def record_timing(route: str, header: str | None) -> None:
    """Add an answer's Server-Timing queue and compute durations to the route's sums (HTTP header or
    gRPC trailing metadata)."""
    timing = server_timing(header)
    if "queue" in timing and "compute" in timing:
        acc = TIMING.setdefault(route, [0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += float(timing["queue"])
        acc[2] += float(timing["compute"])


def _wrong(check: bool, message: str) -> str | None:
    return None if check else message


def check_values(body, n: int) -> str | None:
    """A regression answer: n finite numbers."""
    if not isinstance(body, list) or len(body) != n:
        return f"expected a list of {n} values"
    return _wrong(all(isinstance(v, float) and math.isfinite(v) for v in body), "non-finite value")


def check_prediction(p, classes: int) -> str | None:
    probs = p.get("probabilities") if isinstance(p, dict) else None
    if not isinstance(probs, list) or len(probs) != classes or not isinstance(p.get("label"), int):
        return f"expected {{label, probabilities[{classes}]}}"
    if abs(sum(probs) - 1) > 1e-4:
        return "probabilities do not sum to 1"
    return _wrong(p["label"] == int(np.argmax(probs)), "label is not the argmax")


def check_predictions(body, n: int, classes: int) -> str | None:
    """A classifier's answer: n predictions, each label = argmax of its probabilities."""
    if not isinstance(body, list) or len(body) != n:
        return f"expected a list of {n} predictions"
    return next((err for err in (check_prediction(p, classes) for p in body) if err), None)


def check_v2(resp, output: str, shape: tuple[int, ...]) -> str | None:
    """A V2 response's output tensor: the expected shape, finite values."""
    try:
        out = v2_output(resp.content, resp.headers, output)
    except Exception as exc:  # tritonclient's own parse errors
        return f"unreadable V2 response: {exc}"
    if out.shape != shape:
        return f"{output} has shape {out.shape}, expected {shape}"
    return _wrong(bool(np.isfinite(out).all()), f"{output} has non-finite values")


def _json(check):
    """A check of the parsed JSON body, as a check of the response."""

    def on_response(resp) -> str | None:
        try:
            return check(resp.json())
        except ValueError:
            return "response is not JSON"

    return on_response


JSON = {"Content-Type": "application/json"}


class _CheckedUser(FastHttpUser):
    abstract = True
    route = ""  # Locust's name for the requests (the endpoint in the report)
    path = ""

    def wait_time(self):
        return self.environment.parsed_options.wait_ms / 1000

    @classmethod
    def make_bodies(cls, options) -> list:
        raise NotImplementedError

    def on_start(self):
        self.i = int(np.random.default_rng().integers(POOL))

    def next_body(self):
        self.i = (self.i + 1) % POOL
        return BODIES[self.route][self.i]

    def post_checked(self, check, **kwargs) -> None:
        start = time.time()
        path = self.path or f"/{self.route}"
        with self.client.post(path, catch_response=True, name=self.route, **kwargs) as resp:
            WINDOW[:] = [WINDOW[0] if WINDOW else start, time.time()]
            CHECKED[self.route] += 1
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            record_timing(self.route, resp.headers.get("server-timing"))
            error = check(resp)
            if error:
                resp.failure(error)
            else:
                resp.success()


class _JsonUser(_CheckedUser):
    """POST the model's JSON endpoint; the answer checked by the model's task."""

    abstract = True
    model = ""
    items_option = "items"

    @classmethod
    def make_bodies(cls, options):
        return json_bodies(cls.route, getattr(options, cls.items_option), POOL, seed=os.getpid())

    @task
    def predict(self):
        n = getattr(self.environment.parsed_options, self.items_option)
        entry = registry.get(self.model)
        if entry.task == "classification":
            classes = entry.spec.output_shape[0]
            check = _json(lambda b: check_predictions(b, n, classes))
        else:
            check = _json(lambda b: check_values(b, n))
        self.post_checked(check, data=self.next_body(), headers=JSON)


class DigitsPngUser(_CheckedUser):
    route = "classify_digit_image"

    @classmethod
    def make_bodies(cls, options):
        return [png_bytes(img) for img in mnist_test().x[:POOL, 0]]

    @task
    def upload(self):
        upload = {"image": ("digit.png", self.next_body(), "image/png")}
        self.post_checked(_json(lambda p: check_prediction(p, 10)), files=upload)


class _V2User(_CheckedUser):
    """POST /v2/models/<model>/infer, the model's output asked for as binary data or JSON."""

    abstract = True
    model = ""
    binary = True
    items_option = "items"

    @classmethod
    def make_bodies(cls, options):
        n = getattr(options, cls.items_option)
        return v2_bodies(cls.model, n, POOL, seed=os.getpid(), binary=cls.binary)

    @task
    def infer(self):
        n = getattr(self.environment.parsed_options, self.items_option)
        body, headers = self.next_body()
        spec = registry.get(self.model).spec
        expected = (spec.output_name, (n, *spec.output_shape))
        self.post_checked(lambda resp: check_v2(resp, *expected), data=body, headers=headers)


class _GrpcUser(User):
    """ModelInfer over gRPC (Locust's gRPC pattern: grpc made gevent-friendly, each call reported as
    a request event), the output checked as the REST users check it."""

    abstract = True
    route = ""
    model = ""
    items_option = "items"

    def wait_time(self):
        return self.environment.parsed_options.wait_ms / 1000

    @classmethod
    def make_bodies(cls, options):
        return grpc_requests(cls.model, getattr(options, cls.items_option), POOL, seed=os.getpid())

    def on_start(self):
        from tritonclient.grpc import service_pb2_grpc

        self.i = int(np.random.default_rng().integers(POOL))
        self.spec = registry.get(self.model).spec
        # a connection of its own per user (grpc's global subchannel pool would put every user's
        # channel on one connection, so on one server worker), as the HTTP users have
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channel = grpc.insecure_channel(self.environment.parsed_options.grpc_host, options=options)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def on_stop(self):
        self.channel.close()

    @task
    def infer(self):
        self.i = (self.i + 1) % POOL
        request = BODIES[self.route][self.i]
        spec = self.spec
        expected = (
            len(request.raw_input_contents[0]) // 4 // int(np.prod(spec.input_shape)),
            *spec.output_shape,
        )
        start, error, size = time.time(), None, 0
        t0 = time.perf_counter()
        try:
            response, call = self.stub.ModelInfer.with_call(request, timeout=60)
        except grpc.RpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
        else:
            size = response.ByteSize()
            out = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
            if out.size != int(np.prod(expected)):
                error = f"{spec.output_name} has {out.size} values, expected shape {expected}"
            elif not np.isfinite(out).all():
                error = f"{spec.output_name} has non-finite values"
            record_timing(self.route, dict(call.trailing_metadata()).get("server-timing"))
        elapsed_ms = (time.perf_counter() - t0) * 1000
        WINDOW[:] = [WINDOW[0] if WINDOW else start, time.time()]
        CHECKED[self.route] += 1
        self.environment.events.request.fire(
            request_type="grpc", name=self.route, response_time=elapsed_ms, response_length=size,
            exception=RuntimeError(error) if error else None, context={},
        )  # fmt: skip


# One user class per endpoint of the catalogue (HousingUser, DigitsJsonUser, V2DigitsBinaryUser, ...,
# DigitsMlpJsonUser, ...), as module globals: Locust finds them here.
for _e in endpoints().values():
    if _e.kind == "upload":
        continue
    _base = {"json": _JsonUser, "v2_grpc": _GrpcUser}.get(_e.kind, _V2User)
    _attrs = {"route": _e.name, "path": _e.path, "model": _e.model, "items_option": _e.items_option}
    if _e.kind in ("v2_json", "v2_binary"):
        _attrs["binary"] = _e.kind == "v2_binary"
    globals()[_e.user] = type(_e.user, (_base,), {**_attrs, "__module__": __name__})

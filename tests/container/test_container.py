"""The cpu container image, run as it is deployed (`make test-container`; marker `container`).

Uses `model_serving:latest` from the local container storage (what `make container` builds from
the model store); where there is none, builds it first from this test session's smoke-trained
models with `deploy/container/build.sh cpu` (bentoml build + bentoml containerize). Runs it with the
machine's engine (podman here, Docker where a daemon answers) on 127.0.0.1 and checks: answers of
both JSON endpoints and of an image upload equal the image's own model files run offline with ONNX
Runtime; the server runs as a non-root user; no torch in the image, and MODEL_BACKEND=torchscript
stops it with one line naming the gpu image; SIGTERM (`stop`) lets requests in flight finish and the
container exits 0 within the grace period; a CPU quota (`--cpus 1`) sets the worker count. Image size
and cold start to ready are printed and written to CONTAINER_REPORT (a JSON file) when set."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import requests
import yaml
from PIL import Image
from scipy.special import softmax

from loadtests.payloads import png_bytes
from loadtests.server import REPO, free_port
from models.formats import FORMATS
from models.specs import HOUSING, MNIST
from service.images import to_mnist
from tests.conftest import run_perf_analyzer
from tests.service.test_shutdown import in_progress

pytestmark = pytest.mark.container

IMAGE = os.environ.get("CONTAINER_IMAGE", "model_serving:latest")
BENTO_PATH = "/home/bentoml/bento"  # BentoML's generated Dockerfile: BENTO_PATH
REPORT: dict = {}


def engine_env() -> dict:
    """CONTAINER_ENGINE, CONTAINERS_STORAGE_CONF and RUN_FLAGS as deploy/container/engine.sh sets them."""
    out = subprocess.run(
        ["bash", "-c", "source deploy/container/engine.sh && env -0"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        pytest.skip(out.stderr.strip().splitlines()[-1], allow_module_level=True)
    env = dict(line.split("=", 1) for line in out.stdout.split("\0") if "=" in line)
    return {k: env[k] for k in ("CONTAINER_ENGINE", "CONTAINERS_STORAGE_CONF", "RUN_FLAGS") if k in env}


ENGINE_ENV = engine_env()
ENGINE = ENGINE_ENV["CONTAINER_ENGINE"]


def engine(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [ENGINE, *args], env={**os.environ, **ENGINE_ENV}, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{ENGINE} {' '.join(args)}: {proc.stderr.strip()[-2000:]}")
    return proc


def run_flags() -> list[str]:
    return shlex.split(ENGINE_ENV.get("RUN_FLAGS", ""))


@pytest.fixture(scope="module")
def image(request) -> str:
    if engine("image", "inspect", IMAGE, check=False).returncode != 0:
        request.getfixturevalue("smoke_models")  # the session's store gets both models first
        t0 = time.monotonic()
        build = subprocess.run(
            ["deploy/container/build.sh", "cpu"], cwd=REPO, env={**os.environ, "PY": sys.executable},
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        REPORT["build_seconds"] = round(time.monotonic() - t0, 1)
    REPORT["image"] = IMAGE
    REPORT["image_size_mb"] = round(
        int(engine("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout) / 1e6
    )
    return IMAGE


class Container:
    """`ENGINE run -d` of the image on 127.0.0.1:<free port>; stopped and removed by `close()`."""

    def __init__(self, image: str, *flags: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_address = f"127.0.0.1:{free_port()}"  # the image's gRPC port, 8001
        env_flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        self.t0 = time.monotonic()
        self.id = engine(
            "run", "-d", *run_flags(), *flags, *env_flags, "-p", f"127.0.0.1:{self.port}:3000",
            "-p", f"{self.grpc_address}:8001", image,
        ).stdout.strip()  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from `run` to the first 200 of /readyz."""
        while time.monotonic() - self.t0 < timeout:
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - self.t0
            except requests.RequestException:  # not listening yet, or too busy starting to answer
                pass
            if self.state()["Status"] == "exited":
                raise AssertionError(f"container exited: {self.logs()[-2000:]}")
            time.sleep(0.1)
        raise AssertionError(f"not ready in {timeout} s: {self.logs()[-2000:]}")

    def state(self) -> dict:
        return json.loads(engine("inspect", "--format", "{{json .State}}", self.id).stdout)

    def logs(self) -> str:
        proc = engine("logs", self.id, check=False)
        return proc.stdout + proc.stderr

    def close(self) -> None:
        engine("rm", "-f", self.id, check=False)


@pytest.fixture(scope="module")
def container(image):
    c = Container(image)
    try:
        REPORT["cold_start_to_ready_s"] = round(c.wait_ready(), 2)
        yield c
    finally:
        c.close()


def model_file(c: Container, status: dict, model: str, tmp_path) -> str:
    """The image's own copy of a model's ONNX file (the bento's models folder), copied out."""
    name, version = status["models"][model]["tag"].split(":")
    dest = tmp_path / f"{name}.onnx"
    engine("cp", f"{c.id}:{BENTO_PATH}/models/{name}/{version}/{FORMATS['onnx'].file}", str(dest))
    return str(dest)


def test_answers_equal_the_image_model_files_run_offline(container, housing, mnist, tmp_path):
    status = requests.get(f"{container.url}/status", timeout=10).json()
    assert status["placement"]["backend"] == "onnx" and status["placement"]["device"] == "cpu"
    housing_session = ort.InferenceSession(model_file(container, status, HOUSING.name, tmp_path))
    mnist_session = ort.InferenceSession(model_file(container, status, MNIST.name, tmp_path))
    x = housing.test.x[:200]
    r = requests.post(f"{container.url}/predict_housing", json={"features": x.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    expected = housing_session.run(None, {HOUSING.input_name: x})[0][:, 0]
    np.testing.assert_allclose(np.array(r.json()), expected, rtol=1e-5, atol=1e-5)

    images = mnist.test.x[:64]
    r = requests.post(f"{container.url}/classify_digits", json={"images": images[:, 0].tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    probs = softmax(mnist_session.run(None, {MNIST.input_name: images})[0].astype(np.float64), axis=1)
    assert [p["label"] for p in r.json()] == probs.argmax(1).tolist()
    np.testing.assert_allclose([p["probabilities"] for p in r.json()], probs, atol=1e-5)

    png = png_bytes(mnist.test.x[7, 0])
    r = requests.post(f"{container.url}/classify_digit_image", files={"image": ("d.png", png, "image/png")})
    assert r.status_code == 200, r.text
    x_png = to_mnist(Image.open(io.BytesIO(png)))[None, None].astype(np.float32)
    assert r.json()["label"] == int(mnist_session.run(None, {MNIST.input_name: x_png})[0].argmax())


def test_grpc_serves_in_the_container_as_http_does(container, housing):
    """The image serves the Open Inference Protocol over gRPC on 8001 (GRPC_HOST=0.0.0.0 inside it)."""
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(container.grpc_address)
    assert client.is_server_ready() and client.is_model_ready("housing_mlp")
    rows = housing.test.x[:5]
    x = triton_grpc.InferInput("features", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    got = client.infer("housing_mlp", [x]).as_numpy("value")[:, 0]
    expected = requests.post(f"{container.url}/predict_housing", json={"features": rows.tolist()}, timeout=10)
    np.testing.assert_allclose(got, expected.json(), rtol=1e-6)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_runs_unchanged_against_the_container(container, perf_analyzer, protocol):
    address = container.grpc_address if protocol == "grpc" else container.url.removeprefix("http://")
    run_perf_analyzer("mnist_cnn", address, protocol, "random", concurrency=(2,))


def test_runs_as_non_root_without_torch(container, image):
    assert engine("exec", container.id, "id", "-u").stdout.strip() != "0"
    users = engine("top", container.id, "user").stdout.split()[1:] if ENGINE == "podman" else []
    assert users and "root" not in users, users
    probe = engine(
        "run", "--rm", *run_flags(), "--entrypoint", "python", image, "-c", "import torch", check=False
    )
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


def test_torchscript_in_the_cpu_image_stops_with_one_line_naming_the_gpu_image(image):
    c = Container(image, env={"MODEL_BACKEND": "torchscript"})
    try:
        deadline = time.monotonic() + 60
        while c.state()["Status"] != "exited" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.state()["Status"] == "exited" and c.state()["ExitCode"] != 0
        errors = [line for line in c.logs().splitlines() if line.startswith("error:")]
        assert errors and "make container-gpu" in errors[0] and "Traceback" not in c.logs(), c.logs()[-2000:]
    finally:
        c.close()


def test_stop_lets_requests_in_flight_finish_and_exits_0(image, mnist):
    # about shutdown: no shedding of the queued requests by the deadline or by their bytes (6 x 1.5 MB)
    c = Container(image, env={"MNIST_MAX_LATENCY_MS": "60000", "MAX_INFLIGHT_BYTES": str(64 << 20)})
    try:
        c.wait_ready()
        body = {"images": mnist.test.x[:256, 0].tolist()}

        def post(_):
            return requests.post(f"{c.url}/classify_digits", json=body, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(post, i) for i in range(6)]
            deadline = time.monotonic() + 30  # until all 6 reached the server (seconds of work queued)
            while in_progress(c) + sum(f.done() for f in futures) < 6:
                assert time.monotonic() < deadline, "the requests never all reached the server"
                time.sleep(0.01)
            grace = 30
            t0 = time.monotonic()
            stop = engine("stop", "-t", str(grace), c.id, check=False, timeout=grace + 30)
            stopped_in = time.monotonic() - t0
            answers = [f.result() for f in futures]
        assert stop.returncode == 0, stop.stderr
        assert [r.status_code for r in answers] == [200] * 6, [r.text[:200] for r in answers]
        assert all(len(r.json()) == 256 for r in answers)
        state = c.state()
        assert state["ExitCode"] == 0 and stopped_in < grace, (state, stopped_in)
        REPORT["stop_seconds_with_6_requests_in_flight"] = round(stopped_in, 2)
    finally:
        c.close()


def test_runs_with_the_read_only_root_of_the_kubernetes_deployment(image):
    """deploy/kubernetes/deployment.yaml's container settings: read-only root filesystem, its volumes
    as writable tmpfs, its environment."""
    manifest = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    (spec,) = manifest["spec"]["template"]["spec"]["containers"]
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    tmpfs = [f"--tmpfs={m['mountPath']}" for m in spec["volumeMounts"]]
    env = {e["name"]: e["value"] for e in spec["env"] if "value" in e}  # not the Secret's token
    c = Container(image, "--read-only", *tmpfs, env=env)
    try:
        c.wait_ready()
        r = requests.post(f"{c.url}/predict_housing", json={"features": [[1.0] * 8]}, timeout=10)
        assert r.status_code == 200 and len(r.json()) == 1, r.text
    finally:
        c.close()


def test_cpu_quota_sets_the_worker_count(image):
    c = Container(image, "--cpus", "1")
    try:
        c.wait_ready()
        status = requests.get(f"{c.url}/status", timeout=10).json()
        assert status["workers"] == 1 and status["models"]["mnist_cnn"]["intra_op_threads"] == 1, status
    finally:
        c.close()


def test_report():
    """Print (and save) the figures of this run: image size, build and cold-start times."""
    print(json.dumps(REPORT, indent=2))
    if path := os.environ.get("CONTAINER_REPORT"):
        with open(path, "w") as f:
            json.dump(REPORT, f, indent=2)
    assert "image_size_mb" in REPORT

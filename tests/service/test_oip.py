"""The Open Inference Protocol (KServe V2) with the real `tritonclient.http` against a real
`bentoml serve` (both backends): metadata, readiness, configuration, statistics, inference with JSON
and binary tensors equal to the stored model files run offline, V2 and JSON requests in the same
batches, `Server-Timing` on every prediction, malformed requests answered 4xx with `{"error": ...}`."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from scipy.special import softmax
from tritonclient.utils import InferenceServerException

from loadtests.payloads import png_bytes
from loadtests.protocol import server_timing
from loadtests.server import Server
from models import registry
from models.formats import FORMATS
from models.specs import HOUSING, MNIST
from tests.conftest import models_env, offline_outputs, server_pool


@pytest.fixture(scope="module")
def servers(smoke_models, tmp_path_factory):
    """A server per format (2 workers), started when first needed, all stopped at the module's end."""

    def env_of(backend: str) -> dict:
        return models_env(smoke_models, MODEL_BACKEND=backend, WORKERS="2")

    def add_client(srv: Server) -> None:
        srv.client = triton.InferenceServerClient(srv.url.removeprefix("http://"), network_timeout=60)

    with server_pool(tmp_path_factory, env_of, add_client) as get:
        yield get


def version_of(smoke_models, name: str) -> str:
    """The V2 version Triton's clients see: an integer, the served version's place among the model's
    versions in the store, oldest first."""
    import bentoml

    served = bentoml.models.get(smoke_models[name]["tag"])
    ordered = sorted(bentoml.models.list(name), key=lambda m: (m.info.creation_time, m.tag.version))
    return str(1 + [m.tag for m in ordered].index(served.tag))


def bentoml_version_of(smoke_models, name: str) -> str:
    return smoke_models[name]["tag"].split(":", 1)[1]


def test_server_and_model_metadata_readiness_config_and_statistics(format_server, smoke_models):
    server = format_server
    client = server.client
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "model_serving"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])
    platform = FORMATS[server.backend].triton[0]  # onnxruntime_onnx, pytorch_libtorch
    for spec, outputs in ((HOUSING, ["value"]), (MNIST, ["logits", "probabilities"])):
        version = version_of(smoke_models, spec.name)
        assert version.isdigit()
        # latest, the version served (an integer), and the BentoML version behind it
        for asked in ("", version, bentoml_version_of(smoke_models, spec.name)):
            assert client.is_model_ready(spec.name, asked)
            model = client.get_model_metadata(spec.name, asked)
            assert model["versions"] == [version] and model["platform"] == platform
            assert model["inputs"] == [
                {"name": spec.input_name, "datatype": "FP32", "shape": [-1, *spec.input_shape]}
            ]
            assert [o["name"] for o in model["outputs"]] == outputs
        config = client.get_model_config(spec.name)
        assert config["input"][0]["dims"] == list(spec.input_shape) and config["max_batch_size"] >= 256
        assert config["parameters"]["bentoml_tag"]["string_value"] == smoke_models[spec.name]["tag"]
        assert config["instance_group"][0]["kind"] == "KIND_CPU"
        with pytest.raises(InferenceServerException, match="not served"):
            client.get_model_metadata(spec.name, "no-such-version")
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("resnet50")
    assert not client.is_model_ready("resnet50")
    stats = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in stats} == set(registry.models())
    assert set(stats[0]["inference_stats"]) >= {"success", "fail", "queue", "compute_infer"}
    # every count Triton keeps is kept (perf_analyzer checks that the compute counts agree)
    client.infer(HOUSING.name, [_housing_input()])
    counts = {
        s["inference_stats"][k]["count"]
        for s in client.get_inference_statistics(HOUSING.name)["model_stats"]
        for k in ("compute_input", "compute_infer", "compute_output")
    }
    assert len(counts) == 1 and counts.pop() > 0


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_inference_equals_the_stored_model_files(format_server, smoke_models, housing, mnist, binary):
    server = format_server
    client = server.client
    rows = housing.test.x[:300]
    features = triton.InferInput(HOUSING.input_name, list(rows.shape), "FP32")
    features.set_data_from_numpy(rows, binary_data=binary)
    result = client.infer(HOUSING.name, [features], outputs=[triton.InferRequestedOutput("value", binary)])
    expected = offline_outputs(smoke_models["housing_mlp"]["tag"], server.backend, HOUSING, rows)
    np.testing.assert_allclose(result.as_numpy("value"), expected, atol=1e-5, rtol=0)
    assert result.get_response()["model_version"] == version_of(smoke_models, HOUSING.name)

    images = mnist.test.x[:100]  # more than one 64-image batch: the request is split and joined again
    tensor = triton.InferInput(MNIST.input_name, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    asked = [triton.InferRequestedOutput(name, binary) for name in ("logits", "probabilities")]
    result = client.infer(MNIST.name, [tensor], outputs=asked, request_id="r-1")
    logits = offline_outputs(smoke_models["mnist_cnn"]["tag"], server.backend, MNIST, images)
    np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.as_numpy("probabilities"), softmax(logits, axis=1), atol=1e-6)
    assert result.get_response()["id"] == "r-1"
    # no outputs named: tritonclient asks for all of them as binary data
    result = client.infer(MNIST.name, [tensor])
    assert result.as_numpy("logits").shape == (100, 10) and result.as_numpy("probabilities").shape == (
        100,
        10,
    )


def _housing_input() -> triton.InferInput:
    x = triton.InferInput(HOUSING.input_name, [1, 8], "FP32")
    x.set_data_from_numpy(np.ones((1, 8), np.float32))
    return x


def _timing(response) -> dict[str, str]:
    """`Server-Timing` as {metric: dur or desc}, parsed as the load tests parse it."""
    return server_timing(response.headers["server-timing"])


def test_v2_requests_join_the_json_endpoints_batches(server, mnist):
    """One V2 request of one image at a time while 24 JSON clients keep /classify_digits busy: a V2
    response whose batch held more than its one image was batched with JSON requests (one batcher per
    model, whatever the protocol)."""
    images = mnist.test.x[:64]
    stop = threading.Event()

    def json_client(k: int) -> int:
        sent = 0
        while not stop.is_set():
            body = {"images": images[k % 64 : k % 64 + 1, 0].tolist()}
            r = requests.post(f"{server.url}/classify_digits", json=body, timeout=60)
            assert r.status_code == 200, r.text
            sent += 1
        return sent

    shared = []
    with ThreadPoolExecutor(24) as pool:
        clients = [pool.submit(json_client, k) for k in range(24)]
        try:
            for i in range(60):
                doc = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                   "data": images[i % 64].ravel().tolist()}]}  # fmt: skip
                r = requests.post(f"{server.url}/v2/models/mnist_cnn/infer", json=doc, timeout=60)
                assert r.status_code == 200, r.text
                timing = _timing(r)
                assert timing["backend"] == f"{server.backend}/cpu"
                assert float(timing["queue"]) >= 0 and float(timing["compute"]) > 0
                shared.append(int(timing["batch"]) > 1)
                if sum(shared) >= 5:
                    break
        finally:
            stop.set()
        assert sum(c.result() for c in clients) > 0
    assert sum(shared) >= 5, shared


def test_every_prediction_answers_with_server_timing(server, mnist):
    r = requests.post(f"{server.url}/predict_housing", json={"features": [[1.0] * 8] * 3}, timeout=30)
    timing = _timing(r)
    assert set(timing) == {"queue", "compute", "batch", "backend"} and int(timing["batch"]) >= 3
    r = requests.post(
        f"{server.url}/classify_digits", json={"images": mnist.test.x[:100, 0].tolist()}, timeout=30
    )
    assert _timing(r)["batch"] == "64+36"  # split over two batches
    r = requests.post(
        f"{server.url}/classify_digit_image",
        files={"image": ("d.png", png_bytes(mnist.test.x[0, 0]), "image/png")},
        timeout=30,
    )
    assert r.status_code == 200 and _timing(r)["batch"] == "1"
    bad = requests.post(f"{server.url}/predict_housing", json={"features": [[1.0] * 7]}, timeout=30)
    assert bad.status_code == 400 and "server-timing" not in bad.headers  # no prediction, no timing


def _binary_request(images: np.ndarray, size: int | None = None, header_length=None, extra=b""):
    size = images.nbytes if size is None else size
    doc = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                       "parameters": {"binary_data_size": size}}]}  # fmt: skip
    head = json.dumps(doc).encode()
    length = str(len(head)) if header_length is None else header_length
    return head + images.astype("<f4").tobytes() + extra, {"Inference-Header-Content-Length": length}


def test_malformed_v2_requests_get_4xx_with_an_error_body(server, mnist):
    url = f"{server.url}/v2/models/mnist_cnn/infer"
    one = mnist.test.x[:1]
    nan = one.copy()
    nan[0, 0, 5, 5] = np.nan
    json_input = {"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": one.ravel().tolist()}

    def doc(outputs=None, **changed) -> tuple[bytes, dict]:
        body = {"inputs": [{**json_input, **changed}]}
        if outputs is not None:
            body["outputs"] = outputs
        return json.dumps(body).encode(), {}

    cases = {  # name: (body, headers, status, words in the error)
        "not json": (b"{nope", {}, 400, "not valid JSON"),
        "no inputs": (b'{"outputs": []}', {}, 400, "inputs must be a list"),
        "wrong input name": (*doc(name="x"), 400, "takes 'images'"),
        "FP64": (*doc(datatype="FP64"), 400, "FP32"),
        "shape": (*doc(shape=[1, 28, 28]), 400, "shape"),
        "count": (*doc(data=[0.5] * 700), 400, "needs 784"),
        "string value": (*doc(data=["0.5"] * 784), 400, "data[0]"),
        "unknown output": (*doc(outputs=[{"name": "x"}]), 400, "outputs[0].name"),
        "classification": (
            *doc(outputs=[{"name": "logits", "parameters": {"classification": 3}}]),
            400,
            "classification",
        ),
        "binary size": (*_binary_request(one, size=100), 400, "binary_data_size"),
        "binary short": (
            *_binary_request(one, header_length="999999"),
            400,
            "Inference-Header-Content-Length",
        ),
        "header length": (*_binary_request(one, header_length="abc"), 400, "Inference-Header-Content-Length"),
        "trailing bytes": (*_binary_request(one, extra=b"\0" * 8), 400, "8 bytes of binary data"),
        "too many": (*_binary_request(mnist.test.x[:257]), 400, "at most 256"),
    }
    for name, (body, headers, status, words) in cases.items():
        r = requests.post(url, data=body, headers=headers, timeout=30)
        assert r.status_code == status and words in r.json()["error"], (name, r.status_code, r.text)
    r = requests.post(f"{server.url}/v2/models/nope/infer", json={"inputs": [json_input]}, timeout=30)
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    r = requests.post(
        f"{server.url}/v2/models/mnist_cnn/versions/v0/infer", json={"inputs": [json_input]}, timeout=30
    )
    assert r.status_code == 404 and "not served" in r.json()["error"]
    # the server is fine afterwards
    body, headers = _binary_request(one)
    assert requests.post(url, data=body, headers=headers, timeout=30).status_code == 200


def test_values_are_not_checked_and_a_non_finite_output_is_null_in_json(format_server, mnist):
    """As Triton: V2 computes on any FP32 values it is sent (out of the JSON API's range, NaN); a
    non-finite output is `null` in a JSON answer (valid JSON), which tritonclient reads as NaN."""
    client = format_server.client
    big = np.full((1, 1, 28, 28), 2.0, dtype=np.float32)  # outside [0, 1]: a 400 on /classify_digits
    nan = mnist.test.x[:1].copy()
    nan[0, 0, 5, 5] = np.nan
    for images, finite in ((big, True), (nan, False)):
        tensor = triton.InferInput(MNIST.input_name, list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=True)
        result = client.infer(MNIST.name, [tensor], outputs=[triton.InferRequestedOutput("logits", False)])
        logits = result.as_numpy("logits")
        assert logits.shape == (1, 10) and bool(np.isfinite(logits).all()) == finite
        if not finite:
            assert result.get_output("logits")["data"] == [None] * 10  # the JSON answer: nulls
    r = requests.post(
        f"{format_server.url}/classify_digits", json={"images": big[:, 0].tolist()}, timeout=10
    )  # the JSON API keeps its range
    assert r.status_code == 400


def test_statistics_are_summed_over_the_workers(format_server):
    """Each of the 2 workers batches its own requests; /v2/models/stats counts all of them, whichever
    worker answers (new connections: the kernel spreads them over the workers)."""
    url = f"{format_server.url}/v2/models/{HOUSING.name}/stats"

    def success() -> int:
        counts = set()
        for _ in range(6):  # several workers answer: every one says the same
            stats = requests.get(url, timeout=10).json()["model_stats"][0]["inference_stats"]
            counts.add(stats["success"]["count"])
            assert (
                len({stats[k]["count"] for k in ("success", "queue", "compute_input", "compute_infer")}) == 1
            )
        assert len(counts) == 1, counts
        return counts.pop()

    time.sleep(0.5)
    before = success()
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [1.0] * 8}]}
    pids = set()
    for _ in range(40):
        r = requests.post(f"{format_server.url}/v2/models/{HOUSING.name}/infer", json=body, timeout=10)
        assert r.status_code == 200
    for _ in range(20):
        pids.add(requests.get(f"{format_server.url}/status", timeout=10).json()["worker"]["pid"])
    assert len(pids) == 2, pids  # both workers answered
    time.sleep(0.5)  # each worker publishes its counts within 0.1 s of a change
    assert success() - before == 40

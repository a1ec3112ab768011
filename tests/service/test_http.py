"""End-to-end: a real `bentoml serve` on 127.0.0.1 serving smoke-trained models, for both backends."""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
import torch
from PIL import Image
from scipy.special import softmax

from loadtests.accuracy import check
from loadtests.payloads import png_bytes
from loadtests.server import Server
from models.specs import HOUSING, MNIST, ONNX_FILE, TORCHSCRIPT_FILE


def offline_outputs(tag: str, backend: str, spec, x: np.ndarray) -> np.ndarray:
    """The stored model file of the backend under test, run directly (no server)."""
    import bentoml

    model_dir = Path(bentoml.models.get(tag).path)
    if backend == "onnx":
        session = ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
        return session.run(None, {spec.input_name: x})[0]
    module = torch.jit.load(str(model_dir / TORCHSCRIPT_FILE))
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module", params=["onnx", "torchscript"])
def server(request, smoke_models):
    env = {
        "MODEL_BACKEND": request.param,
        "MODEL_DEVICE": "cpu",
        "HOUSING_MODEL": smoke_models["housing_mlp"]["tag"],
        "MNIST_MODEL": smoke_models["mnist_cnn"]["tag"],
    }
    srv = Server(env)
    srv.backend = request.param
    yield srv
    srv.stop()


def post(server, route, **body):
    return requests.post(f"{server.url}/{route}", json=body, timeout=60)


def test_status_readyz_livez_metrics(server, smoke_models):
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200
    status = requests.get(f"{server.url}/status", timeout=5).json()
    assert status["ready"] is True
    for name, summary in smoke_models.items():
        model = status["models"][name]
        assert model["tag"] == summary["tag"]
        assert model["backend"] == server.backend and model["device"] == "cpu"
        metric = "test_rmse" if name == "housing_mlp" else "test_accuracy"
        assert model["test_metrics"][metric] == pytest.approx(summary[metric])
    if server.backend == "onnx":
        assert status["models"]["housing_mlp"]["execution_providers"] == ["CPUExecutionProvider"]
    post(server, "predict_housing", features=[[1.0] * 8])
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert "adaptive_batch_size_bucket{" in metrics and 'method_name="predict_housing"' in metrics
    paths = requests.get(f"{server.url}/docs.json", timeout=5).json()["paths"]
    assert {"/predict_housing", "/classify_digits", "/classify_digit_image"} <= set(paths)


def test_connections_are_spread_over_all_workers(server):
    """With 2+ workers (default: one per core) every worker accepts connections (SO_REUSEPORT,
    service/patches/reuseport.py); 20 connections opened together all landing on one worker would
    happen with probability ~2e-6 if the kernel spreads them."""
    workers = requests.get(f"{server.url}/status", timeout=5).json()["settings"]["workers"] or os.cpu_count()
    if workers < 2:
        pytest.skip("one worker on this machine")
    sessions = [requests.Session() for _ in range(20)]

    def worker_of(session):
        return session.get(f"{server.url}/status", timeout=10).json()["worker"]["pid"]

    with ThreadPoolExecutor(len(sessions)) as pool:
        pids = list(pool.map(worker_of, sessions))
    for session in sessions:
        session.close()
    assert len(set(pids)) == workers, pids


def test_housing_predictions_equal_offline_model(server, housing, smoke_models):
    x = housing.test.x[:300]
    expected = offline_outputs(smoke_models["housing_mlp"]["tag"], server.backend, HOUSING, x)[:, 0]
    for rows in (x[:1], x[1:8], x[8:300]):  # several request sizes
        r = post(server, "predict_housing", features=rows.tolist())
        assert r.status_code == 200, r.text
        got = np.array(r.json())
        assert got.shape == (len(rows),)
    got = np.array(post(server, "predict_housing", features=x.tolist()).json())
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_digit_predictions_equal_offline_model(server, mnist, smoke_models):
    x = mnist.test.x[:40]
    logits = offline_outputs(smoke_models["mnist_cnn"]["tag"], server.backend, MNIST, x)
    r = post(server, "classify_digits", images=x[:, 0].tolist())
    assert r.status_code == 200, r.text
    got = r.json()
    assert [g["label"] for g in got] == logits.argmax(1).tolist()
    np.testing.assert_allclose(
        [g["probabilities"] for g in got], softmax(logits.astype(np.float64), axis=1), atol=1e-5
    )


def upload(server, data: bytes, filename="digit.png", **form):
    return requests.post(
        f"{server.url}/classify_digit_image",
        files={"image": (filename, data, "image/png")},
        data=form,
        timeout=60,
    )


def test_real_digit_png_is_classified_through_upload(server, mnist):
    x = mnist.test.x[:20]
    json_labels = [p["label"] for p in post(server, "classify_digits", images=x[:, 0].tolist()).json()]
    agree = 0
    for i in range(20):
        r = upload(server, png_bytes(x[i, 0]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-6
        agree += body["label"] == json_labels[i]
        # the same digit drawn dark-on-light, 10x larger, RGB: auto-detected and inverted
        big = Image.fromarray(((1 - x[i, 0]) * 255).astype(np.uint8)).resize((280, 280)).convert("RGB")
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=95)
        r2 = upload(server, buf.getvalue(), "digit.jpg")
        assert r2.status_code == 200, r2.text
    # re-centring may move a digit by a pixel; the label must still agree for nearly all digits
    assert agree >= 18


BAD_HOUSING = {
    "row too short": {"features": [[1.0] * 7]},
    "row too long": {"features": [[1.0] * 9]},
    "flat row instead of a list of rows": {"features": [1.0] * 8},
    "string value": {"features": [[1.0] * 7 + ["1.0"]]},
    "bool value": {"features": [[1.0] * 7 + [True]]},
    "null value": {"features": [[1.0] * 7 + [None]]},
    "empty list": {"features": []},
    "too many rows": {"features": [[1.0] * 8] * 1001},
    "missing field": {"rows": [[1.0] * 8]},
}
BAD_IMAGES = {
    "pixel above 1": {"images": [[[2.0] * 28] * 28]},
    "negative pixel": {"images": [[[-0.1] * 28] * 28]},
    "27 rows": {"images": [[[0.0] * 28] * 27]},
    "flat image": {"images": [[0.0] * 784]},
    "empty list": {"images": []},
}


@pytest.mark.parametrize("case", sorted(BAD_HOUSING))
def test_bad_housing_requests_get_400_with_reason(server, case):
    r = post(server, "predict_housing", **BAD_HOUSING[case])
    assert r.status_code == 400, r.text
    body = r.json()
    assert "validation error" in body["error"] and body["detail"][0]["msg"]
    assert body["detail"][0]["loc"][0] in ("features", "rows") or body["detail"][0]["loc"] == []


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_requests_get_400_with_reason(server, case):
    r = post(server, "classify_digits", **BAD_IMAGES[case])
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"][0] == "images"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(server, literal):
    body = '{"features": [[1, 2, 3, 4, 5, 6, 7, ' + literal + "]]}"
    r = requests.post(
        f"{server.url}/predict_housing", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"] == ["features", 0, 7]


def test_malformed_json_and_oversize_body(server):
    r = requests.post(
        f"{server.url}/predict_housing",
        data=b'{"features": [[1,2',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400 and "json" in r.text.lower()
    big = b'{"features": [' + b",".join([b"[1,2,3,4,5,6,7,8]"] * 1_200_000) + b"]}"
    r = requests.post(
        f"{server.url}/predict_housing", data=big, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_bad_uploads(server):
    r = upload(server, b"this is not an image", "x.png")
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = upload(server, png_bytes(np.zeros((40, 40))))
    assert r.status_code == 400 and "no digit" in r.json()["error"]
    r = upload(server, png_bytes(np.zeros((28, 28))), invert="sideways")
    assert r.status_code == 400


def test_concurrent_requests_with_bad_ones_mixed_in(server, housing, smoke_models):
    x = housing.test.x[:42]
    expected = offline_outputs(smoke_models["housing_mlp"]["tag"], server.backend, HOUSING, x)[:, 0]
    bad = list(BAD_HOUSING.values())[:8]
    jobs = [("good", i, {"features": [x[i].tolist()]}) for i in range(42)] + [
        ("bad", i, b) for i, b in enumerate(bad)
    ]
    rng = np.random.default_rng(0)
    jobs = [jobs[i] for i in rng.permutation(len(jobs))]  # 50 requests, bad ones interleaved

    def send(job):
        kind, i, body = job
        return (
            kind,
            i,
            requests.post(
                f"{server.url}/predict_housing",
                data=json.dumps(body),
                headers={"Content-Type": "application/json"},
                timeout=60,
            ),
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(send, jobs))
    for kind, i, r in results:
        if kind == "good":
            assert r.status_code == 200, r.text
            assert r.json()[0] == pytest.approx(float(expected[i]), abs=1e-5)
        else:
            assert r.status_code == 400, r.text


def test_served_test_split_metrics_equal_stored_metrics(server, data_dir):
    """The whole test splits over HTTP (1000 rows / 250 images per request) reproduce the metadata."""
    result = check(server.url)
    h, m = result["housing_mlp"], result["mnist_cnn"]
    assert h["served_test_rmse"] == pytest.approx(h["stored_test_rmse"], abs=1e-6)
    assert m["served_test_accuracy"] == m["stored_test_accuracy"]

"""End-to-end: a real `bentoml serve` on 127.0.0.1 serving smoke-trained models. What only a real server
shows: answers equal to the stored files run offline and the served test-split metrics, for every
format (`format_server`); the protocol, limits and batching of a real worker, once (`server`, ONNX).
The same paths in-process, with fake backends, are tests/service/test_api.py."""

from __future__ import annotations

import gzip
import io
import json
import re
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image
from scipy.special import softmax

from loadtests.accuracy import check
from loadtests.payloads import png_bytes
from loadtests.report import batch_histogram, mean_batch
from models.specs import HOUSING, MNIST
from tests.conftest import offline_outputs, server_pool

# The ONNX server runs with the default MODEL_BACKEND=auto / MODEL_DEVICE=auto and every GPU hidden
# (CUDA_VISIBLE_DEVICES=""), so it also shows what `auto` picks on a machine without a GPU; the GPU
# side is tests/gpu. TorchScript and the AOTInductor package are asked for explicitly, on the CPU.
PLACEMENT_ENV = {
    "onnx": {"MODEL_BACKEND": "auto", "MODEL_DEVICE": "auto", "CUDA_VISIBLE_DEVICES": ""},
    "torchscript": {"MODEL_BACKEND": "torchscript", "MODEL_DEVICE": "cpu"},
    "aoti": {"MODEL_BACKEND": "aoti", "MODEL_DEVICE": "cpu"},
}


@pytest.fixture(scope="module")
def servers(smoke_models, tmp_path_factory):
    """A server per format, started when a test first needs it, all stopped at the end of the module."""

    def env_of(backend: str) -> dict:
        return {
            **PLACEMENT_ENV[backend],
            "HOUSING_MODEL": smoke_models["housing_mlp"]["tag"],
            "MNIST_MODEL": smoke_models["mnist_cnn"]["tag"],
        }

    with server_pool(tmp_path_factory, env_of) as get:
        yield get


def post(server, route, **body):
    return requests.post(f"{server.url}/{route}", json=body, timeout=60)


def post_raw(server, route, data, content_type="application/json", timeout=30):
    """A body sent as given (bytes, or an iterator for a chunked body), with its Content-Type."""
    return requests.post(
        f"{server.url}/{route}", data=data, headers={"Content-Type": content_type}, timeout=timeout
    )


def test_status_readyz_livez_metrics(format_server, smoke_models):
    server = format_server
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
    placement = status["placement"]
    assert (placement["backend"], placement["device"]) == (server.backend, "cpu")
    if server.backend == "onnx":  # chosen by `auto`, and it says why
        assert placement["reason"].startswith("auto: no GPU (CUDA_VISIBLE_DEVICES=''"), placement
        assert placement["reason"].endswith("-> onnx on cpu"), placement
        assert status["models"]["housing_mlp"]["execution_providers"] == ["CPUExecutionProvider"]
    post(server, "predict_housing", features=[[1.0] * 8])
    time.sleep(0.5)  # request counts reach the multiprocess registry every 0.25 s
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert "model_serving_batch_size_bucket{" in metrics and 'model="housing_mlp"' in metrics
    assert (
        "nv_inference_request_success_total{" in metrics
        and "nv_inference_queue_duration_us_total{" in metrics
    )
    assert 'model_serving_http_requests_total{route="/predict_housing",status="200"}' in metrics
    paths = requests.get(f"{server.url}/docs.json", timeout=5).json()["paths"]
    assert {"/predict_housing", "/classify_digits", "/classify_digit_image"} <= set(paths)
    page = requests.get(f"{server.url}/", timeout=5)
    assert page.status_code == 200 and smoke_models["housing_mlp"]["tag"] in page.text


def test_connections_are_spread_over_all_workers(server):
    """With 2+ workers every worker accepts connections (SO_REUSEPORT, service/patches/reuseport.py).
    Rounds of 4 x workers connections opened together: with the kernel spreading them, every worker
    shows up within a few rounds whatever the worker count (with 8 workers, one round misses a given
    worker with probability (7/8)^32 ~ 1.4 %); with stock BentoML's shared socket one worker would
    take them all."""
    workers = requests.get(f"{server.url}/status", timeout=5).json()["workers"]
    if workers < 2:
        pytest.skip("one worker (set WORKERS=2 or more)")
    width = 4 * workers

    def worker_of(_):
        return requests.get(f"{server.url}/status", headers={"Connection": "close"}, timeout=10).json()[
            "worker"
        ]["pid"]

    seen: Counter = Counter()
    with ThreadPoolExecutor(width) as pool:
        for _ in range(5):
            seen.update(pool.map(worker_of, range(width)))
            if len(seen) == workers:
                break
    assert len(seen) == workers, seen
    # No worker takes nearly everything (stock BentoML: one worker took most connections).
    assert max(seen.values()) < 0.9 * sum(seen.values()), seen


def test_housing_predictions_equal_offline_model(format_server, housing, smoke_models):
    server = format_server
    x = housing.test.x[:300]
    expected = offline_outputs(smoke_models["housing_mlp"]["tag"], server.backend, HOUSING, x)[:, 0]
    for rows in (x[:1], x[1:8], x[8:300]):  # several request sizes
        r = post(server, "predict_housing", features=rows.tolist())
        assert r.status_code == 200, r.text
        got = np.array(r.json())
        assert got.shape == (len(rows),)
    got = np.array(post(server, "predict_housing", features=x.tolist()).json())
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_digit_predictions_equal_offline_model(format_server, mnist, smoke_models):
    server = format_server
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
    r = post_raw(server, "predict_housing", body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"] == ["features", 0, 7]


def test_malformed_json_and_oversize_body(server):
    r = post_raw(server, "predict_housing", b'{"features": [[1,2')
    assert r.status_code == 400 and "json" in r.text.lower()
    big = b'{"features": [' + b",".join([b"[1,2,3,4,5,6,7,8]"] * 1_200_000) + b"]}"
    r = post_raw(server, "predict_housing", big)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_upload_limits_decompression_bomb_and_file_size(server):
    bomb = io.BytesIO()
    Image.new("L", (5000, 5000)).save(bomb, format="PNG")  # 25 Mpx in a ~25 KB file
    assert len(bomb.getvalue()) < 100_000
    r = upload(server, bomb.getvalue())
    assert r.status_code == 413 and "5000x5000 pixels" in r.json()["error"], r.text
    r = upload(server, png_bytes(np.zeros((28, 28))) + b"\0" * (5 * 1024 * 1024 + 1))
    assert r.status_code == 413 and "limit" in r.json()["error"], r.text


def test_chunked_body_over_the_limit_is_a_413(server):
    def chunks():  # no Content-Length: the limit is enforced while the body is read
        yield b'{"features": ['
        for _ in range(17 * 1024):
            yield b"[1,2,3,4,5,6,7,8]," * 60
        yield b"[1,2,3,4,5,6,7,8]]}"

    r = post_raw(server, "predict_housing", chunks(), timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"], r.text


def test_pickle_media_type_is_refused(server):
    r = post_raw(server, "predict_housing", b"\x80\x04K\x01.", "application/vnd.bentoml+pickle")
    assert r.status_code == 415 and "pickle" in r.json()["error"]


def test_malformed_multipart_is_a_400_not_a_500(server):
    boundary = "7c5156fb04a2177cf9e322ad31ebde44"
    body = f"--{boundary}\r\nNone--{boundary}--\r\n".encode()
    r = post_raw(server, "classify_digit_image", body, f"multipart/form-data; boundary={boundary}")
    assert r.status_code == 400 and r.json() == {"error": "Invalid multipart data."}


def test_bad_uploads(server):
    r = upload(server, b"this is not an image", "x.png")
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = upload(server, png_bytes(np.zeros((40, 40))))
    assert r.status_code == 400 and "no digit" in r.json()["error"]
    r = upload(server, png_bytes(np.zeros((28, 28))), invert="sideways")
    assert r.status_code == 400


def _batches(server) -> dict:
    return batch_histogram(requests.get(f"{server.url}/metrics", timeout=10).text)


def test_batch_isolation_valid_and_invalid_requests_mixed_on_every_batched_endpoint(
    server, housing, mnist, smoke_models
):
    """300 valid and 100 invalid requests per batched endpoint, sent 32 at a time in random order:
    every valid one gets 200 with its own answer (equal to the stored model run offline), every invalid
    one its own 400 with a message, and the valid ones really were batched together (mean batch > 1)."""
    model_of = {"predict_housing": HOUSING.name, "classify_digits": MNIST.name}
    rng = np.random.default_rng(0)
    x_h = housing.test.x[:300]
    x_m = mnist.test.x[:300]
    expected = {
        "predict_housing": offline_outputs(smoke_models["housing_mlp"]["tag"], server.backend, HOUSING, x_h)[
            :, 0
        ],
        "classify_digits": offline_outputs(
            smoke_models["mnist_cnn"]["tag"], server.backend, MNIST, x_m
        ).argmax(1),
    }
    bad = {"predict_housing": list(BAD_HOUSING.values()), "classify_digits": list(BAD_IMAGES.values())}
    bad["predict_housing"].append({"features": [[1e7] + [1.0] * 7]})  # over the documented bound
    jobs = []
    for route, x, field in (("predict_housing", x_h, "features"), ("classify_digits", x_m[:, 0], "images")):
        jobs += [(route, i, json.dumps({field: [x[i].tolist()]})) for i in range(len(x))]
        jobs += [(route, None, json.dumps(bad[route][k % len(bad[route])])) for k in range(100)]
    jobs = [jobs[i] for i in rng.permutation(len(jobs))]
    before = _batches(server)

    def send(job):
        route, i, body = job
        return route, i, post_raw(server, route, body, timeout=60)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(send, jobs))
    counts = Counter()
    for route, i, r in results:
        if i is None:
            assert r.status_code == 400 and r.json()["error"], r.text
            counts[route, "invalid -> 400"] += 1
        else:
            assert r.status_code == 200, r.text
            answer = r.json()[0]
            if route == "predict_housing":
                assert answer == pytest.approx(float(expected[route][i]), abs=1e-5)
            else:
                assert answer["label"] == int(expected[route][i])
            counts[route, "valid -> 200, own answer"] += 1
    assert counts == {
        (route, outcome): n
        for route in ("predict_housing", "classify_digits")
        for outcome, n in (("valid -> 200, own answer", 300), ("invalid -> 400", 100))
    }
    after = _batches(server)
    for route in ("predict_housing", "classify_digits"):
        assert mean_batch(before, after, model_of[route]) > 1, (
            f"{route}: requests were never batched together"
        )


def test_served_test_split_metrics_equal_stored_metrics(format_server, data_dir):
    server = format_server
    """The whole test splits over HTTP (1000 rows / 250 images per request) reproduce the metadata."""
    result = check(server.url)
    h, m = result["housing_mlp"], result["mnist_cnn"]
    assert h["served_test_rmse"] == pytest.approx(h["stored_test_rmse"], abs=1e-6)
    assert m["served_test_accuracy"] == m["stored_test_accuracy"]


def test_unknown_route_and_wrong_method_answer_json_errors(server):
    r = requests.get(f"{server.url}/nope", timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "GET /nope: Not Found"}
    r = requests.get(f"{server.url}/predict_housing", timeout=10)
    assert r.status_code == 405 and r.json()["error"] == "GET /predict_housing: Method Not Allowed"
    assert r.headers["Allow"] == "POST"


def test_compressed_body_is_refused_with_415(server):
    body = gzip.compress(json.dumps({"features": [[1.0] * 8]}).encode())
    r = requests.post(
        f"{server.url}/predict_housing",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert r.status_code == 415 and "Content-Encoding gzip is not supported" in r.json()["error"]


def _raw_get(server, extra_header: bytes) -> bytes:
    """GET /livez over a raw socket with one extra header line; the answer's first bytes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n" + extra_header + b"\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and len(answer) > 100:
                break
        return answer


def test_oversized_request_headers_get_431_and_the_worker_goes_on(server):
    """MAX_HEADER_BYTES (64 KiB): an 8 MiB header is refused with a JSON 431, not read into memory;
    a 30 KiB one is served, and so is the next normal request."""
    answer = _raw_get(server, b"X-Big: " + b"a" * (8 << 20))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head[:200]
    assert "exceed 65536 bytes" in json.loads(body)["error"]
    assert _raw_get(server, b"X-Ok: " + b"a" * 30_000).startswith(b"HTTP/1.1 200 ")
    assert post(server, "predict_housing", features=[[1.0] * 8]).status_code == 200


def _documented_paths() -> set[str]:
    """The service URLs that README.md and the Makefile (`make main` / `make serve`) print or show."""
    from loadtests.server import REPO

    text = (REPO / "README.md").read_text() + (REPO / "Makefile").read_text()
    hosts = re.findall(r"(?:localhost|127\.0\.0\.1):3000(/[\w./-]*)|\$\(URL\)(/[\w./-]*)", text)
    paths = {a or b for a, b in hosts}
    routes = ("/v2", "/docs", "/status", "/readyz", "/livez", "/healthz", "/metrics", "/predict", "/classify")
    for path in re.findall(r"`(?:GET |POST )?(/[\w./{}\[\]-]*)`", text):
        path = re.sub(r"\[[^\]]*\]", "", path)  # optional parts: `/v2/models/{name}[/versions/{v}]`
        if "..." not in path and (path == "/" or path.startswith(routes)):
            paths.add(path)
    return paths


def test_every_url_the_readme_and_make_main_show_answers(server, smoke_models):
    version = smoke_models["mnist_cnn"]["tag"].split(":", 1)[1]
    paths = _documented_paths()
    assert {"/", "/docs", "/docs.json", "/status", "/metrics", "/predict_housing"} <= paths, paths
    for path in sorted(paths):
        url = server.url + path.replace("{name}", "mnist_cnn").replace("{version}", version).replace(
            "{v}", version
        )
        r = requests.get(url, timeout=10)
        assert r.status_code in (200, 405), (path, r.status_code, r.text[:200])  # 405: a POST route

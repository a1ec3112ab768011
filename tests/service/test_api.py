"""The request path in-process (service/front.py + service/http.py through httpx's ASGITransport), with
fake backends where the backend is not the subject: every route answers as documented, limits, auth,
timeouts and overload answer their 4xx/5xx at once, Server-Timing is on every prediction, a failing
batch fails only its own requests, and a client that goes away is not computed. Milliseconds each;
tests/service/test_http.py and test_oip.py run the same paths on a real `bentoml serve`."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from loadtests.payloads import png_bytes
from models.specs import HOUSING, MNIST
from service.batching import CostModel
from service.dataplane import DataPlane
from service.front import FrontDoor
from service.http import HttpApi
from tests.service.inprocess import FakeBackend, bentoml_stand_in, fake_plane

pytestmark = pytest.mark.inprocess


def make_api(
    backends: dict | None = None, max_latency_ms: int = 10_000, **settings
) -> tuple[FrontDoor, DataPlane]:
    """The front door over a data plane of fake backends (`backends`: model name -> backend to use)."""
    plane = fake_plane(backends, max_latency_ms, **settings)
    return FrontDoor(HttpApi(plane), bentoml_stand_in, plane.settings), plane


def client(front) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://test", timeout=30)


def run(coro):
    return asyncio.run(coro)


ROW = [8.3252, 41.0, 6.9841, 1.0238, 322.0, 2.5556, 37.88, -122.23]


def test_json_endpoints_answer_from_the_model_rows_with_server_timing():
    front, _ = make_api()

    async def main():
        async with client(front) as c:
            housing = await c.post("/predict_housing", json={"features": [ROW, [1.0] * 8]})
            images = np.zeros((3, 28, 28))
            images[1, 0, 0] = 1.0
            digits = await c.post("/classify_digits", json={"images": images.tolist()})
            return housing, digits

    housing, digits = run(main())
    assert housing.status_code == 200 and housing.json() == pytest.approx([sum(ROW), 8.0], rel=1e-6)
    timing = housing.headers["server-timing"]
    assert re.fullmatch(
        r'queue;dur=[\d.]+, compute;dur=[\d.]+, batch;desc="2", backend;desc="onnx/cpu"', timing
    )
    answers = digits.json()
    assert [a["label"] for a in answers] == [0, 9, 0]  # logits = row sum x (1..10): argmax 9 when sum > 0
    assert all(len(a["probabilities"]) == 10 for a in answers)


def test_errors_are_json_and_name_the_problem():
    front, _ = make_api(max_body_bytes=4096)

    async def main():
        async with client(front) as c:
            return {
                "invalid": await c.post("/predict_housing", json={"features": [[1.0] * 7]}),
                "not found": await c.get("/nope"),
                "wrong method": await c.get("/predict_housing"),
                "too large": await c.post("/predict_housing", content=b"x" * 5000),
                "gzip": await c.post(
                    "/predict_housing", content=gzip.compress(b"{}"), headers={"Content-Encoding": "gzip"}
                ),  # fmt: skip
                "pickle": await c.post(
                    "/predict_housing",
                    content=b"\x80\x04.",
                    headers={"Content-Type": "application/vnd.bentoml+pickle"},
                ),  # fmt: skip
                "multipart": await c.post(
                    "/classify_digit_image",
                    content=b"--x\r\nNone--x--\r\n",
                    headers={"Content-Type": "multipart/form-data; boundary=x"},
                ),  # fmt: skip
            }

    r = run(main())
    assert r["invalid"].status_code == 400 and r["invalid"].json()["error"] == "1 validation error for Input"
    assert r["invalid"].json()["detail"][0]["loc"] == ["features", 0]
    assert "server-timing" not in r["invalid"].headers  # no prediction, no timing
    assert r["not found"].status_code == 404 and r["not found"].json() == {"error": "GET /nope: Not Found"}
    assert r["wrong method"].status_code == 405 and r["wrong method"].headers["allow"] == "POST"
    assert r["too large"].status_code == 413 and "limit is 4096 bytes" in r["too large"].json()["error"]
    assert r["gzip"].status_code == 415 and "Content-Encoding gzip" in r["gzip"].json()["error"]
    assert r["pickle"].status_code == 415 and "pickle" in r["pickle"].json()["error"]
    assert r["multipart"].status_code == 400 and r["multipart"].json() == {"error": "Invalid multipart data."}


def test_bentoml_paths_go_to_bentoml_and_the_rest_is_ours():
    front, _ = make_api()

    async def main():
        async with client(front) as c:
            return [
                await c.get(p) for p in ("/livez", "/readyz", "/metrics", "/static_content/x.js", "/status")
            ]

    livez, readyz, metrics, static, status = run(main())
    assert livez.text == readyz.text == metrics.text == static.text == "bentoml"
    assert status.json()["models"]["housing_mlp"]["tag"] == "housing_mlp:v1"


def test_authentication_guards_every_path_but_the_open_ones():
    front, _ = make_api(api_token="s3cret")

    async def main():
        async with client(front) as c:
            body = {"features": [ROW]}
            return (
                await c.post("/predict_housing", json=body),
                await c.post("/predict_housing", json=body, headers={"Authorization": "Bearer nope"}),
                await c.post("/predict_housing", json=body, headers={"Authorization": "Bearer s3cret"}),
                await c.get("/livez"),
                await c.get("/docs.json"),
            )

    missing, wrong, right, livez, docs = run(main())
    assert missing.status_code == wrong.status_code == docs.status_code == 401
    assert "missing" in missing.json()["error"] and "wrong bearer token" in wrong.json()["error"]
    assert right.status_code == 200 and livez.status_code == 200


def test_deadline_admission_answers_503_with_retry_after_at_once():
    gate = threading.Event()
    backend = FakeBackend(HOUSING, gate=gate)
    front, api = make_api({"housing_mlp": backend}, max_latency_ms=50)
    api.models["housing_mlp"].batcher.cost = CostModel(0.0, 0.01)  # 10 ms per row

    async def main():
        async with client(front) as c:
            first = asyncio.ensure_future(c.post("/predict_housing", json={"features": [ROW]}))
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            refused = await c.post("/predict_housing", json={"features": [ROW] * 10})  # ~100 ms > 50
            refusal_s = time.perf_counter() - t0
            gate.set()
            return await first, refused, refusal_s

    first, refused, refusal_s = run(main())
    assert first.status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1" and refusal_s < 1
    assert "past its deadline of 50 ms" in refused.json()["error"]


def test_concurrency_cap_and_request_timeout():
    gate = threading.Event()
    backend = FakeBackend(HOUSING, gate=gate)
    front, _ = make_api({"housing_mlp": backend}, max_concurrency=1, request_timeout_s=1)

    async def main():
        async with client(front) as c:
            held = asyncio.ensure_future(c.post("/predict_housing", json={"features": [ROW]}))
            await asyncio.sleep(0.05)
            over = await c.post("/predict_housing", json={"features": [ROW]})
            timed_out = await held  # the gate stays shut: REQUEST_TIMEOUT_S
            gate.set()
            return over, timed_out

    over, timed_out = run(main())
    assert over.status_code == 429 and "MAX_CONCURRENCY" in over.json()["error"]
    assert timed_out.status_code == 504 and "REQUEST_TIMEOUT_S" in timed_out.json()["error"]


def test_byte_budget_sheds_at_once_and_one_request_alone_always_fits():
    gate = threading.Event()
    backend = FakeBackend(MNIST, gate=gate)
    front, _ = make_api({"mnist_cnn": backend}, max_inflight_bytes=1 << 20)
    body = json.dumps({"images": np.zeros((40, 28, 28)).tolist()}).encode()  # ~0.25 MB each

    async def main():
        async with client(front) as c:
            sends = [asyncio.ensure_future(c.post("/classify_digits", content=body)) for _ in range(8)]
            await asyncio.sleep(0.2)
            gate.set()
            answers = await asyncio.gather(*sends)
            alone = await c.post("/classify_digits", content=body * 1)
            return answers, alone

    answers, alone = run(main())
    statuses = sorted(r.status_code for r in answers)
    assert 200 in statuses and 503 in statuses, statuses
    shed = next(r for r in answers if r.status_code == 503)
    assert shed.json()["error"].startswith("overloaded: ") and "MAX_INFLIGHT_BYTES" in shed.json()["error"]
    assert alone.status_code == 200


def test_a_failing_batch_fails_only_its_requests():
    gate = threading.Event()
    backend = FakeBackend(HOUSING, gate=gate, poison=13.0)
    front, _ = make_api({"housing_mlp": backend})

    async def main():
        async with client(front) as c:
            first = asyncio.ensure_future(c.post("/predict_housing", json={"features": [[1.0] * 8]}))
            await asyncio.sleep(0.05)  # the next requests queue together behind it
            batch = [asyncio.ensure_future(c.post("/predict_housing", json={"features": [[v] * 8]}))
                     for v in (2.0, 13.0, 3.0)]  # fmt: skip
            await asyncio.sleep(0.05)
            gate.set()
            answers = await asyncio.gather(first, *batch)
            after = await c.post("/predict_housing", json={"features": [[4.0] * 8]})
            return answers, after

    answers, after = run(main())
    assert answers[0].status_code == 200
    assert [r.status_code for r in answers[1:]] == [500, 500, 500]  # the three shared the failing batch
    assert answers[1].json() == {"error": "inference failed; the server log has the details"}
    assert after.status_code == 200 and after.json() == [32.0]


def test_a_client_that_goes_away_is_not_computed():
    """A request queued behind a long batch (expected wait above WATCH_DISCONNECT_S) whose client
    disconnects is dropped: the backend never sees its rows, and nothing is sent."""
    gate = threading.Event()
    backend = FakeBackend(HOUSING, gate=gate)
    front, api = make_api({"housing_mlp": backend})
    api.models["housing_mlp"].batcher.cost = CostModel(0.2, 0.0)  # 200 ms a batch: worth watching

    async def call(body: bytes, disconnect: asyncio.Event, sent: list):
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "method": "POST", "path": "/predict_housing", "headers": headers}
        await front(scope, receive, send)

    async def main():
        first_sent, gone_sent = [], []
        first_gone, gone = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(
            call(json.dumps({"features": [[1.0] * 8]}).encode(), first_gone, first_sent)
        )
        await asyncio.sleep(0.05)
        leaving = asyncio.ensure_future(call(json.dumps({"features": [[7.0] * 8]}).encode(), gone, gone_sent))
        await asyncio.sleep(0.05)
        gone.set()  # the client goes away while its request waits
        await leaving
        gate.set()
        await first
        return first_sent, gone_sent

    first_sent, gone_sent = run(main())
    assert first_sent[0]["status"] == 200 and gone_sent == []
    assert backend.rows_seen == 1  # the departed client's row never reached the backend


def test_open_inference_protocol_with_tritonclient_encoded_bodies():
    front, _ = make_api()
    images = np.zeros((3, 1, 28, 28), np.float32)
    images[2, 0, 0, :4] = 0.5
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=True)
    outputs = [
        triton.InferRequestedOutput("logits", binary_data=True),
        triton.InferRequestedOutput("probabilities"),
    ]
    body, header_length = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)

    async def main():
        async with client(front) as c:
            headers = {"Inference-Header-Content-Length": str(header_length)}
            infer = await c.post("/v2/models/mnist_cnn/versions/v1/infer", content=body, headers=headers)
            return infer, {p: await c.get(p) for p in (
                "/v2", "/v2/health/ready", "/v2/models/mnist_cnn", "/v2/models/mnist_cnn/config",
                "/v2/models/stats", "/v2/models/nope", "/v2/models/mnist_cnn/versions/v0")}  # fmt: skip

    infer, docs = run(main())
    assert infer.status_code == 200, infer.text
    result = triton.InferenceServerClient.parse_response_body(
        infer.content, header_length=int(infer.headers["inference-header-content-length"])
    )
    assert result.as_numpy("logits")[:, 0].tolist() == [0.0, 0.0, 2.0]
    assert result.as_numpy("probabilities").shape == (3, 10)
    assert "server-timing" in infer.headers
    assert docs["/v2"].json()["name"] == "model_serving" and docs["/v2/health/ready"].json() == {
        "ready": True
    }
    assert docs["/v2/models/mnist_cnn"].json()["versions"] == ["1"]  # an integer, as Triton's
    assert docs["/v2/models/mnist_cnn/config"].json()["max_batch_size"] == 256
    stats = {s["name"]: s for s in docs["/v2/models/stats"].json()["model_stats"]}
    assert stats["mnist_cnn"]["inference_count"] == 3 and stats["mnist_cnn"]["execution_count"] == 1
    assert docs["/v2/models/nope"].status_code == 404 and "unknown model" in docs["/v2/models/nope"].text
    assert docs["/v2/models/mnist_cnn/versions/v0"].status_code == 404


def test_upload_joins_the_mnist_batcher():
    front, api = make_api()

    async def main():
        async with client(front) as c:
            files = {"image": ("d.png", png_bytes(np.eye(28)), "image/png")}
            return await c.post("/classify_digit_image", files=files, data={"invert": "no"})

    r = run(main())
    assert r.status_code == 200 and set(r.json()) == {"label", "probabilities"}
    assert r.headers["server-timing"].endswith('batch;desc="1", backend;desc="onnx/cpu"')
    assert api.models["mnist_cnn"].stats.inference_count == 1


def test_docs_json_documents_every_route_and_the_first_page_links_work():
    front, api = make_api()
    routes = {route.path for route in front.routes.all}

    async def main():
        async with client(front) as c:
            doc = (await c.get("/docs.json")).json()
            page = await c.get("/")
            links = re.findall(r'href="(/[^"]*)"', page.text)
            return doc, page, {link: (await c.get(link)).status_code for link in links}, await c.get("/docs")

    doc, page, links, docs_page = run(main())
    assert routes <= set(doc["paths"]), routes - set(doc["paths"])
    assert {"/livez", "/readyz", "/metrics"} <= set(doc["paths"])
    assert (
        "BentoML Service" not in page.text
        and "housing_mlp:v1" in page.text
        and "/predict_housing" in page.text
    )
    assert links and all(status == 200 for status in links.values()), links
    assert {"/docs", "/docs.json", "/status", "/metrics"} <= set(links)
    assert "/static_content/swagger-ui-bundle.js" in docs_page.text and "https://" not in docs_page.text


def test_a_request_that_times_out_while_watching_its_client_gets_504():
    """REQUEST_TIMEOUT_S also ends a request that waits long enough to watch its connection."""
    gate = threading.Event()
    backend = FakeBackend(HOUSING, gate=gate)
    front, api = make_api({"housing_mlp": backend}, request_timeout_s=1)
    api.models["housing_mlp"].batcher.cost = CostModel(0.2, 0.0)  # 200 ms a batch: watched

    async def main():
        async with client(front) as c:
            held = asyncio.ensure_future(c.post("/predict_housing", json={"features": [ROW]}))
            await asyncio.sleep(0.05)
            waiting = await c.post("/predict_housing", json={"features": [ROW]})
            gate.set()
            held = await held
            await api.models["housing_mlp"].batcher.close()  # the batch in flight has finished
            return waiting, held

    waiting, held = run(main())
    assert waiting.status_code == 504 and held.status_code == 504
    assert backend.rows_seen == 1  # the request that timed out in the queue was never computed

"""Optional bearer-token authentication on a real server (API_TOKEN): the matrix endpoint x token
absent / wrong / right, the open probe paths, the token never shown by /status or the log, and the
token's sources (environment, file, both, empty) checked by the settings."""

from __future__ import annotations

import secrets

import pytest
import requests

from loadtests.payloads import png_bytes
from loadtests.server import Server
from service.settings import ServiceSettings
from tests.conftest import models_env

TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def server(smoke_models):
    with Server(models_env(smoke_models, API_TOKEN=TOKEN, WORKERS="1")) as srv:
        yield srv


def _requests(mnist) -> dict:
    image = mnist.test.x[0, 0]
    return {
        "predict_housing": dict(method="POST", json={"features": [[1.0] * 8]}),
        "classify_digits": dict(method="POST", json={"images": [image.tolist()]}),
        "classify_digit_image": dict(
            method="POST", files={"image": ("d.png", png_bytes(image), "image/png")}
        ),
        "status": dict(method="GET"),
        "docs.json": dict(method="GET"),
    }


@pytest.mark.parametrize("token", ["absent", "wrong", "right"])
def test_every_endpoint_needs_the_token(server, mnist, token):
    headers = {
        "absent": {},
        "wrong": {"Authorization": f"Bearer {TOKEN}x"},
        "right": {"Authorization": f"Bearer {TOKEN}"},
    }[token]
    for route, kwargs in _requests(mnist).items():
        r = requests.request(url=f"{server.url}/{route}", headers=headers, timeout=30, **kwargs)
        if token == "right":
            assert r.status_code == 200, (route, r.text[:200])
        else:
            assert r.status_code == 401, (route, r.status_code, r.text[:200])
            assert r.json()["error"].startswith("unauthorized: ")
            assert ("wrong bearer token" if token == "wrong" else "missing") in r.json()["error"]
            assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_probes_and_metrics_stay_open(server):
    for path in ("livez", "readyz", "metrics"):
        assert requests.get(f"{server.url}/{path}", timeout=10).status_code == 200, path


def test_the_token_is_never_shown(server):
    status = requests.get(f"{server.url}/status", headers=server.headers, timeout=10)
    assert status.status_code == 200 and TOKEN not in status.text
    assert status.json()["settings"]["api_token"] == "**********"
    assert TOKEN not in server.output()


def test_token_sources(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text("from-a-file\nsecond line, ignored\n")
    assert ServiceSettings(api_token_file=secret_file).token() == "from-a-file"
    assert ServiceSettings(api_token="from-env").token() == "from-env"
    assert ServiceSettings().token() is None
    with pytest.raises(ValueError, match="not both"):
        ServiceSettings(api_token="a", api_token_file=secret_file).token()
    with pytest.raises(ValueError, match="empty"):
        ServiceSettings(api_token=" ").token()
    with pytest.raises(ValueError, match="No such file"):
        ServiceSettings(api_token_file=tmp_path / "missing").token()


def test_grpc_needs_the_same_token(server):
    """gRPC: `authorization: Bearer <token>` metadata, UNAUTHENTICATED without it; the standard
    health service stays open (Kubernetes' gRPC probes send no token), as /livez and /readyz do."""
    import grpc
    import tritonclient.grpc as triton_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.utils import InferenceServerException

    client = triton_grpc.InferenceServerClient(server.grpc_address)
    for headers in (None, {"authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.get_model_metadata("housing_mlp", headers=headers)
    meta = client.get_model_metadata("housing_mlp", headers={"authorization": f"Bearer {TOKEN}"})
    assert meta.name == "housing_mlp"
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_address))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING

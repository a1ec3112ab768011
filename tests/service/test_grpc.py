"""The Open Inference Protocol over gRPC with Triton's own client (`tritonclient.grpc`) and the raw
generated stub, against a real `bentoml serve` per format: health (V2 and grpc.health.v1), metadata
with integer versions, configuration, statistics, inference equal to the stored files run offline
and to the JSON endpoints, `server-timing` trailing metadata, and malformed messages answered with
the right status codes (never UNKNOWN or INTERNAL)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from models import registry
from models.formats import FORMATS
from models.specs import HOUSING, MNIST
from tests.conftest import models_env, offline_outputs, server_pool


@pytest.fixture(scope="module")
def servers(smoke_models, tmp_path_factory):
    def env_of(backend: str) -> dict:
        return models_env(
            smoke_models, MODEL_BACKEND=backend, WORKERS="2", MAX_BODY_BYTES=str(4 << 20),
            MODELS__DIGITS_MLP__QUEUE_DELAY_US="50000",  # test_a_queue_delay_holds_a_lone_call_...
        )  # fmt: skip

    with server_pool(tmp_path_factory, env_of) as get:
        yield get


@pytest.fixture(scope="module")
def stub(format_server):
    channel = grpc.insecure_channel(format_server.grpc_address)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def test_health_metadata_config_and_statistics(format_server, stub, smoke_models):
    client = triton_grpc.InferenceServerClient(format_server.grpc_address)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "model_serving" and "statistics" in meta["extensions"]
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(format_server.grpc_address))
    for service in ("", *registry.models()):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    platform = FORMATS[format_server.backend].triton[0]
    for name in registry.models():
        spec = registry.get(name).spec
        assert client.is_model_ready(name)
        model = client.get_model_metadata(name, as_json=True)
        assert model["versions"][0].isdigit() and model["platform"] == platform
        assert model["inputs"] == [
            {"name": spec.input_name, "datatype": "FP32", "shape": [str(d) for d in (-1, *spec.input_shape)]}
        ]
        config = client.get_model_config(name, as_json=True)["config"]
        assert config["parameters"]["bentoml_tag"]["string_value"] == smoke_models[name]["tag"]
        assert client.is_model_ready(name, model["versions"][0])
    assert not client.is_model_ready("resnet50")
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.get_model_metadata("resnet50")
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.get_model_metadata(HOUSING.name, "999")
    before = client.get_inference_statistics(HOUSING.name, as_json=True)["model_stats"][0]
    x = triton_grpc.InferInput("features", [3, 8], "FP32")
    x.set_data_from_numpy(np.ones((3, 8), np.float32))
    client.infer(HOUSING.name, [x])
    import time

    time.sleep(0.3)  # the other worker's counts arrive within 0.1 s
    after = client.get_inference_statistics(HOUSING.name, as_json=True)["model_stats"][0]
    stats = after["inference_stats"]
    counts = {int(stats[k].get("count", 0)) for k in ("success", "queue", "compute_input", "compute_infer")}
    assert len(counts) == 1  # perf_analyzer checks that these agree
    assert int(after.get("inference_count", 0)) - int(before.get("inference_count", 0)) == 3


def test_inference_equals_the_stored_files_and_the_json_endpoints(
    format_server, stub, smoke_models, housing, mnist
):
    client = triton_grpc.InferenceServerClient(format_server.grpc_address)
    rows = housing.test.x[:300]
    x = triton_grpc.InferInput(HOUSING.input_name, list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    result = client.infer(HOUSING.name, [x])
    expected = offline_outputs(smoke_models["housing_mlp"]["tag"], format_server.backend, HOUSING, rows)
    np.testing.assert_allclose(result.as_numpy("value"), expected, atol=1e-5, rtol=0)
    assert result.get_response().model_version.isdigit()

    images = mnist.test.x[:100]  # more than one 64-image batch: split and joined again
    x = triton_grpc.InferInput(MNIST.input_name, list(images.shape), "FP32")
    x.set_data_from_numpy(images)
    result = client.infer(MNIST.name, [x], outputs=[triton_grpc.InferRequestedOutput("probabilities")])
    answers = requests.post(
        f"{format_server.url}/classify_digits", json={"images": images[:, 0].tolist()}, timeout=30
    ).json()
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), [a["probabilities"] for a in answers], atol=1e-6
    )
    # the raw stub: fp32_contents instead of raw bytes, and the Server-Timing trailing metadata
    request = service_pb2.ModelInferRequest(model_name="digits_mlp")
    tensor = request.inputs.add(name="images", datatype="FP32", shape=[1, 1, 8, 8])
    tensor.contents.fp32_contents.extend([8.0] * 64)
    response, call = stub.ModelInfer.with_call(request)
    assert [o.name for o in response.outputs] == ["logits", "probabilities"]
    timing = dict(call.trailing_metadata())["server-timing"]
    assert "queue;dur=" in timing and "compute;dur=" in timing


def _request(**changes) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=changes.pop("model", HOUSING.name))
    shape = changes.pop("shape", [1, 8])
    tensor = request.inputs.add(
        name=changes.pop("name", "features"), datatype=changes.pop("datatype", "FP32"), shape=shape
    )
    request.raw_input_contents.append(changes.pop("raw", np.ones(shape, np.float32).tobytes()))
    for key, value in changes.items():
        setattr(request, key, value) if key != "outputs" else request.outputs.add(name=value)
    del tensor
    return request


def test_malformed_messages_get_the_right_status_and_nothing_else_breaks(format_server, stub):
    """A fuzz of malformed messages: each answered with its status, none UNKNOWN or INTERNAL."""
    no_inputs = service_pb2.ModelInferRequest(model_name=HOUSING.name)
    two_inputs = _request()
    two_inputs.inputs.add(name="features", datatype="FP32", shape=[1, 8])
    both = _request()
    both.inputs[0].contents.fp32_contents.extend([1.0] * 8)
    cases = {
        "wrong dtype": (_request(datatype="FP64"), grpc.StatusCode.INVALID_ARGUMENT),
        "wrong name": (_request(name="x"), grpc.StatusCode.INVALID_ARGUMENT),
        "wrong shape": (
            _request(shape=[1, 7], raw=np.ones(7, np.float32).tobytes()),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "short bytes": (_request(raw=b"\0" * 31), grpc.StatusCode.INVALID_ARGUMENT),
        "no rows": (_request(shape=[0, 8], raw=b""), grpc.StatusCode.INVALID_ARGUMENT),
        "too many rows": (
            _request(shape=[1001, 8], raw=np.ones((1001, 8), np.float32).tobytes()),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "missing inputs": (no_inputs, grpc.StatusCode.INVALID_ARGUMENT),
        "two inputs": (two_inputs, grpc.StatusCode.INVALID_ARGUMENT),
        "raw and contents": (both, grpc.StatusCode.INVALID_ARGUMENT),
        "unknown output": (_request(outputs="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        "unknown model": (_request(model="resnet50"), grpc.StatusCode.NOT_FOUND),
        "unknown version": (_request(model_version="999"), grpc.StatusCode.NOT_FOUND),
        "huge message": (
            _request(shape=[1, 8], raw=b"\0" * (5 << 20)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    }
    for name, (request, status) in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == status, (name, info.value.code(), info.value.details())
        assert info.value.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), name
    # NaN and out-of-range values are computed on, as Triton does (no value checks over V2)
    nan = _request(raw=np.full((1, 8), np.nan, np.float32).tobytes())
    out = stub.ModelInfer(nan, timeout=30)
    assert np.isnan(np.frombuffer(out.raw_output_contents[0], "<f4")).all()
    assert stub.ModelInfer(_request(), timeout=30).outputs[0].name == "value"  # fine afterwards


def test_a_queue_delay_holds_a_lone_call_for_its_batch(format_server, stub):
    """MODELS__DIGITS_MLP__QUEUE_DELAY_US (50 ms here; Triton's max_queue_delay_microseconds): a call
    alone in its batcher waits that long for others to join its batch, as its server-timing says; a
    model without one runs it at once. (That calls then share batches: tests/service/test_batching.py.)"""
    import re

    def queue_ms(request) -> float:
        _, call = stub.ModelInfer.with_call(request, timeout=30)
        return float(re.search(r"queue;dur=([0-9.]+)", dict(call.trailing_metadata())["server-timing"])[1])

    assert queue_ms(_request(model="digits_mlp", name="images", shape=[1, 1, 8, 8])) >= 45
    assert queue_ms(_request()) < 45
    # and Triton's model configuration says so
    for name, delay in (("digits_mlp", 50_000), ("housing_mlp", 0)):
        config = stub.ModelConfig(service_pb2.ModelConfigRequest(name=name)).config
        assert config.dynamic_batching.max_queue_delay_microseconds == delay


def test_server_reflection_describes_the_services(format_server):
    """What grpcurl uses to list and call the services without .proto files."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    channel = grpc.insecure_channel(format_server.grpc_address)
    database = ProtoReflectionDescriptorDatabase(channel)
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(database.get_services())
    service = DescriptorPool(database).FindServiceByName("inference.GRPCInferenceService")
    assert {"ModelInfer", "ModelMetadata", "ModelConfig", "ModelStatistics", "ServerReady"} <= {
        m.name for m in service.methods
    }
    channel.close()


def test_grpcio_s_own_server_still_serves_everything(smoke_models, housing):
    """GRPC_SERVER=grpcio (grpc.aio, the fallback of the default pygrpc-native): the same servicer
    answers inference, health, reflection and refusals."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    from loadtests.server import Server

    with Server(models_env(smoke_models, WORKERS="1", GRPC_SERVER="grpcio")) as server:
        assert requests.get(f"{server.url}/status", timeout=10).json()["settings"]["grpc_server"] == "grpcio"
        client = triton_grpc.InferenceServerClient(server.grpc_address)
        rows = housing.test.x[:10]
        x = triton_grpc.InferInput(HOUSING.input_name, list(rows.shape), "FP32")
        x.set_data_from_numpy(rows)
        expected = offline_outputs(smoke_models["housing_mlp"]["tag"], "onnx", HOUSING, rows)
        np.testing.assert_allclose(client.infer(HOUSING.name, [x]).as_numpy("value"), expected, atol=1e-5)
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
            client.infer(MNIST.name, [x])
        channel = grpc.insecure_channel(server.grpc_address)
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert "inference.GRPCInferenceService" in ProtoReflectionDescriptorDatabase(channel).get_services()
        channel.close()

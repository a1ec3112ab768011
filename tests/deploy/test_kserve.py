"""deploy/kserve: the ServingRuntime and InferenceServices are valid KServe 0.15.2 resources, checked
offline against deploy/kserve/kserve-sdk-0.15.2.schema.json (KServe's types as its SDK on PyPI carries
them: no field it does not know, the types it gives, the fields it requires) with Kubernetes' own
types checked against the strict Kubernetes schemas; and they fit this service: the runtime declares
the Open Inference Protocol over REST and gRPC (`v2`, `grpc-v2`), the InferenceServices name it and
its model format, the ports are the image's HTTP port and GRPC_PORT."""

from __future__ import annotations

import copy
import importlib.util
import json

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from loadtests.server import REPO
from service.settings import ServiceSettings

KSERVE = REPO / "deploy" / "kserve"
SCHEMA = json.loads((KSERVE / "kserve-sdk-0.15.2.schema.json").read_text())
API_VERSIONS = {
    "ServingRuntime": "serving.kserve.io/v1alpha1",
    "InferenceService": "serving.kserve.io/v1beta1",
}


def k8s_registry() -> Registry:
    """The strict Kubernetes definitions the schema refers to (deploy/kserve/sdk_schema.py's), at
    the Kubernetes version tests/deploy/test_kubernetes.py validates against."""
    from tests.deploy.test_kubernetes import K8S_VERSION

    spec = importlib.util.spec_from_file_location("sdk_schema", KSERVE / "sdk_schema.py")
    sdk_schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sdk_schema)
    definitions = sdk_schema.k8s_definitions(K8S_VERSION)
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


REGISTRY = k8s_registry()


def errors(doc: dict) -> list[str]:
    root = SCHEMA["roots"][doc["kind"]]
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{root}", "$defs": SCHEMA["$defs"]}, registry=REGISTRY
    )
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def docs() -> list[dict]:
    return [doc for path in sorted(KSERVE.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


def by_kind(kind: str) -> list[dict]:
    return [doc for doc in docs() if doc["kind"] == kind]


@pytest.mark.parametrize("doc", docs(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_every_resource_is_valid_against_kserves_schema(doc):
    assert doc["apiVersion"] == API_VERSIONS[doc["kind"]]
    assert errors(doc) == []


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "predictor", "model", "protocolVersions"), "v2"),  # KServe's field is protocolVersion
        (("spec", "predictor", "model", "modelFormat", "nam"), "x"),
        (("spec", "predictor", "model", "readinessProbe", "grpc", "port"), "8001"),  # Kubernetes: integer
    ],
)
def test_the_validation_catches_a_wrong_field_or_type(path, value):
    doc = copy.deepcopy(by_kind("InferenceService")[-1])
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    assert errors(doc), f"{'.'.join(path)} = {value!r} passed"


def test_a_missing_required_field_is_caught():
    runtime = copy.deepcopy(by_kind("ServingRuntime")[0])
    del runtime["spec"]["containers"]
    assert any("containers" in e for e in errors(runtime))
    runtime = copy.deepcopy(by_kind("ServingRuntime")[0])
    runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"  # strict Kubernetes
    assert errors(runtime)


def test_the_runtime_speaks_v2_over_rest_and_grpc_and_the_services_use_it():
    (runtime,) = by_kind("ServingRuntime")
    spec = runtime["spec"]
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    (container,) = spec["containers"]
    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert [p["containerPort"] for p in container["ports"]] == [3000]  # the image's HTTP port
    protocols = set()
    for service in by_kind("InferenceService"):
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime["metadata"]["name"]
        assert model["modelFormat"]["name"] in formats
        assert model["protocolVersion"] in spec["protocolVersions"]
        protocols.add(model["protocolVersion"])
        if model["protocolVersion"] == "grpc-v2":
            assert model["ports"] == [
                {"name": "h2c", "containerPort": ServiceSettings().grpc_port, "protocol": "TCP"}
            ]
            assert model["readinessProbe"]["grpc"]["port"] == ServiceSettings().grpc_port
    assert protocols == {"v2", "grpc-v2"}

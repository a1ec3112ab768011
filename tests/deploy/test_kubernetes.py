"""deploy/kubernetes: every manifest is valid against the Kubernetes schemas (kubernetes-validate,
strict: unknown fields are errors), and says what a deployment of this service needs: probes on
/readyz and /livez, non-root with a read-only root filesystem, resources, the GPU variant's GPU. That
the image really runs with that read-only root and environment is tests/container's."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from loadtests.server import REPO

MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
K8S_VERSION = "1.30.0"  # oldest still-supported minor at the time of writing; strict schema


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "deploy" / "kubernetes" / name).read_text())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validation_catches_a_wrong_field():
    doc = load("deployment.yaml")
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kinds_present():
    kinds = {load(p.name)["kind"] for p in MANIFESTS}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_deployment_probes_security_and_resources(name):
    pod = load(name)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["API_TOKEN"] is None  # from a Secret (valueFrom), never written in the manifest
    assert env["BENTOML_HOME"].startswith(tuple(mounts)), (env, mounts)  # writable, outside the image
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == (1 if name == "deployment-gpu.yaml" else None)


def test_service_and_autoscaling_target_the_cpu_deployment():
    labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert load("service.yaml")["spec"]["selector"].items() <= labels.items()
    assert load("pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert load("hpa.yaml")["spec"]["scaleTargetRef"]["name"] == load("deployment.yaml")["metadata"]["name"]

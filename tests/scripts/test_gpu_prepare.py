"""scripts/gpu_prepare.py: the dependency walk for the GPU machine and the check of what is carried
(real wheels' metadata, written here as pip writes them; the download itself is `make gpu-prepare`)."""

from __future__ import annotations

import importlib.util
import zipfile

import pytest

from loadtests.server import REPO


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("gpu_prepare", REPO / "scripts" / "gpu_prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wheel(tmp_path, name: str, version: str, *requires: str):
    path = tmp_path / f"{name}-{version}-py3-none-any.whl"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            f"Name: {name}",
            f"Version: {version}",
            *(f"Requires-Dist: {r}" for r in requires),
        ]
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", metadata + "\n")
    return path


def test_the_walk_has_the_runtime_dependencies_with_their_extras_and_no_dev_tools(prepare):
    deps = prepare.closure(prepare.PROJECT)
    assert {"bentoml", "uvicorn", "locust", "torch", "tritonclient", "geventhttpclient"} <= set(deps)
    assert "http" in deps["tritonclient"]  # tritonclient[http] brings geventhttpclient
    assert not {"ruff", "schemathesis", "fastapi", "kubernetes-validate"} & set(deps)
    assert "colorama" not in deps  # click's, on Windows only: markers are evaluated for Linux


def test_a_requirement_neither_carried_nor_there_or_a_carried_version_out_of_range_is_reported(
    prepare, tmp_path
):
    wheels = [
        wheel(tmp_path, "app", "1.0", "lib>=2", "numpy", "missing-one", "winonly; sys_platform == 'win32'"),
        wheel(tmp_path, "lib", "1.5"),
        wheel(tmp_path, "client", "1.0", "extra-dep; extra == 'http'"),
    ]
    problems = prepare.check(wheels, {"client": {"http"}}, present={"numpy"})
    assert problems == [
        "app-1.0-py3-none-any.whl needs lib>=2, carried: lib 1.5",
        "app-1.0-py3-none-any.whl needs missing-one: neither carried nor on the GPU machine",
        'client-1.0-py3-none-any.whl needs extra-dep; extra == "http": neither carried nor on the GPU '
        "machine",
    ]
    assert prepare.check(wheels[1:2], {}, present=set()) == []

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
    problems = prepare.check(wheels, {"client": {"http"}}, present={"numpy": None})
    assert problems == [
        "app-1.0-py3-none-any.whl needs lib>=2, carried: lib 1.5",
        "app-1.0-py3-none-any.whl needs missing-one: neither carried nor on the GPU machine",
        'client-1.0-py3-none-any.whl needs extra-dep; extra == "http": neither carried nor on the GPU '
        "machine",
    ]
    assert prepare.check(wheels[1:2], {}, present={}) == []


def test_a_version_there_that_a_carried_wheel_excludes_is_reported(prepare, tmp_path):
    wheels = [wheel(tmp_path, "grpcio_reflection", "1.80.1", "protobuf<7.0.0,>=6.31.1")]
    there = {"protobuf": prepare.Version("7.36.2")}
    assert prepare.check(wheels, {}, present=there) == [
        "grpcio_reflection-1.80.1-py3-none-any.whl needs protobuf<7.0.0,>=6.31.1, the GPU machine has "
        "protobuf 7.36.2"
    ]
    assert prepare.check(wheels, {}, present={"protobuf": prepare.Version("6.33.6")}) == []


def test_the_list_gives_versions_where_known_and_a_clash_with_them_is_carried(prepare, tmp_path):
    listed = tmp_path / "there.txt"
    listed.write_text("# a comment\nnumpy\nprotobuf==7.36.2  # seen there\nML_Dtypes==0.6.0\n")
    present = prepare.present_there(listed)
    assert present == {
        "numpy": None,
        "protobuf": prepare.Version("7.36.2"),
        "ml-dtypes": prepare.Version("0.6.0"),
    }
    clash = prepare.clashes(prepare.closure(prepare.PROJECT), present)
    # the project's own metadata: grpcio-reflection (protobuf < 7) and tritonclient (ml-dtypes <= 0.5.4)
    assert set(clash) == {"protobuf", "ml-dtypes"}, clash
    assert "the GPU machine has 7.36.2" in clash["protobuf"]
    assert prepare.clashes(prepare.closure(prepare.PROJECT), {"protobuf": prepare.Version("6.33.6")}) == {}

"""Triton Inference Server as the yardstick: the same model.onnx files served by Triton's Python
backend running ONNX Runtime (loadtests/triton_repository/model.py), two instances per model and
dynamic batching, as the Triton figures in BENCHMARKS.md were first measured.

    scripts/triton_yardstick.sh [--http-port 8010 --grpc-port 8011 --instances 2 --max-batch-size 64]

The server is the tritonserver binary and Python backend that PyPI's nvidia-pytriton 0.7.0 bundles,
started here as Triton is (a model repository, `tritonserver --model-repository`), not through
PyTriton's proxy API (which adds its own hop per request). It runs in its own environment,
build/triton-venv (PyTriton pins numpy < 2), so it imports nothing of this project:
scripts/triton_yardstick.sh passes the model files of the store. Listens on 127.0.0.1; serves until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort

HERE = Path(__file__).resolve().parent
MODEL_PY = HERE / "triton_repository" / "model.py"


def config_pbtxt(name: str, onnx_path: str, instances: int, max_batch_size: int) -> str:
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])

    def tensors(kind: str, items) -> str:
        rows = []
        for t in items:
            dims = ", ".join(str(d) if isinstance(d, int) else "-1" for d in t.shape[1:])
            rows.append(f'  {{ name: "{t.name}" data_type: TYPE_FP32 dims: [ {dims} ] }}')
        return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"

    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        + tensors("input", session.get_inputs())
        + tensors("output", session.get_outputs())
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\ndynamic_batching {{ }}\n"
        + f'parameters: {{ key: "onnx_path" value: {{ string_value: "{onnx_path}" }} }}\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("models", nargs="+", metavar="NAME=MODEL.ONNX", help="models to serve")
    parser.add_argument("--http-port", type=int, default=8010)
    parser.add_argument("--grpc-port", type=int, default=8011)
    parser.add_argument("--metrics-port", type=int, default=8012)
    parser.add_argument("--instances", type=int, default=2, help="instance_group count per model")
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    import pytriton

    bundled = Path(pytriton.__file__).parent / "tritonserver"
    work = Path(tempfile.mkdtemp(prefix="triton-yardstick-"))
    server = work / "tritonserver"
    shutil.copytree(bundled, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(
        bundled / "python_backend_stubs" / version / "triton_python_backend_stub",
        server / "backends" / "python",
    )
    repository = work / "models"
    for spec in args.models:
        name, _, onnx_path = spec.partition("=")
        (repository / name / "1").mkdir(parents=True)
        shutil.copy(MODEL_PY, repository / name / "1" / "model.py")
        (repository / name / "config.pbtxt").write_text(
            config_pbtxt(name, onnx_path, args.instances, args.max_batch_size)
        )
    env = dict(os.environ)
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    # the backend's stub embeds the system's libpython: this environment's packages by PYTHONPATH
    env["PYTHONPATH"] = ":".join(p for p in sys.path if p.endswith("site-packages"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    command = [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={server / 'backends'}",
        "--http-address=127.0.0.1",
        f"--http-port={args.http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={args.grpc_port}",
        f"--metrics-port={args.metrics_port}",
    ]
    print("running", " ".join(command), flush=True)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())

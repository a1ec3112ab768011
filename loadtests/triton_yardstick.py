"""Triton Inference Server as the yardstick: the same model.onnx files served by Triton (PyTriton's
bundled tritonserver, its Python models running ONNX Runtime), two instances per model and dynamic
batching, as the Triton figures in BENCHMARKS.md were measured.

    scripts/triton_yardstick.sh [--http-port 8010 --grpc-port 8011]   # sets up build/triton-venv, runs this

Runs in its own environment (build/triton-venv: nvidia-pytriton pins numpy < 2), so it imports
nothing of this project: scripts/triton_yardstick.sh passes the model files of the store. Each ONNX
Runtime session takes one intra-op thread without spinning, as the service's (models/backends.py).
Serves until SIGINT/SIGTERM; listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

logger = logging.getLogger("triton_yardstick")


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def infer_function(path: str):
    sess = session(path)
    name = sess.get_inputs()[0].name

    @batch
    def infer(**inputs):
        outputs = sess.run(None, {name: inputs[name].astype(np.float32, copy=False)})
        return {o.name: v for o, v in zip(sess.get_outputs(), outputs, strict=True)}

    return infer, sess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("models", nargs="+", metavar="NAME=MODEL.ONNX", help="models to serve")
    parser.add_argument("--http-port", type=int, default=8010)
    parser.add_argument("--grpc-port", type=int, default=8011)
    parser.add_argument("--metrics-port", type=int, default=8012)
    parser.add_argument(
        "--instances", type=int, default=2, help="model instances (Triton's instance_group count)"
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = TritonConfig(
        http_address="127.0.0.1", http_port=args.http_port,
        grpc_address="127.0.0.1", grpc_port=args.grpc_port, metrics_port=args.metrics_port,
    )  # fmt: skip
    # PyTriton guards Triton's statistics with a token by default; stock tritonserver does not, and
    # perf_analyzer reads them (its server-side columns): only what PyTriton itself needs stays guarded
    security = TritonSecurityConfig(
        restricted_endpoints=["model-repository", "shared-memory", "trace", "logging"]
    )
    with Triton(config=config, security_config=security) as triton:
        for spec in args.models:
            name, _, path = spec.partition("=")
            functions = [infer_function(path) for _ in range(args.instances)]
            sess = functions[0][1]
            triton.bind(
                model_name=name,
                infer_func=[f for f, _ in functions],
                inputs=[
                    Tensor(name=i.name, dtype=np.float32, shape=tuple(i.shape[1:])) for i in sess.get_inputs()
                ],
                outputs=[Tensor(name=o.name, dtype=np.float32, shape=(-1,)) for o in sess.get_outputs()],
                config=ModelConfig(max_batch_size=args.max_batch_size, batcher=DynamicBatcher()),
                strict=False,
            )
            logger.info(
                "%s: %s, %d instances, dynamic batching up to %d",
                name,
                path,
                args.instances,
                args.max_batch_size,
            )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        logger.info("Triton on 127.0.0.1: HTTP %d, gRPC %d", args.http_port, args.grpc_port)
        try:
            triton.serve()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

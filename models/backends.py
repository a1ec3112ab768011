"""Serving backends behind one small interface: ONNX Runtime, TorchScript or an AOTInductor package,
on CPU or CUDA. Each format of models/formats.py names its backend class; the service serves with it
and the parity gate checks the exported files through it, so what passed the gate is what serves.

Each backend takes the model's raw float32 input (batch first) and returns its raw output. The device
is already resolved (service.placement): `cpu` or `cuda`; a CUDA session that did not get the GPU
raises DeviceUnavailableError. Importing this module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from models.device import CUDA_PROVIDER, CUDA_PROVIDER_OPTIONS, DeviceUnavailableError, full_precision_cuda
from models.jit import torchscript_allowed
from models.specs import ModelSpec

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"


class Backend(Protocol):
    """`__call__` takes a C-contiguous float32 batch and returns a new array (the batcher slices it
    into per-request views). `allocate` (optional) gives the batcher its input buffer."""

    kind: str
    device: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict: ...


class TorchBackend:
    """What the torch formats share: the batcher's input buffer in pinned host memory on a GPU, so that
    a batch reaches the device in one asynchronous copy."""

    torch: object
    torch_device: object
    device: str

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.device != "cuda":
            return np.empty(shape, dtype=np.float32)
        return self.torch.empty(shape, dtype=self.torch.float32, pin_memory=True).numpy()

    def to_device(self, x: np.ndarray):
        return self.torch.from_numpy(x).to(self.torch_device, non_blocking=True)


class OnnxBackend:
    kind = "onnx"

    def __init__(self, path: Path, spec: ModelSpec, device: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads must not spin: on a few cores they would steal CPU from the event loop
        # that parses the next requests (measured: bimodal single-client latency with spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        cuda = (CUDA_PROVIDER, CUDA_PROVIDER_OPTIONS)
        providers = [cuda, CPU_PROVIDER] if device == "cuda" else [CPU_PROVIDER]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if device == "cuda" and self.session.get_providers()[0] != CUDA_PROVIDER:
            raise DeviceUnavailableError(
                f"ONNX Runtime could not create a CUDA session for {path.name} (no usable GPU? "
                f"providers in use: {self.session.get_providers()}); use MODEL_DEVICE=cpu"
            )
        self.device = device
        self.spec = spec
        self.threads = threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.spec.output_name], {self.spec.input_name: x})[0]

    def describe(self) -> dict:
        return {
            "backend": self.kind,
            "device": self.device,
            "execution_providers": self.session.get_providers(),
            "intra_op_threads": self.threads,
        }


class TorchScriptBackend(TorchBackend):
    kind = "torchscript"

    def __init__(self, path: Path, spec: ModelSpec, device: str, threads: int) -> None:
        import torch

        # torch's intra-op thread count is per OS thread (OpenMP): set here for the loading thread and
        # again in __call__ for BentoML's inference thread, which otherwise runs with one thread per
        # core in every worker (measured: 677 -> 3,140 single-row req/s, 2 workers, p99 71 -> 18 ms).
        torch.set_num_threads(threads)
        if device == "cuda":
            full_precision_cuda()
        self.torch = torch
        self.torch_device = torch.device(device)
        with torchscript_allowed():
            self.module = torch.jit.load(str(path), map_location=self.torch_device).eval()
        self.device = device
        self.spec = spec
        self.threads = threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # optimized_execution(False): TorchScript's profiling executor re-specializes the graph for new
        # input shapes, and adaptive batching makes every batch size a new shape: 56-93 ms stalls
        # (p99 170 ms at 32 users) against 0.2 ms calls. Without it: no stalls and no slower (measured).
        if self.torch.get_num_threads() != self.threads:  # per OS thread: see __init__
            self.torch.set_num_threads(self.threads)
        with self.torch.inference_mode(), self.torch.jit.optimized_execution(False):
            return self.module(self.to_device(x)).cpu().numpy()

    def describe(self) -> dict:
        info = {"backend": self.kind, "device": self.device, "torch_threads": self.threads}
        if self.device == "cuda":
            info["gpu"] = self.torch.cuda.get_device_name(self.torch_device)
        return info


class AotiBackend(TorchBackend):
    """A torch.export program compiled ahead of time by AOTInductor (`model.<device>.pt2`): C++/CUDA
    kernels for one device, loaded without Python graph code and run under inference_mode."""

    kind = "aoti"

    def __init__(self, path: Path, spec: ModelSpec, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # the compiled CPU kernels use OpenMP: per OS thread, as TorchScript
        if device == "cuda":
            full_precision_cuda()
        self.torch = torch
        self.torch_device = torch.device(device)
        # The package's C++ loader, as torch._inductor.aoti_load_package uses it, without that
        # function's import of torch._inductor / torch._dynamo: 1.7 s and ~100 MB per process here
        # (BENCHMARKS.md, cold start). One tensor in, one out: no pytree (un)flattening needed.
        self.runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        self.device = device
        self.spec = spec
        self.threads = threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.torch.get_num_threads() != self.threads:
            self.torch.set_num_threads(self.threads)
        with self.torch.inference_mode():
            return self.runner.run([self.to_device(x)])[0].cpu().numpy()

    def describe(self) -> dict:
        info = {"backend": self.kind, "device": self.device, "torch_threads": self.threads}
        if self.device == "cuda":
            info["gpu"] = self.torch.cuda.get_device_name(self.torch_device)
        return info

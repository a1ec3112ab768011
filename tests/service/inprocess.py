"""What the in-process tests (marker `inprocess`: `make test-fast`) share: fake backends and a data
plane of them, built from settings as the service builds its own (no server, no model store)."""

from __future__ import annotations

import threading
import time

import numpy as np

from models.specs import ModelSpec
from service.batching import CostModel
from service.dataplane import DataPlane, ServedModel
from service.settings import ModelSettings, ServiceSettings

PLACEMENT = {"backend": "onnx", "device": "cpu", "reason": "test", "gpu": None}


class FakeBackend:
    """Logits / values from the input's row sums (each answer identifies its row); optionally slow,
    held by a gate, or failing for rows holding `poison`."""

    kind = "onnx"
    device = "cpu"

    def __init__(self, spec: ModelSpec, seconds=0.0, gate: threading.Event | None = None, poison=None):
        self.spec, self.seconds, self.gate, self.poison = spec, seconds, gate, poison
        self.rows_seen = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.seconds)
        if self.poison is not None and (x == self.poison).any():
            raise RuntimeError("poisoned batch")
        self.rows_seen += len(x)
        sums = x.reshape(len(x), -1).sum(axis=1, dtype=np.float32)
        return np.repeat(sums[:, None], self.spec.output_shape[0], axis=1) * np.arange(
            1, self.spec.output_shape[0] + 1, dtype=np.float32
        )

    def describe(self) -> dict:
        return {"backend": self.kind, "device": self.device}


async def bentoml_stand_in(scope, receive, send):
    """Answers BentoML's own paths (/livez, /readyz, /metrics, ...) with 200 "bentoml"."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"bentoml"})


def fake_plane(backends: dict | None = None, max_latency_ms: int | None = None, **settings) -> DataPlane:
    """A data plane serving every model of the registry on fake backends (or `backends[name]`), as
    version 1 (`<name>:v1`), with these settings (`max_latency_ms`: every model's)."""
    from models import registry

    if max_latency_ms is not None:
        settings["models"] = {
            name: ModelSettings(max_latency_ms=max_latency_ms, **settings.get("models", {}).get(name, {}))
            for name in registry.models()
        }
    plane = DataPlane(ServiceSettings(**settings), "model_serving")
    models = {
        name: ServedModel.start(
            interface,
            (backends or {}).get(name) or FakeBackend(interface.spec),
            f"{name}:v1",
            {"test_metric": 1.0},
            cost=CostModel(0.0, 0.0),
            metrics=False,
        )
        for name, interface in plane.interfaces.items()
    }
    plane.attach(models, PLACEMENT)
    return plane

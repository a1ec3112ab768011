"""The BentoML service: every model of the registry (models/registry.py) behind the worker's data plane
(service/dataplane.py), over HTTP (service/http.py) and gRPC (service/oip_grpc.py).

    bentoml serve                                  # from the repo root (bentofile.yaml)
    MODEL_BACKEND=torchscript bentoml serve --port 3000
    curl -s localhost:3000/status

BentoML does what it is good at: the model store (the models are the service's class attributes, so
`bentoml build` packs them), `bentoml serve` (processes, workers, /livez, /readyz, /metrics), the
life cycle (the preflight before any worker starts, the models loaded in each worker before it is
ready), `bentoml build` / `bentoml containerize`. The request path is ours, mounted with
`@bentoml.asgi_app` and put in front of BentoML's per-request middleware by
`ModelServingService.to_asgi` (service/front.py).

Life cycle of a worker: load each model from the store (a missing one names its training command) ->
warm its backend up at a few batch sizes (the batcher's first cost estimates) -> one batcher per
model -> attached to the data plane -> ready.
"""

from __future__ import annotations

import gc

import bentoml

from service.dataplane import DataPlane
from service.front import FrontDoor
from service.http import HttpApi
from service.loading import StoreModel, preflight, serve
from service.placement import resolve
from service.settings import get_settings
from service.stats_board import StatsBoard

settings = get_settings()
SERVICE_NAME = "model_serving"
PLANE = DataPlane(settings, SERVICE_NAME)  # the worker's models are attached once loaded
API = HttpApi(PLANE)

# The store's version of each model (MODELS__<NAME>__TAG, default <name>:latest)
REFS = {
    name: StoreModel(model.limits.tag, train_command=model.spec.train_command)
    for name, model in PLANE.interfaces.items()
}
MODELS = [(REFS[name], model.spec) for name, model in PLANE.interfaces.items()]


class ModelServingService(bentoml.Service):
    """BentoML's service class, serving the app BentoML builds behind the service's own routes."""

    def to_asgi(self, *args, **kwargs):
        return FrontDoor(API, super().to_asgi(*args, **kwargs), settings)


class Models:
    """The service's class attributes, one per model (`<name>_ref`): what `bentoml build` packs."""


for _name, _ref in REFS.items():
    setattr(Models, f"{_name}_ref", _ref)


@bentoml.service(
    name=SERVICE_NAME,
    service_class=ModelServingService,
    # traffic.timeout bounds BentoML's own routes; the service's are bounded by REQUEST_TIMEOUT_S
    traffic={"timeout": settings.request_timeout_s},
    workers=settings.worker_count(),
    http={"host": "127.0.0.1", "port": 3000},
    logging={"access": {"enabled": settings.access_log}},
    # Without TRACING, every path is excluded from OpenTelemetry's ASGI middleware (no span per request).
    tracing={} if settings.tracing else {"excluded_urls": ["/"]},
)
@bentoml.asgi_app(API.app, path="/")
class ModelService(Models):
    @bentoml.on_deployment
    def check_before_workers() -> None:
        preflight(MODELS, settings)

    def __init__(self) -> None:
        board = StatsBoard.from_env()  # Triton's statistics summed over the workers
        self.models = {name: serve(REFS[name], i, settings, board) for name, i in PLANE.interfaces.items()}
        # Everything alive now (models, libraries) lives as long as the process: move it out of the
        # collector's generations so that full collections under load only scan request garbage.
        gc.collect()
        gc.freeze()
        PLANE.attach(self.models, resolve(settings.model_backend, settings.model_device).as_dict(), board)

    def __is_ready__(self) -> bool:
        return PLANE.ready

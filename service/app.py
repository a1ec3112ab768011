"""Start-up of the service, in one place: the module `bentoml serve` runs (bentofile.yaml:
`service.app:ModelService`), in the serving process and in every worker.

Importing `service.service` defines the service and loads, patches and reads nothing; importing this
module starts it up:

1. the BentoML patches (service/patches: their fingerprints checked first), with the Open Inference
   Protocol's routes and their OpenAPI paths;
2. the ASGI middlewares, outermost first: authentication (API_TOKEN / API_TOKEN_FILE; a bad token
   setting stops start-up with one line), the request limits, Server-Timing.

The preflight (models in the store, the device, each model file loading and answering) is the
service's own `@bentoml.on_deployment` hook: BentoML runs it once, before the workers start.
"""

from __future__ import annotations

from service import oip_openapi, patches
from service.auth import BearerAuth
from service.limits import RequestLimits
from service.oip_routes import OipRoutes
from service.placement import resolve
from service.service import SERVICE_NAME, V2_MODELS, ModelService, settings
from service.timing import ServerTiming

__all__ = ["ModelService"]


def placement_label() -> str:
    placement = resolve(settings.model_backend, settings.model_device)
    return f"{placement.backend}/{placement.device}"


def start() -> None:
    workers = settings.worker_count()
    patches.apply(
        workers,
        settings,
        route_builders=[lambda factory: OipRoutes(factory, V2_MODELS, SERVICE_NAME, workers).routes()],
        doc_paths=oip_openapi.paths(list(V2_MODELS)),
    )
    # BentoML wraps the app in these in the order added, the first outermost: authentication first,
    # so that a client without the token cannot take a worker's byte budget.
    try:
        token = settings.token()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if token is not None:
        ModelService.add_asgi_middleware(BearerAuth, token=token, open_paths=settings.auth_open_paths)
    ModelService.add_asgi_middleware(
        RequestLimits, max_body_bytes=settings.max_body_bytes, max_inflight_bytes=settings.max_inflight_bytes
    )
    ModelService.add_asgi_middleware(ServerTiming, placement=placement_label)


start()

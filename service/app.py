"""Start-up of the service, in one place: the module `bentoml serve` runs (bentofile.yaml:
`service.app:ModelService`), in the serving process and in every worker.

Importing `service.service` defines the service and loads, patches and reads nothing; importing this
module starts it up: the two remaining patches, both of the HTTP server underneath BentoML (uvicorn and
circus, not BentoML's own code; service/patches: their fingerprints are checked first):

- `header_limit`: request heads bounded in size (431) and time (408), bodies in time (408);
- `reuseport`: one SO_REUSEPORT listening socket per worker, and a port in use as one line.

Everything else happens through BentoML's public surface: the preflight is the service's
`@bentoml.on_deployment` hook (once, before the workers start), the models load in the service's
`__init__` (each worker), and the routes are service/http.py's, served by service/front.py.
"""

from __future__ import annotations

from service import patches
from service.service import ModelService, settings

__all__ = ["ModelService"]


def start() -> None:
    patches.apply(settings.worker_count(), settings)


start()

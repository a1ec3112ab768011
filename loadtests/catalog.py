"""What the load tests can send, per model of the registry (models/registry.py): its JSON endpoint,
its Open Inference Protocol routes (JSON and binary tensors) and, for mnist_cnn, the image upload.
The locustfile generates its user classes from `endpoints()`, and loadtests.run and loadtests.wrk
name runs by it. Light (no Locust, no torch): the runner imports it without the generator's gevent.

- housing_mlp: predict_housing, v2_housing_{json,binary,grpc}; HousingUser,
  V2Housing{Json,Binary,Grpc}User; rows per request --housing-rows
- mnist_cnn: classify_digits, v2_mnist_{json,binary,grpc}; DigitsJsonUser, V2Digits{Json,Binary,Grpc}User;
  images per request --mnist-images; and classify_digit_image (DigitsPngUser, one picture)
- any other model: <route> (e.g. classify_digits_8x8), v2_<model>_{json,binary,grpc}; <Model>JsonUser,
  V2<Model>{Json,Binary,Grpc}User; items per request --items

(v2_*_grpc: the Open Inference Protocol over gRPC, raw tensors, on the server's gRPC port: Locust's
--grpc-host.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from models import registry
from models.specs import HOUSING, MNIST


@dataclass(frozen=True)
class LoadEndpoint:
    name: str  # Locust's request name, the report's endpoint
    user: str  # the Locust user class
    model: str
    kind: str  # json | v2_json | v2_binary | v2_grpc | upload
    path: str
    items_option: str | None  # the Locust/runner option: items per request (None: one)
    stock_api: str | None  # the stock-BentoML / FastAPI baseline's API for the same model, if any


# The names the first two models had before the registry (reports, README, BENCHMARKS name them):
# model -> (short name in V2 endpoint names, user class prefix, JSON user class, items option).
LEGACY = {
    HOUSING.name: ("housing", "Housing", "HousingUser", "housing_rows"),
    MNIST.name: ("mnist", "Digits", "DigitsJsonUser", "mnist_images"),
}
UPLOAD = LoadEndpoint(
    "classify_digit_image", "DigitsPngUser", MNIST.name, "upload", "/classify_digit_image", None, None
)


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


@cache
def endpoints() -> dict[str, LoadEndpoint]:
    out: dict[str, LoadEndpoint] = {}
    for entry in registry.models().values():
        route = entry.json.route
        short, prefix, json_user, option = LEGACY.get(
            entry.name, (entry.name, camel(entry.name), f"{camel(entry.name)}JsonUser", "items")
        )
        name, v2 = route.lstrip("/"), f"/v2/models/{entry.name}/infer"
        stock = name if entry.name in LEGACY else None
        out[name] = LoadEndpoint(name, json_user, entry.name, "json", route, option, stock)
        for kind in ("json", "binary", "grpc"):
            name, user = f"v2_{short}_{kind}", f"V2{prefix}{kind.capitalize()}User"
            path = "inference.GRPCInferenceService/ModelInfer" if kind == "grpc" else v2
            out[name] = LoadEndpoint(name, user, entry.name, f"v2_{kind}", path, option, stock)
        if entry.name == MNIST.name:
            out[UPLOAD.name] = UPLOAD
    return out

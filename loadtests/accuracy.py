"""Send the whole test splits through the running service and compare the served metrics with the
ones stored in the models' metadata (reported by GET /status).

    python -m loadtests.accuracy --url http://127.0.0.1:3000
    python -m loadtests.accuracy --serve --device cuda      # starts its own server (127.0.0.1) first
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import requests
from sklearn.metrics import accuracy_score, root_mean_squared_error
from tqdm.auto import tqdm

from loadtests.cli import url_parser
from loadtests.payloads import test_split
from models import registry

RMSE_TOLERANCE = 1e-5  # served vs stored test RMSE (float32 sums in another order on another device)


def served(url: str, route: str, field: str, x: np.ndarray, per_request: int) -> list:
    out = []
    with requests.Session() as session:
        for i in tqdm(range(0, len(x), per_request), desc=route, disable=None):
            r = session.post(f"{url}/{route}", json={field: x[i : i + per_request].tolist()}, timeout=120)
            r.raise_for_status()
            out.extend(r.json())
    return out


def check(url: str, housing_rows: int = 1000, images: int = 250) -> dict:
    """Served vs stored test metric of every model the server serves (`served_<metric>`,
    `stored_<metric>`); raises nothing, returns both. `housing_rows`: items per request of the
    regression models, `images`: of the classifiers."""
    status = requests.get(f"{url}/status", timeout=10).json()["models"]
    result = {}
    for name in status:
        entry, split = registry.get(name), test_split(name)
        x = split.x.reshape(len(split.x), *entry.json.item_shape)
        per_request = min(images if entry.task == "classification" else housing_rows, entry.json.max_items)
        answers = served(url, entry.json.route.lstrip("/"), entry.json.field, x, per_request)
        if entry.task == "classification":
            value = float(accuracy_score(split.y, [p["label"] for p in answers]))
        else:
            value = float(root_mean_squared_error(split.y, np.array(answers)))
        stored = status[name]["test_metrics"][entry.metric]
        result[name] = {f"served_{entry.metric}": value, f"stored_{entry.metric}": stored}
    return result


def agrees(result: dict) -> bool:
    """Accuracy identical, RMSE within RMSE_TOLERANCE, for every model."""
    ok = True
    for name, r in result.items():
        metric = registry.get(name).metric
        served_value, stored = r[f"served_{metric}"], r[f"stored_{metric}"]
        ok &= abs(served_value - stored) < RMSE_TOLERANCE if metric == "test_rmse" else served_value == stored
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = url_parser("python -m loadtests.accuracy", __doc__)
    parser.add_argument("--rows-per-request", type=int, default=1000, help="rows per regression request")
    parser.add_argument("--images-per-request", type=int, default=250, help="images per classifier request")
    parser.add_argument(
        "--serve", action="store_true", help="start a server on a free 127.0.0.1 port instead of using --url"
    )
    parser.add_argument("--backend", default="auto", help="MODEL_BACKEND of the --serve server")
    parser.add_argument("--device", default="auto", help="MODEL_DEVICE of the --serve server")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.url
        if args.serve:
            from loadtests.server import Server

            env = {"MODEL_BACKEND": args.backend, "MODEL_DEVICE": args.device}
            url = stack.enter_context(Server(env)).url
        placement = requests.get(f"{url}/status", timeout=10).json().get("placement", {})
        result = check(url, args.rows_per_request, args.images_per_request)
    print(f"served by    {placement.get('backend')} on {placement.get('device')} ({placement.get('reason')})")
    for name, r in result.items():
        metric = registry.get(name).metric
        print(f"{name:12} served {metric} {r[f'served_{metric}']:.7f}  stored {r[f'stored_{metric}']:.7f}")
    ok = agrees(result)
    print("served metrics equal the stored ones" if ok else "MISMATCH between served and stored metrics")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

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
from loadtests.payloads import housing_test, mnist_test

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
    """Served vs stored test metrics; raises nothing, returns both."""
    status = requests.get(f"{url}/status", timeout=10).json()["models"]
    h = housing_test()
    pred = np.array(served(url, "predict_housing", "features", h.x, housing_rows))
    m = mnist_test()
    labels = [p["label"] for p in served(url, "classify_digits", "images", m.x[:, 0], images)]
    return {
        "housing_mlp": {
            "served_test_rmse": float(root_mean_squared_error(h.y, pred)),
            "stored_test_rmse": status["housing_mlp"]["test_metrics"]["test_rmse"],
        },
        "mnist_cnn": {
            "served_test_accuracy": float(accuracy_score(m.y, labels)),
            "stored_test_accuracy": status["mnist_cnn"]["test_metrics"]["test_accuracy"],
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = url_parser("python -m loadtests.accuracy", __doc__)
    parser.add_argument("--rows-per-request", type=int, default=1000, help="housing rows per request")
    parser.add_argument("--images-per-request", type=int, default=250, help="MNIST images per request")
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
    h, m = result["housing_mlp"], result["mnist_cnn"]
    print(f"served by    {placement.get('backend')} on {placement.get('device')} ({placement.get('reason')})")
    print(f"housing_mlp  served RMSE {h['served_test_rmse']:.7f}  stored {h['stored_test_rmse']:.7f}")
    print(f"mnist_cnn    served acc {m['served_test_accuracy']:.4f} stored {m['stored_test_accuracy']:.4f}")
    ok = (
        abs(h["served_test_rmse"] - h["stored_test_rmse"]) < RMSE_TOLERANCE
        and m["served_test_accuracy"] == m["stored_test_accuracy"]
    )
    print("served metrics equal the stored ones" if ok else "MISMATCH between served and stored metrics")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Train, export and register models of the registry (models/registry.py) by name.

python -m training --help
python -m training digits_mlp --epochs 2      # = python -m training.digits --epochs 2
python -m training missing                    # every model the store lacks (make models)
python -m training all                        # every model (make models RETRAIN=1)
"""

from __future__ import annotations

import sys

from models import registry
from training.cli import run, setup_logging


def in_store(name: str) -> bool:
    import bentoml

    try:
        bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    names = list(registry.models())
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"usage: python -m training MODEL [flags] | missing | all\n  MODEL: {', '.join(names)} "
            "(python -m training MODEL --help: its flags)\n  missing: train every model the store "
            "lacks; all: every model, with its default flags"
        )
        return
    if argv[0] in ("missing", "all"):
        setup_logging()
        for name in names:
            if argv[0] == "missing" and in_store(name):
                print(f"{name} is in the store (python -m training all retrains every model)")
                continue
            run(registry.load(f"{registry.get(name).training}:main"), argv[1:])
        return
    if argv[0] not in names:
        sys.exit(f"error: unknown model {argv[0]!r}; known: {', '.join(names)}")
    run(registry.load(f"{registry.get(argv[0]).training}:main"), argv[1:])


if __name__ == "__main__":
    main()

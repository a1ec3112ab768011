"""Train the 8x8 digits MLP (scikit-learn's load_digits, shipped in its wheel: no DATA_DIR needed),
evaluate it on the fixed test split, export and register it: the worked example of README
"Bring your own model" (its registry entry is in models/registry.py, its network in models/digits.py).

python -m training.digits --help
python -m training.digits                  # full run (~30 s on 2 CPU cores, export included)
python -m training.digits --epochs 2       # smoke run
"""

from __future__ import annotations

import torch

from models import registry
from models.digits import DigitsConfig, DigitsMLP
from models.specs import DIGITS
from training import classification, pipeline
from training.cli import base_parser, run

ENTRY = registry.get(DIGITS.name)


def build_parser():
    parser = base_parser(
        "python -m training.digits",
        __doc__.splitlines()[0],
        model_name=DIGITS.name,
        epochs=100,
        batch_size=32,
        lr=3e-3,
        weight_decay=1e-3,
    )
    parser.add_argument("--patience", type=int, default=30, help="early-stopping patience (epochs)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    job = pipeline.start(args, ENTRY.load_splits)
    model = DigitsMLP(DigitsConfig())
    pipeline.train(
        job,
        model,
        loss_fn=torch.nn.CrossEntropyLoss(),
        metric=("accuracy", classification.accuracy),
        patience=args.patience,
    )
    return classification.finish(job, model, ENTRY, "8x8 digits MLP")


if __name__ == "__main__":
    run(main)

"""Train the MNIST CNN, evaluate it on the official test set, export and register it.

python -m training.mnist --help
DATA_DIR=../shared/datasets python -m training.mnist                           # full run (~7 min)
DATA_DIR=../shared/datasets python -m training.mnist --epochs 1 --limit 2000   # smoke run
"""

from __future__ import annotations

import torch

from models import registry
from models.mnist import MnistCNN, MnistConfig
from models.specs import MNIST
from training import classification, pipeline
from training.augment import random_affine
from training.cli import base_parser, run

ENTRY = registry.get(MNIST.name)


def build_parser():
    parser = base_parser(
        "python -m training.mnist",
        __doc__.splitlines()[0],
        model_name=MNIST.name,
        epochs=6,
        batch_size=128,
        lr=3e-3,
        weight_decay=5e-4,
    )
    parser.add_argument("--label-smoothing", type=float, default=0.05, help="cross-entropy label smoothing")
    parser.add_argument("--no-augment", action="store_true", help="disable random affine augmentation")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    job = pipeline.start(args, ENTRY.load_splits)
    model = MnistCNN(MnistConfig())
    pipeline.train(
        job,
        model,
        loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
        metric=("accuracy", classification.accuracy),
        augment=None if args.no_augment else random_affine,
    )
    return classification.finish(job, model, ENTRY, "MNIST CNN")


if __name__ == "__main__":
    run(main)

"""Re-export a stored version without retraining (on this machine's devices: a CUDA AOTInductor package
on a GPU machine), parity gate included; a new version whose metadata names its parent and keeps its
metrics:

    python -m training.export mnist_cnn:latest                    # every format
    python -m training.export housing_mlp:abc123 --formats aoti   # only these
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from training.cli import format_list, run
from training.data import default_data_dir
from training.export.store import reexport


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Re-export a stored model version from its checkpoint (no retraining): every format of "
        "models/formats.py, or --formats, on this machine's devices; parity gate; a new version.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("tag", help="MODEL:VERSION in the BentoML model store (MODEL:latest for the newest)")
    parser.add_argument("--formats", type=format_list, default=None, help="only these formats (default: all)")
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), help="dataset of the parity gate's test split"
    )
    parser.add_argument("--no-download", action="store_true", help="never try to download the dataset")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep the exported files here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reexport-") as tmp:
        tag = reexport(args.tag, args.data_dir, args.out_dir or Path(tmp), args.formats, not args.no_download)
    print(f"registered {tag} (re-exported from {args.tag})")
    return tag


if __name__ == "__main__":
    run(main)

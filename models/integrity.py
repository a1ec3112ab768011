"""sha256 of the exported model files: recorded in the model's metadata at registration (after the
parity gate), checked when the service loads a file, so that a file changed in the store after the
gate stops start-up instead of serving unchecked answers. Torch-free (the service imports it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

METADATA_KEY = "files"  # metadata["files"][file name] = {"sha256": ..., "bytes": ...}


class IntegrityError(RuntimeError):
    """A stored model file differs from the one that passed the parity gate."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(paths: list[Path]) -> dict[str, dict]:
    """What registration records: {file name: {"sha256", "bytes"}}."""
    return {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in paths}


def verify(path: Path, metadata: dict) -> bool:
    """Check `path` against the sha256 recorded in `metadata`; False when none is recorded (a model
    registered before the hashes were), IntegrityError when it differs."""
    recorded = metadata.get(METADATA_KEY, {}).get(path.name)
    if recorded is None:
        return False
    actual = sha256(path)
    if actual != recorded["sha256"]:
        raise IntegrityError(
            f"{path.name} changed after it was registered (sha256 {actual[:16]}..., recorded "
            f"{recorded['sha256'][:16]}...)"
        )
    return True

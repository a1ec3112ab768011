"""The errors a training, export or re-export run ends with as one line (training/cli.py `run`), not a
traceback: each says what is wrong and what to do."""

from __future__ import annotations

from models.device import DeviceUnavailableError
from models.integrity import IntegrityError


class DatasetMissingError(RuntimeError):
    """The dataset is not in DATA_DIR and could not be downloaded."""


class ParityError(RuntimeError):
    """An exported graph disagrees with eager PyTorch beyond tolerance."""


class StoredModelError(RuntimeError):
    """A stored version that cannot be re-exported (missing, or registered without a checkpoint)."""


# Errors that end a run with one clear line instead of a traceback.
USER_ERRORS = (DatasetMissingError, ParityError, DeviceUnavailableError, StoredModelError, IntegrityError)

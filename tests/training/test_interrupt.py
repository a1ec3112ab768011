"""Interrupted training registers nothing: Ctrl+C (SIGINT) during a run ends it with one line and
exit status 130, the model store is as it was, and a half-written version (what an interrupt during
the copy into the store leaves) is removed with `latest` pointing back at the last complete one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bentoml

from loadtests.server import REPO
from training.export.store import discard_version


def _versions(name: str) -> set[str]:
    return {str(m.tag) for m in bentoml.models.list(name)}


def test_ctrl_c_during_training_registers_nothing(data_dir, smoke_models, tmp_path):
    before = _versions("housing_mlp")
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.housing", "--data-dir", str(data_dir), "--out-dir", str(tmp_path),
         "--no-download", "--epochs", "500", "--limit", "4000"],
        cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    log = ""
    while "epoch 2/" not in log:  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, log
        log += os.read(proc.stderr.fileno(), 65536).decode()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert (
        err.strip().splitlines()[-1]
        == "interrupted: nothing was registered for this run; run it again to train"
    )
    assert "Traceback" not in err
    assert _versions("housing_mlp") == before


def test_a_half_written_version_is_discarded(smoke_models):
    complete = bentoml.models.get(smoke_models["mnist_cnn"]["tag"])
    with bentoml.models.create("mnist_cnn", metadata={}) as partial:
        Path(partial.path_of("model.onnx")).write_bytes(b"half")
    tag = partial.tag
    store = Path(bentoml.models.get(tag).path)
    (store / "model.yaml").unlink()  # as if the copy into the store had stopped half-way
    discard_version(tag)
    assert not store.exists()
    assert str(bentoml.models.get("mnist_cnn:latest").tag) == str(complete.tag)

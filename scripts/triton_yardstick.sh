#!/usr/bin/env bash
# Triton Inference Server beside this service, on the same model.onnx files (loadtests/triton_yardstick.py):
#
#   scripts/triton_yardstick.sh [--http-port 8010 --grpc-port 8011 --instances 2 --max-batch-size 64]
#   scripts/perf_analyzer.sh -m mnist_cnn -u 127.0.0.1:8011 -i grpc --input-data zero --concurrency-range 32
#
# Triton is the tritonserver that PyPI's nvidia-pytriton 0.7.0 bundles, with its Python backend, started
# on a model repository as Triton is, in its own virtual environment, build/triton-venv (TRITON_VENV):
# PyTriton pins numpy < 2.
# That environment is made with the system's Python 3 (Debian 12: 3.11.2), because the Python
# backend's stub links the system's libpython3.11: a pyenv Python of another patch level fails its
# models at load (`'_thread.RLock' object has no attribute '_recursion_count'`). ONNX Runtime there is
# the version of this project's .venv. Models: MODELS (default housing_mlp mnist_cnn) at the store's
# latest versions, resolved with this project's Python (PY). Serves until Ctrl-C; 127.0.0.1 only.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${TRITON_VENV:-$REPO/build/triton-venv}
PY=${PY:-$REPO/.venv/bin/python}
SYSTEM_PY=${SYSTEM_PY:-/usr/bin/python3}
MODELS=${MODELS:-housing_mlp mnist_cnn}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import pytriton, onnxruntime" 2>/dev/null; then
    echo "setting up Triton (nvidia-pytriton) in $VENV (once)" >&2
    ORT=$("$PY" -c "import onnxruntime; print(onnxruntime.__version__)")
    rm -rf "$VENV"
    "$SYSTEM_PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet nvidia-pytriton==0.7.0 "onnxruntime==$ORT" 2> >(grep -v "is ignored: it is neither" >&2)
fi
# NAME=path/to/model.onnx of each model's latest stored version
mapfile -t FILES < <("$PY" - $MODELS <<'PYEOF'
import sys
import bentoml
for name in sys.argv[1:]:
    model = bentoml.models.get(f"{name}:latest")
    print(f"{name}={model.path_of('model.onnx')}")
PYEOF
)
exec "$VENV/bin/python" "$REPO/loadtests/triton_yardstick.py" "${FILES[@]}" "$@"

#!/usr/bin/env bash
# The GPU window: what this project runs on a GPU machine lent for 15 minutes (README "On a GPU").
#
#   scripts/gpu_window.sh OUT train measure check   # one command, one machine start (README)
#
# Phases, in the order given: `train` (both models trained on the GPU in full FP32, every format
# exported with the parity gate run there, the store archived), `measure` (accuracy over HTTP on the
# GPU, offline ceilings, the CPU-vs-GPU load-test rows), `check` (the GPU tests on the stored models),
# `reexport` (the exports that failed in an earlier `train`, redone from the stored checkpoints).
#
# Run from the repository root, with `.gpu` carried (`make gpu-prepare` writes it: wheels + datasets).
# Phases that run in one command share the machine; a phase run on a fresh machine takes the models
# from .gpu/store.tar.gz (the store.tar.gz of an earlier command, copied there). Every step has its own
# timeout; a step that fails is recorded in OUT/steps.tsv and the run goes on. OUT ends with at most
# 8 files: window.log, steps.tsv, versions.txt, store.tar.gz (after train), <phase>.tar.gz for each
# phase, report.md (after measure).
#
# Environment:
#   GPU_WINDOW_BUDGET    seconds the whole command may take (default 540): each step's timeout is cut to
#                        what is left and steps are skipped once it is spent, so that the outputs are
#                        packed before the device's own limit (give the device run 60 s more)
#   PY                   the Python (default python3: the machine's own)
#   GPU_WINDOW_DEVICE    cuda (default); the rehearsal on a CPU machine sets cpu
#   GPU_WINDOW_SMOKE=1   small settings (the rehearsal)
#   GPU_WINDOW_COMBOS    the load-test combinations (loadtests.run --combos)
#   GPU_WINDOW_DURATION  seconds per load-test run
#   GPU_WINDOW_SKIP      steps not to run, as PHASE/STEP separated by spaces (e.g. "measure/accuracy")
set -u -o pipefail

if [ $# -lt 2 ]; then
    echo "usage: scripts/gpu_window.sh OUT PHASE... (phases: train reexport measure check)" >&2
    exit 2
fi
OUT=$(realpath -m "$1")
shift
PHASES=("$@")
for phase in "${PHASES[@]}"; do
    case $phase in train | reexport | measure | check) ;; *) echo "error: unknown phase $phase" >&2 && exit 2 ;; esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CARRY=$REPO/.gpu                  # carried: wheels, data, store.tar.gz
WORK=$REPO/.gpu-run               # git-ignored, not carried: installed packages, data, store, outputs
PY=${PY:-python3}
DEVICE=${GPU_WINDOW_DEVICE:-cuda}
SMOKE=${GPU_WINDOW_SMOKE:-0}
BUDGET=${GPU_WINDOW_BUDGET:-540}
if [ "$DEVICE" = cuda ]; then
    # one GPU: 4 workers share it (CUDA contexts), ONNX Runtime on the 16 cores for the CPU row
    COMBOS=${GPU_WINDOW_COMBOS:-cpu/onnx,cuda/torchscript/4,cuda/aoti/4}
else
    COMBOS=${GPU_WINDOW_COMBOS:-cpu/onnx/1,cpu/torchscript/1}
fi
if [ "$SMOKE" = 1 ]; then
    TRAIN_FLAGS=(--epochs 1 --limit 2000) DURATION=${GPU_WINDOW_DURATION:-5} USERS=4 PROCESSES=1 SECONDS_PER_BATCH=0.05
else
    TRAIN_FLAGS=() DURATION=${GPU_WINDOW_DURATION:-10} USERS=32 PROCESSES=4 SECONDS_PER_BATCH=0.5
fi

export DATA_DIR=$WORK/data BENTOML_HOME=$WORK/bentoml BENTOML_DO_NOT_TRACK=true PYTHONUNBUFFERED=1
export OUT CARRY WORK PY
export PYTHONPATH=$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
export PATH=$WORK/site/bin:$PATH
mkdir -p "$OUT" "$WORK/run"
exec > >(tee -a "$OUT/window.log") 2>&1
[ -f "$OUT/steps.tsv" ] || printf 'phase\tstep\texit\tseconds\n' >"$OUT/steps.tsv"

# step NAME TIMEOUT_S COMMAND...: run it (a command or a function of this script) with its own timeout,
# cut to what is left of the budget (20 s kept for packing), and record (phase, step, exit, seconds);
# a step with no time left is recorded as skipped.
step() {
    local name=$1 limit=$2 start=$EPOCHREALTIME rc left=$((BUDGET - SECONDS - 20))
    shift 2
    local why=""
    [[ " ${GPU_WINDOW_SKIP:-} " == *" $PHASE/$name "* ]] && why="GPU_WINDOW_SKIP"
    [ -z "$why" ] && [ "$left" -lt 10 ] && why="the budget of ${BUDGET}s is spent"
    if [ -n "$why" ]; then
        printf '%s\t%s\tskipped\t0\n' "$PHASE" "$name" >>"$OUT/steps.tsv"
        echo "=== $PHASE/$name SKIPPED: $why"
        return 0
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "=== $(date -u +%T) $PHASE/$name (timeout ${limit}s): $*"
    timeout --kill-after=5 "$limit" bash -c '"$@"' _ "$@"
    rc=$?
    awk -v p="$PHASE" -v n="$name" -v rc=$rc -v t0="$start" -v t1="$EPOCHREALTIME" \
        'BEGIN { printf "%s\t%s\t%s\t%.1f\n", p, n, rc, t1 - t0 }' >>"$OUT/steps.tsv"
    [ $rc = 0 ] || echo "=== $PHASE/$name FAILED (exit $rc$([ $rc = 124 ] && echo ': timed out')): recorded, going on"
    return 0
}

install() {  # the carried wheels into $WORK/site; the datasets unpacked as the loaders read them
    if [ ! -f "$WORK/site/.installed" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" "$CARRY"/wheels/*.whl || return 1
        touch "$WORK/site/.installed"
    fi
    mkdir -p "$DATA_DIR/MNIST/raw"
    cp -f "$CARRY/data/cal_housing_py3.pkz" "$DATA_DIR/"
    for gz in "$CARRY"/data/MNIST/raw/*.gz; do
        raw=$DATA_DIR/MNIST/raw/$(basename "$gz" .gz)
        [ -f "$raw" ] || gunzip -c "$gz" >"$raw" || return 1
    done
}

versions() {  # the GPU (NVML, no torch needed) and the libraries; imports every carried package we use
    "$PY" - <<'EOF' | tee "$OUT/versions.txt"
import platform
from models.device import available_cpus, nvidia_gpus
gpus, why = nvidia_gpus()
print("GPU:", ", ".join(gpus) or f"none ({why})")
import torch, onnxruntime, bentoml, uvicorn, starlette, locust, tritonclient, pydantic
print(f"python {platform.python_version()}, {available_cpus()} CPUs; torch {torch.__version__} (CUDA "
      f"{torch.version.cuda}, available: {torch.cuda.is_available()}); onnxruntime {onnxruntime.__version__} "
      f"{onnxruntime.get_available_providers()}; bentoml {bentoml.__version__}; uvicorn {uvicorn.__version__}; "
      f"starlette {starlette.__version__}; locust {locust.__version__}; pydantic {pydantic.__version__}")
EOF
}

restore_store() {  # a fresh machine: the models of an earlier command's store.tar.gz
    if ! ls "$BENTOML_HOME"/models/*/latest >/dev/null 2>&1; then
        if [ -f "$CARRY/store.tar.gz" ]; then
            mkdir -p "$BENTOML_HOME" && tar -xzf "$CARRY/store.tar.gz" -C "$BENTOML_HOME"
            echo "models from .gpu/store.tar.gz: $(ls "$BENTOML_HOME/models")"
        else
            echo "error: no models in $BENTOML_HOME and no .gpu/store.tar.gz: run the train phase first"
            return 1
        fi
    fi
}

reexport_failed() {  # every model whose newest version lists export failures, re-exported in those formats
    "$PY" - <<'EOF' >"$WORK/failed.txt" || return 1
import bentoml
from models import registry
for name in registry.models():
    try:
        failures = bentoml.models.get(f"{name}:latest").info.metadata.get("export_failures") or {}
    except bentoml.exceptions.NotFound:
        continue
    if failures:
        print(name, ",".join(sorted(failures)))
EOF
    [ -s "$WORK/failed.txt" ] || { echo "no export failures in the store: nothing to re-export"; return 0; }
    local model formats rc=0
    while read -r model formats; do
        "$PY" -m training.export "$model:latest" --formats "$formats" --no-download || rc=1
    done <"$WORK/failed.txt"
    return $rc
}

export -f install versions restore_store reexport_failed

pack() {  # $1.tar.gz of the phase's outputs (relative to $WORK/run)
    # (the exported model files are in store.tar.gz already)
    tar -czf "$OUT/$1.tar.gz" --exclude 'model.*' -C "$WORK/run" "$1" 2>/dev/null || echo "nothing to pack for $1"
}

PHASE=setup
step install 120 install
step versions 60 versions
step pip-check 30 "$PY" -m pip check

for PHASE in "${PHASES[@]}"; do
    RUN=$WORK/run/$PHASE
    mkdir -p "$RUN"
    case $PHASE in
    train)
        # the models (models/registry.py) as users train them, on the GPU (full FP32), then every format exported and the
        # parity gate run on the GPU; a CUDA AOTInductor compile that fails is recorded, not fatal
        step housing 150 "$PY" -m training.housing --device "$DEVICE" --no-download "${TRAIN_FLAGS[@]}" \
            --out-dir "$RUN/housing_mlp"
        step mnist 240 "$PY" -m training.mnist --device "$DEVICE" --no-download "${TRAIN_FLAGS[@]}" \
            --out-dir "$RUN/mnist_cnn"
        step digits 90 "$PY" -m training.digits --device "$DEVICE" "${TRAIN_FLAGS[@]}" --out-dir "$RUN/digits_mlp"
        step store 60 tar -czf "$OUT/store.tar.gz" -C "$BENTOML_HOME" models
        pack train
        ;;
    reexport)
        # the device-bound exports that failed (metadata export_failures, e.g. a CUDA AOTInductor
        # compile), redone from the stored checkpoints: a new version of each such model
        step restore 60 restore_store
        step reexport 240 reexport_failed
        step store 60 tar -czf "$OUT/store.tar.gz" -C "$BENTOML_HOME" models
        ;;
    check)
        step restore 60 restore_store
        # the stored models on the GPU: parity in the metadata, answers equal to the CPU's, accuracy
        step gpu-tests 240 env GPU_MODELS_HOME="$BENTOML_HOME" "$PY" -m pytest -m gpu tests/gpu -q -rA \
            --junitxml "$RUN/gpu-tests.xml"
        pack check
        ;;
    measure)
        step restore 60 restore_store
        # the whole test splits over HTTP on the GPU: served metrics = stored ones (exit 1 otherwise)
        step accuracy 120 bash -c "set -o pipefail; '$PY' -m loadtests.accuracy --serve --backend torchscript \
            --device $DEVICE | tee '$RUN/accuracy.txt'"
        step offline 120 "$PY" -m loadtests.offline --devices "cpu,$DEVICE" --seconds "$SECONDS_PER_BATCH" \
            --out "$RUN/offline.json"
        # CPU vs GPU: 1-image and 64-image requests at $USERS users, each combination started once
        offline=()
        [ -f "$RUN/offline.json" ] && offline=(--offline "$RUN/offline.json")
        step loadtest 360 "$PY" -m loadtests.run --combos "$COMBOS" --endpoints classify_digits \
            --mnist-images 1,64 --users "$USERS" --duration "$DURATION" --processes "$PROCESSES" \
            "${offline[@]}" --out "$RUN/report"
        [ -f "$RUN/report/report.md" ] && cp "$RUN/report/report.md" "$OUT/report.md"
        pack measure
        ;;
    esac
done
PHASE=end
echo "=== $(date -u +%T) done; steps (phase, step, exit, seconds):"
column -t "$OUT/steps.tsv" 2>/dev/null || cat "$OUT/steps.tsv"
ls -la "$OUT"

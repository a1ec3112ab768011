#!/usr/bin/env bash
# `make gpu-rehearse`: the GPU window (scripts/gpu_window.sh) rehearsed on this CPU machine, as it will
# run there: a Python 3.12 that stands in for the GPU machine's (torch 2.11 and the other packages
# that machine has, scripts/gpu_machine_packages.txt, nothing else), the carried wheels installed with
# `pip install --no-index --no-deps --target`, the device forced to cpu, small (smoke) settings.
# Two commands as on the device: `train check`, then `measure` on a "fresh machine" (the installed
# packages and the store removed) that takes the models from the first command's store.tar.gz.
# It passes when every step of both commands exits 0 and each command leaves at most 8 files.
# Needs `make gpu-prepare` first (the Makefile runs it); pyenv's 3.12 (PY312 names another).
set -eu -o pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DIR=build/gpu-rehearse
BASE=$DIR/py312
find_py312() {  # pyenv's 3.12, else a python3.12 on PATH that runs
    local root candidate
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for candidate in "$root"/versions/3.12.*/bin/python3.12 "$(command -v python3.12)"; do
        [ -n "$candidate" ] && "$candidate" --version >/dev/null 2>&1 && echo "$candidate" && return
    done
    echo "error: no Python 3.12 here (pyenv install 3.12, or PY312=/path/to/python3.12)" >&2
    return 1
}
PY312=${PY312:-$(find_py312)}
# The GPU machine's torch (KINDS.md: 2.11.0+cu130) and its torchvision
TORCH=${REHEARSAL_TORCH:-torch==2.11.0 torchvision==0.26.0}

pip_quiet() {  # pip without its warnings about this machine's local index folders
    "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ ! -f "$BASE/.ready" ]; then
    echo "--- the stand-in for the GPU machine's Python: $PY312 + $TORCH"
    rm -rf "$BASE"
    "$PY312" -m venv "$BASE"
    pip_quiet "$BASE/bin/pip" install -q $TORCH
    touch "$BASE/.ready"
fi
# the other packages that machine has, at the versions installed here (what torch brought stays as
# torch needs it); every time, so that a dependency added or moved since the stand-in was made is too
"$BASE/bin/python" - "$DIR/present.txt" >"$DIR/present-missing.txt" <<'PYEOF'
import importlib.metadata as md, re, sys
def cn(name): return re.sub(r"[-_.]+", "-", name).lower()
have = {cn(d.metadata["Name"]): d.version for d in md.distributions()}
# torch, what it requires (setuptools < 82, sympy, ...) and its CUDA stack: as torch needs them there
TORCH_OWN = {cn(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in md.requires("torch") or []}
def torch_own(name):
    return name in TORCH_OWN | {"torch", "torchvision", "triton"} or name.startswith(("nvidia-", "cuda-"))
for line in open(sys.argv[1]):
    name, _, version = line.strip().partition("==")
    if cn(name) not in have or (have[cn(name)] != version and not torch_own(cn(name))):
        print(line.strip())
PYEOF
if [ -s "$DIR/present-missing.txt" ]; then
    echo "--- adding to the stand-in: $(tr '\n' ' ' <"$DIR/present-missing.txt")"
    pip_quiet "$BASE/bin/pip" install -q --no-deps -r "$DIR/present-missing.txt"
fi

export PATH=$REPO/$BASE/bin:$PATH PY=python3 GPU_WINDOW_DEVICE=cpu GPU_WINDOW_SMOKE=1
rm -rf .gpu-run .gpu/store.tar.gz "$DIR/out-1" "$DIR/out-2"
echo "--- command 1: train check"
t0=$SECONDS
scripts/gpu_window.sh "$DIR/out-1" train check
t1=$SECONDS
echo "--- command 2 on a fresh machine: measure"
rm -rf .gpu-run
cp "$DIR/out-1/store.tar.gz" .gpu/store.tar.gz
scripts/gpu_window.sh "$DIR/out-2" measure
t2=$SECONDS
rm -f .gpu/store.tar.gz

failed=0
for out in "$DIR/out-1" "$DIR/out-2"; do
    n=$(find "$out" -type f | wc -l)
    echo "$out: $n files: $(cd "$out" && ls | tr '\n' ' ')"
    [ "$n" -le 8 ] || { echo "error: $out has $n files, more than the 8 that come back"; failed=1; }
    if awk -F'\t' 'NR > 1 && $3 != 0 { print "error: step " $1 "/" $2 " exited " $3; bad = 1 } END { exit bad }' \
        "$out/steps.tsv"; then :; else failed=1; fi
done
echo "rehearsal: command 1 (train check) $((t1 - t0)) s, command 2 (measure) $((t2 - t1)) s; per step:"
cat "$DIR/out-1/steps.tsv" <(tail -n +2 "$DIR/out-2/steps.tsv")
[ $failed = 0 ] && echo "rehearsal passed" || { echo "rehearsal FAILED"; exit 1; }

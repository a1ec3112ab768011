#!/usr/bin/env bash
# Build a container image of the service with `bentoml build` + `bentoml containerize`.
#   deploy/container/build.sh cpu      # bentofile.yaml            -> model_serving:<version>, :latest
#   deploy/container/build.sh gpu      # the generated gpu bentofile -> model_serving_gpu:<version>, :latest
# The engine is Docker (BuildKit) where a Docker daemon answers, else buildah (build) + podman (run)
# with their storage in build/containers (`make clean-container` removes it). Where the base image,
# python:3.11-slim, cannot be pulled, a stand-in is built from Debian packages (standin-base.sh).
# Env: PY (the Python with bentoml, default .venv/bin/python), CONTAINER_ENGINE (docker|podman).
set -euo pipefail
cd "$(dirname "$0")/../.."
kind=${1:-cpu}
PY=${PY:-.venv/bin/python}
source deploy/container/engine.sh
case "$kind" in
    cpu) bentofile=bentofile.yaml; name=model_serving ;;
    gpu) bentofile=build/bentofile-gpu.yaml; name=model_serving_gpu
         "$PY" deploy/container/gpu_bentofile.py "$bentofile" ;;
    *) echo "error: image kind must be cpu or gpu, got '$kind'" >&2; exit 2 ;;
esac
deploy/container/standin-base.sh "$CONTAINER_ENGINE"
start=$(date +%s)
# bentoml containerize copies the bento to a temporary build context and, since our bentofile has a
# dockerfile_template, checks that the template lies under the current directory (BentoML 1.4.39's
# resolve_user_filepath(secure=True)): keep that temporary context under the repo.
export TMPDIR="$(pwd)/build/containers/tmp"
mkdir -p "$TMPDIR"
tag=$("$PY" -m bentoml build -f "$bentofile" --output tag | tail -1 | sed 's/^__tag__://')
echo "bento: $tag"
if [ "$CONTAINER_ENGINE" = docker ]; then
    "$PY" -m bentoml containerize "$tag" --backend docker
else
    # buildah: chroot isolation (this kind of host has no usable cgroup manager for crun), layers kept
    # so that a rebuild with unchanged requirements reuses the installed packages.
    BUILDAH_ISOLATION=chroot "$PY" -m bentoml containerize "$tag" --backend buildah --opt layers
fi
"$CONTAINER_ENGINE" tag "$tag" "$name:latest"
size=$("$CONTAINER_ENGINE" image inspect --format '{{.Size}}' "$tag")
echo "image: $tag (also $name:latest), $((size / 1000000)) MB, built in $(( $(date +%s) - start )) s with $CONTAINER_ENGINE"

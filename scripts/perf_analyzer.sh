#!/usr/bin/env bash
# Triton's perf_analyzer, unchanged, on this machine: scripts/perf_analyzer.sh [its options]
#
#   scripts/perf_analyzer.sh -m housing_mlp -u 127.0.0.1:3000 -i http --concurrency-range 1:32:31
#   scripts/perf_analyzer.sh -m mnist_cnn -u 127.0.0.1:8001 -i grpc --input-data zero
#
# The binary is the one of the tritonclient 2.51.0 wheel on PyPI (the release of the Triton server
# this project was compared with; later wheels' binaries need glibc >= 2.38, Debian 13's). On Debian
# 12 it needs two libraries the system lacks: libb64 (Debian's libb64-0d, its .deb unpacked) and
# libcudart.so.12 (NVIDIA's nvidia-cuda-runtime-cu12 wheel; only loaded, no GPU needed). All three
# are fetched once, checked against their sha256 and kept in build/perf-analyzer (PERF_ANALYZER_DIR);
# the libraries are found through LD_LIBRARY_PATH for this process alone: nothing of the system's is
# replaced. Needs pip (PY, default .venv/bin/python), curl, unzip and dpkg-deb.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${PERF_ANALYZER_DIR:-$REPO/build/perf-analyzer}
PY=${PY:-$REPO/.venv/bin/python}
TRITONCLIENT=tritonclient==2.51.0
CUDART=nvidia-cuda-runtime-cu12==12.9.79
LIBB64=http://deb.debian.org/debian/pool/main/libb/libb64/libb64-0d_1.2-5+b1_amd64.deb
SHA256="c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52  tritonclient-2.51.0-py3-none-manylinux1_x86_64.whl
25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3  nvidia_cuda_runtime_cu12-12.9.79-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
b0e1d6fde8bdccc18c3884144aede064dc82464dd4777275fa80e74c05583e82  libb64-0d_1.2-5+b1_amd64.deb"

if [ ! -x "$DIR/bin/perf_analyzer" ]; then
    echo "setting up perf_analyzer in $DIR (once)" >&2
    rm -rf "$DIR" && mkdir -p "$DIR/download" "$DIR/bin" "$DIR/lib" "$DIR/deb"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux1_x86_64 --platform manylinux2014_x86_64 -d "$DIR/download" \
        "$TRITONCLIENT" "$CUDART" 2> >(grep -v "is ignored: it is neither" >&2)
    curl -fsSL -o "$DIR/download/$(basename "$LIBB64")" "$LIBB64"
    (cd "$DIR/download" && echo "$SHA256" | sha256sum --check --quiet)
    unzip -q -o -j "$DIR"/download/tritonclient-2.51.0-*.whl 'tritonclient-2.51.0.data/data/bin/perf_analyzer' \
        -d "$DIR/bin"
    unzip -q -o -j "$DIR"/download/nvidia_cuda_runtime_cu12-*.whl 'nvidia/cuda_runtime/lib/libcudart.so.12' \
        -d "$DIR/lib"
    dpkg-deb -x "$DIR/download/$(basename "$LIBB64")" "$DIR/deb"
    cp "$DIR"/deb/usr/lib/x86_64-linux-gnu/libb64.so.0d "$DIR/lib/"
    chmod +x "$DIR/bin/perf_analyzer"
fi
exec env LD_LIBRARY_PATH="$DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$DIR/bin/perf_analyzer" "$@"

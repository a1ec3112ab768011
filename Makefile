# One entry point for newcomers and CI. Everything installs into .venv from pyproject.toml.
#   make main DATA_DIR=../shared/datasets   set up, train the models the store lacks, serve them
#   make test DATA_DIR=../shared/datasets   the test suite (what .ci/run runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The Python that runs everything: the venv's by default (`make setup` creates it). An environment
# that already has torch and the other dependencies (a GPU image) can run from the source checkout
# with `make <target> PY=python3`: then nothing is installed.
PY ?= $(BIN)/python
SETUP := $(if $(filter $(BIN)/python,$(PY)),setup,)
DATA_DIR ?= data
export DATA_DIR
export BENTOML_DO_NOT_TRACK := true
PORT ?= 3000
GRPC_PORT ?= 8001
IMAGE ?= model_serving:latest
URL := http://127.0.0.1:$(PORT)

.PHONY: help setup setup-gpu train train-housing train-mnist train-digits models serve build loadtest main test test-fast test-gpu \
	gpu-check gpu-train gpu-test gpu-sweep gpu-report gpu-prepare gpu-rehearse container container-gpu test-container run-container container-deps \
	clean-container lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/.installed  ## create .venv and install the project with its dev tools

# onnxruntime-gpu and onnxruntime install the same `onnxruntime` package: remove the CPU wheel, then
# (re)install the GPU one. It uses the CUDA/cuDNN libraries of torch's nvidia-* wheels.
setup-gpu: setup  ## add ONNX Runtime's CUDA provider (onnxruntime-gpu) to .venv, for MODEL_BACKEND=onnx on a GPU
	$(BIN)/pip uninstall --yes onnxruntime
	$(BIN)/pip install -c constraints.txt --force-reinstall --no-deps 'onnxruntime-gpu>=1.20'
	$(BIN)/python -c "import onnxruntime as o; print('ONNX Runtime', o.__version__, o.get_available_providers())"

train-housing: $(SETUP)  ## train, export and register housing_mlp
	$(PY) -m training.housing

train-mnist: $(SETUP)  ## train, export and register mnist_cnn
	$(PY) -m training.mnist

train-digits: $(SETUP)  ## train, export and register digits_mlp (scikit-learn's 8x8 digits, ~30 s)
	$(PY) -m training.digits

train: $(SETUP)  ## train, export and register every model of the registry (models/registry.py)
	$(PY) -m training all

models: $(SETUP)  ## train + register the models of the registry the store lacks (RETRAIN=1: every one)
	$(PY) -m training $(if $(RETRAIN),all,missing)
	$(PY) -m bentoml models list

serve: $(SETUP)  ## serve both models on 127.0.0.1:$(PORT) (MODEL_BACKEND, MODEL_DEVICE: see README)
	@echo "Serving on $(URL)  (this service: $(URL)/, API docs: $(URL)/docs, status: $(URL)/status). Try:"
	@echo "  curl -s -X POST $(URL)/predict_housing -H 'Content-Type: application/json' \\"
	@echo "       -d '{\"features\": [[8.3252, 41.0, 6.9841, 1.0238, 322.0, 2.5556, 37.88, -122.23]]}'"
	$(PY) -m bentoml serve --host 127.0.0.1 --port $(PORT)

build: $(SETUP)  ## bentoml build: a bento with the service and both models
	$(PY) -m bentoml build

loadtest: models  ## Locust: cpu (+cuda) x onnx/torchscript x 1/8/32 users, and stock BentoML -> reports/<time>/
	$(PY) -m loadtests.offline --out reports/offline.json
	$(PY) -m loadtests.run --devices cpu,cuda --servers ours,stock --offline reports/offline.json

main: models serve  ## the main job: set up, train what the store lacks, then serve

test-fast: $(SETUP)  ## the in-process layer alone (marker inprocess: data plane, codecs, batcher, HTTP and gRPC over fake backends): seconds
	$(PY) -m pytest -m inprocess

test: $(SETUP)  ## run the test suite (real data subsets, temporary BENTOML_HOME; GPU tests skip without a GPU)
	$(PY) -m pytest

# The GPU tests serve the models of the store (BENTOML_HOME, default ~/bentoml) trained on this GPU.
GPU_MODELS_HOME = $(or $(BENTOML_HOME),$(HOME)/bentoml)
test-gpu: $(SETUP)  ## only the GPU tests (tests/gpu, marker gpu) on the stored models; they skip, saying why, without a GPU
	GPU_MODELS_HOME=$(GPU_MODELS_HOME) $(PY) -m pytest -m gpu tests/gpu

# --- On a GPU machine: everything CPU-vs-GPU into one folder, GPU_REPORT. Each step is a target of its
# own so that it can run in pieces (a device lent for 10 minutes a command); gpu-report runs them all.
GPU_REPORT ?= reports/gpu
DURATION ?= 20
USERS ?= 1,8,32
GPU_CHECK := import sys, torch; ok = torch.cuda.is_available(); print('GPU:', torch.cuda.get_device_name(0)) if ok \
	else sys.exit('error: no usable GPU here (torch.cuda.is_available() is False); the gpu-* targets need one')
gpu-check: $(SETUP)  ## stop at once, in one line, where there is no usable GPU
	@$(PY) -c "$(GPU_CHECK)"

gpu-train: gpu-check  ## train every model of the registry on the GPU (epoch times in metrics.json), export + parity there
	mkdir -p $(GPU_REPORT)
	for model in $$($(PY) -c "from models import registry; print(*registry.models())"); do \
		$(PY) -m training $$model --device cuda --out-dir $(GPU_REPORT)/train/$$model || exit 1; done

gpu-test: gpu-check  ## the GPU tests, and accuracy over HTTP on the GPU with the trained models
	mkdir -p $(GPU_REPORT)
	set -o pipefail; GPU_MODELS_HOME=$(GPU_MODELS_HOME) $(PY) -m pytest -m gpu tests/gpu 2>&1 | tee $(GPU_REPORT)/gpu-tests.txt
	set -o pipefail; $(PY) -m loadtests.accuracy --serve --device cuda 2>&1 | tee $(GPU_REPORT)/accuracy-cuda.txt

gpu-sweep: gpu-check  ## offline ceilings and the CPU-vs-GPU Locust sweep (1-item and 64-image requests)
	mkdir -p $(GPU_REPORT)
	$(PY) -m loadtests.offline --devices cpu,cuda --out $(GPU_REPORT)/offline.json
	$(PY) -m loadtests.run --devices cpu,cuda --users $(USERS) --duration $(DURATION) \
		--offline $(GPU_REPORT)/offline.json --out $(GPU_REPORT)/sweep
	$(PY) -m loadtests.run --devices cpu,cuda --users 32 --duration $(DURATION) --endpoints classify_digits \
		--mnist-images 64 --offline $(GPU_REPORT)/offline.json --out $(GPU_REPORT)/sweep-64

gpu-report: gpu-train gpu-test gpu-sweep  ## on a GPU machine: all of the above -> $(GPU_REPORT)/
	@echo "GPU report: $(GPU_REPORT)/ (sweep/report.md, sweep-64/report.md, offline.json, accuracy-cuda.txt)"

# --- A GPU lent for a 15-minute window (README "A GPU window"): prepared and rehearsed here.
gpu-prepare: $(SETUP)  ## what a GPU window carries: Python 3.12 wheels the GPU machine lacks + datasets -> .gpu/
	$(PY) scripts/gpu_prepare.py --data-dir $(DATA_DIR) --rehearsal-list build/gpu-rehearse/present.txt

gpu-rehearse: gpu-prepare  ## scripts/gpu_window.sh on this CPU: Python 3.12, only the carried wheels, smoke settings
	scripts/gpu_rehearse.sh

# --- Containers: `bentoml containerize` with Docker where a daemon answers, else buildah + podman with
# their storage in build/containers (deploy/container/*.sh).
container: $(SETUP)  ## the cpu image (ONNX Runtime, no torch): bentoml build + containerize -> model_serving:latest
	PY=$(PY) deploy/container/build.sh cpu

container-gpu: $(SETUP)  ## the gpu image (torch CUDA build + onnxruntime-gpu) -> model_serving_gpu:latest
	PY=$(PY) deploy/container/build.sh gpu

test-container: $(SETUP)  ## run the cpu image on 127.0.0.1 and test it (builds it first when missing)
	mkdir -p reports
	CONTAINER_REPORT=reports/container.json $(PY) -m pytest -m container tests/container -s

# The image lives in build/containers' storage (podman) or Docker's: run it with the engine's settings.
run-container:  ## run the cpu image on 127.0.0.1:3000 (HTTP) and :8001 (gRPC); Ctrl+C stops it
	source deploy/container/engine.sh && image=$(IMAGE) && if [ "$$CONTAINER_ENGINE" = podman ]; then \
		image=localhost/$$image; fi && $$CONTAINER_ENGINE run --rm $$RUN_FLAGS \
		-p 127.0.0.1:$(PORT):3000 -p 127.0.0.1:$(GRPC_PORT):8001 $$image

container-deps:  ## Debian: the engine and the stand-in base image's tools (buildah, podman, runc, mmdebstrap)
	@command -v buildah >/dev/null && command -v podman >/dev/null && command -v mmdebstrap >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc mmdebstrap; }

clean-container:  ## remove the podman/buildah storage of build/containers (images, layers, containers)
	-[ -f build/containers/storage.conf ] && CONTAINERS_STORAGE_CONF=$(CURDIR)/build/containers/storage.conf \
		podman system reset --force
	rm -rf build/containers

lint: $(SETUP)  ## ruff
	$(PY) -m ruff check .

clean:  ## remove run outputs (not the venv, not the model store)
	rm -rf runs reports .pytest_cache

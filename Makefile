# One entry point for newcomers and CI. Everything installs into .venv from pyproject.toml.
#   make main DATA_DIR=../shared/datasets   set up, train the models the store lacks, serve them
#   make test DATA_DIR=../shared/datasets   the test suite (what .ci/run runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
export DATA_DIR
export BENTOML_DO_NOT_TRACK := true
PORT ?= 3000
URL := http://127.0.0.1:$(PORT)

.PHONY: help setup train train-housing train-mnist models serve build loadtest main test lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

setup: $(BIN)/.installed  ## create .venv and install the project with its dev tools

train-housing: setup  ## train, export and register housing_mlp
	$(BIN)/python -m training.housing

train-mnist: setup  ## train, export and register mnist_cnn
	$(BIN)/python -m training.mnist

train: train-housing train-mnist  ## train, export and register both models

models: setup  ## train + register only the models missing from the store (RETRAIN=1: both, always)
	@if [ -n "$(RETRAIN)" ] || ! $(BIN)/bentoml models get housing_mlp:latest >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory train-housing; else echo "housing_mlp is in the store (RETRAIN=1 retrains)"; fi
	@if [ -n "$(RETRAIN)" ] || ! $(BIN)/bentoml models get mnist_cnn:latest >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory train-mnist; else echo "mnist_cnn is in the store (RETRAIN=1 retrains)"; fi
	$(BIN)/bentoml models list

serve: setup  ## serve both models on 127.0.0.1:$(PORT) (MODEL_BACKEND, MODEL_DEVICE: see README)
	@echo "Serving on $(URL)  (status: $(URL)/status, API docs: $(URL)/docs). Try:"
	@echo "  curl -s -X POST $(URL)/predict_housing -H 'Content-Type: application/json' \\"
	@echo "       -d '{\"features\": [[8.3252, 41.0, 6.9841, 1.0238, 322.0, 2.5556, 37.88, -122.23]]}'"
	$(BIN)/bentoml serve --host 127.0.0.1 --port $(PORT)

build: setup  ## bentoml build: a bento with the service and both models
	$(BIN)/bentoml build

loadtest: models  ## Locust: cpu (+cuda) x onnx/torchscript x 1/8/32 users, and stock BentoML -> reports/<time>/
	$(BIN)/python -m loadtests.offline
	$(BIN)/python -m loadtests.run --devices cpu,cuda --servers ours,stock

main: models serve  ## the main job: set up, train what the store lacks, then serve

test: setup  ## run the test suite (real data subsets, temporary BENTOML_HOME)
	$(BIN)/python -m pytest

lint: setup  ## ruff
	$(BIN)/ruff check .

clean:  ## remove run outputs (not the venv, not the model store)
	rm -rf runs reports .pytest_cache

# One entry point for newcomers and CI. Everything installs into .venv from pyproject.toml.
#   make main DATA_DIR=../shared/datasets   set up, train + export + register both models
#   make test DATA_DIR=../shared/datasets   the test suite (what .ci/run runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
export DATA_DIR
export BENTOML_DO_NOT_TRACK := true

.PHONY: help setup train train-housing train-mnist main test lint clean

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

main: train  ## the main job: set up, then train and register both models
	$(BIN)/bentoml models list

test: setup  ## run the test suite (real data subsets, temporary BENTOML_HOME)
	$(BIN)/python -m pytest

lint: setup  ## ruff
	$(BIN)/ruff check .

clean:  ## remove run outputs (not the venv, not the model store)
	rm -rf runs reports .pytest_cache

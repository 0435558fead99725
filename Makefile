# Two commands after cloning (see README): `make run` (the course) and `make test` (the tests).
# Both create or reuse the virtual environment .venv/ and install the package into it.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# Debian's Chromium, which the browser tests (tests/test_browser.py, the website's page in tests/test_site.py) drive
# when it is there; else the Chrome or Chromium tests/find_browser.py finds (CXR_CHROMIUM, the PATH, /Applications).
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-colab site lint bench clean-outputs

$(INSTALLED): pyproject.toml
	@test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e ".[notebooks,dev]"
	@touch $(INSTALLED)

# The main job: real data in data/ if present, else generated phantoms; executed notebooks and
# figures land in outputs/ (git-ignored).
run: $(INSTALLED)
	$(VENV_PYTHON) -m helpers run

# The course website from the notebooks `make run` executed (outputs/notebooks/): site/index.html, nothing re-run.
site: $(INSTALLED)
	$(VENV_PYTHON) tools/build_site.py --notebooks outputs/notebooks --out site

# The tests, in the fast profile: unit tests and every notebook through nbval. Two workers: the notebooks run in
# order in one (tests/conftest.py), the unit tests in the other; GPUs are hidden so that every machine tests alike.
# Runs, figures and caches go to .test-outputs/ (conftest.py), never to the course's outputs/. Without Chrome or
# Chromium the browser tests are skipped, named in one line at the end with how to enable them (failed in CI: CI=true).
test: $(INSTALLED) $(CHROMIUM)
	CXR_FAST=1 CUDA_VISIBLE_DEVICES= $(VENV_PYTHON) -m pytest -n 2

# The same notebooks and explorers on Google Colab's own package versions (requirements/colab.txt: ipywidgets 7,
# Colab's TensorFlow and Keras, its Python where this machine has it), in a second environment, .venv-colab/; and a
# run archive exported here, imported and used there (tests/test_runs_travel.py). CI runs it after `make test`.
COLAB_VENV := .venv-colab
COLAB_PYTHON := $(COLAB_VENV)/bin/python
COLAB_INSTALLED := $(COLAB_VENV)/.installed
COLAB_OUTPUTS := .test-outputs-colab

$(COLAB_INSTALLED): requirements/colab.txt pyproject.toml
	@test -x $(COLAB_PYTHON) || { python=$$(tools/colab_python.sh requirements/colab.txt $(PYTHON)) && \
		$$python -m venv $(COLAB_VENV); }
	$(COLAB_PYTHON) -m pip install --quiet -r requirements/colab.txt -e .
	@touch $(COLAB_INSTALLED)

test-colab: $(INSTALLED) $(COLAB_INSTALLED)
	rm -rf $(COLAB_OUTPUTS)/archive
	CXR_FAST=1 CUDA_VISIBLE_DEVICES= CXR_OUTPUT_DIR=$(COLAB_OUTPUTS)/teacher \
		$(VENV_PYTHON) -m tests.travelling_run export $(COLAB_OUTPUTS)/archive
	CXR_FAST=1 CUDA_VISIBLE_DEVICES= CXR_OUTPUT_DIR=$(COLAB_OUTPUTS) CXR_TRAVELLING_RUN=$(COLAB_OUTPUTS)/archive \
		$(COLAB_PYTHON) -m pytest -n 2 -p no:cacheprovider notebooks tests/test_explorers.py tests/test_runs_travel.py

# No browser at $(CHROMIUM) and none found elsewhere: as root with apt-get (CI, a container), Debian's is installed;
# otherwise (macOS, a university account) nothing is, and the test run says which tests it could not run.
$(CHROMIUM): | $(INSTALLED)
	@$(VENV_PYTHON) tests/find_browser.py >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		apt-get install -y --no-install-recommends chromium chromium-driver || \
		{ apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }

lint: $(INSTALLED)
	$(VENV_PYTHON) -m ruff check conftest.py helpers tests benchmarks experiments tools

clean-outputs:
	rm -rf outputs data/phantoms

# Speed and memory as ratios against the obvious alternatives (benchmarks/README.md);
# `make bench BENCH_ARGS=--quick` for a few minutes per script.
bench: $(INSTALLED)
	@for script in input_pipeline training precision cam memory checkpoints import_memory; do \
		$(VENV_PYTHON) benchmarks/$$script.py $(BENCH_ARGS) || exit 1; done

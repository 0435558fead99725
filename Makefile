# Two commands after cloning (see README): `make run` (the course) and `make test` (the tests).
# Both create or reuse the virtual environment .venv/ and install the package into it.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# Debian's Chromium, which the browser tests (tests/test_browser.py, the website's page in tests/test_site.py) drive
# when it is there; else the Chrome or Chromium tests/find_browser.py finds (CXR_CHROMIUM, the PATH, /Applications).
CHROMIUM := /usr/bin/chromium

.PHONY: run test site lint bench clean-outputs

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
	@for script in input_pipeline training precision cam memory checkpoints; do \
		$(VENV_PYTHON) benchmarks/$$script.py $(BENCH_ARGS) || exit 1; done

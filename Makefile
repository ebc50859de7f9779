# The two commands of the README, and the pieces they are made of.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
CORES ?= 2

.PHONY: setup test test-fast smoke full-plan

setup:  ## create or update .venv (first time: ~17 min to compile mmcv; afterwards seconds)
	bash scripts/setup.sh

test: setup  ## the whole test suite, slow end-to-end tests included (what CI runs)
	$(PY) -m pytest

test-fast: setup  ## the fast tests only
	$(PY) -m pytest -m "not slow"

smoke: setup  ## the smoke reproduction on the offline synthetic LVIS: Tables 1-5, Figure 4
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores $(CORES) --config profile=smoke

full-plan: setup  ## plan the full reproduction (no data needed)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake -n --config profile=full

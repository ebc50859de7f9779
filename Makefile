# The two commands of the README, and the pieces they are made of.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
CORES ?= 2
SCALE ?= smoke
RUN   := PATH=$(CURDIR)/$(VENV)/bin:$$PATH

.PHONY: setup test test-fast smoke proxy rehearsal publish full-plan

setup:  ## create or update .venv (first time: ~17 min to compile mmcv; afterwards seconds)
	bash scripts/setup.sh

test: setup  ## the whole test suite, slow end-to-end tests included (what CI runs)
	$(PY) -m pytest

test-fast: setup  ## the fast tests only
	$(PY) -m pytest -m "not slow"

# The main job: the whole DAG on the offline synthetic LVIS (outputs in work/smoke/results/),
# then the verdict against the published results/smoke/. The stages run in children of a fork
# server that imported torch, mmdet and loce once (pipeline/forkserver.py): same numbers,
# seconds less per job.
smoke: setup  ## the smoke reproduction: Tables 1-5, Figure 4, compared with results/smoke/
	$(RUN) python -m pipeline.forkserver --scale smoke -- snakemake --cores $(CORES) --config scale=smoke
	$(RUN) python -m pipeline compare --scale smoke

# Table 1 and Figure 4 above seed noise on CPU (3 seeds); outputs in work/proxy/results/.
proxy: setup  ## the proxy reproduction, compared with results/proxy/
	$(RUN) python -m pipeline.forkserver --scale proxy -- snakemake --cores $(CORES) --config scale=proxy
	$(RUN) python -m pipeline compare --scale proxy

# The `full` scale's DAG, configs and torchrun launcher at LVIS's shapes on CPU: a miniature LVIS
# mirror fetched over 127.0.0.1, stand-in ImageNet weights, a few iterations per run, 2 processes
# per training (results/rehearsal/REPORT.md lists the substitutions); outputs in work/rehearsal/.
rehearsal: setup  ## the full scale rehearsed on CPU, compared with results/rehearsal/
	$(RUN) python -m pipeline.forkserver --scale rehearsal -- snakemake --cores $(CORES) --config scale=rehearsal
	$(RUN) python -m pipeline compare --scale rehearsal

publish: setup  ## copy work/$(SCALE)/results/ to results/$(SCALE)/ (commit it afterwards)
	$(RUN) python -m pipeline publish --scale $(SCALE)

full-plan: setup  ## plan the full reproduction (no data needed)
	$(RUN) snakemake -n --config scale=full

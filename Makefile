# commlab — `make help` lists the targets. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PROFILE ?= quick
JOBS ?=
RUN_ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test lab lint index clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=quick|full  JOBS=N  RUN_ARGS='...'  PYTEST_ARGS='...'"

# torch first, pinned to the CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet torch==2.13.0
	@touch $@

# One stamp per set of extras; each is redone when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(VENV)/.torch
	$(PY) -m pip install --quiet --quiet -e ".[$*]"
	@touch $@
$(VENV)/.installed: pyproject.toml | $(VENV)/.torch
	$(PY) -m pip install --quiet --quiet -e .
	@touch $@

run: $(VENV)/.installed ## set up .venv and run every notebook headlessly (PROFILE=quick) → runs/<profile>/summary.md
	$(BIN)/commlab run --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS)) $(RUN_ARGS)

test: $(VENV)/.installed-dev ## set up .venv and run the tests (unit, hygiene, quick-profile notebooks)
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$status

lint: $(VENV)/.installed-dev ## ruff, and a check that notebooks are committed with outputs stripped
	$(BIN)/ruff check .
	git ls-files -z '*.ipynb' | xargs -0 -r $(BIN)/nbstripout --verify

lab: $(VENV)/.installed-notebooks ## open JupyterLab on notebooks/ with the project's environment
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

index: $(VENV)/.installed ## regenerate notebooks/README.md from the notebooks' metadata
	$(BIN)/commlab list --write-index

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache

# commlab — `make help` lists the targets. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PROFILE ?= quick
JOBS ?=
SEEDS ?=
RUN_ARGS ?=
PYTEST_ARGS ?=
# TORCH_INDEX: a pip index to take torch from, e.g. PyTorch's CPU-only wheel index on a Linux machine
# without a local CPU wheel (PyPI's Linux torch is the multi-GB CUDA build). Empty: pip's default.
TORCH_INDEX ?=
TORCH_VERSION ?= 2.13.0

.DEFAULT_GOAL := help
.PHONY: help run test lab lint index data git-filter clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=quick|full  JOBS=N  SEEDS=0-4  RUN_ARGS='...'  PYTEST_ARGS='...'  TORCH_INDEX=URL"

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==$(TORCH_VERSION)
	@touch $@

# One stamp per set of extras; each is redone when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(VENV)/.torch
	$(PY) -m pip install --quiet --quiet -e ".[$*]"
	@touch $@
$(VENV)/.installed: pyproject.toml | $(VENV)/.torch
	$(PY) -m pip install --quiet --quiet -e .
	@touch $@

data: $(VENV)/.installed ## provision every dataset and espeak-ng (found, apt-get on Debian as root, or a checksummed download)
	$(BIN)/commlab data fetch

run: data $(VENV)/.installed-ft ## set up .venv and the data, run every notebook headlessly (PROFILE=quick) → runs/<profile>/summary.md
	$(BIN)/commlab run --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS)) $(if $(SEEDS),--seeds $(SEEDS)) $(RUN_ARGS)

test: $(VENV)/.installed-dev,ft data ## set up .venv and the data, run the tests (unit, hygiene, quick-profile notebooks)
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$status

lint: $(VENV)/.installed-dev ## ruff, the import layers (import-linter), and notebooks committed with outputs stripped
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	git ls-files -z '*.ipynb' | xargs -0 -r $(BIN)/nbstripout --verify

# Outputs and kernel-run metadata never reach git: nbstripout as a git filter (clean on add/diff/status).
STRIP_KEYS := metadata.language_info.codemirror_mode metadata.language_info.file_extension \
  metadata.language_info.mimetype metadata.language_info.nbconvert_exporter \
  metadata.language_info.pygments_lexer metadata.language_info.version metadata.widgets
git-filter: $(VENV)/.installed-dev ## configure nbstripout as this checkout's git filter for notebooks
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  $(BIN)/nbstripout --install --attributes .git/info/attributes && \
	  git config filter.nbstripout.extrakeys "$(STRIP_KEYS)"; fi

lab: $(VENV)/.installed-notebooks git-filter ## JupyterLab rooted at the project (runs/, figures/ reachable), open on notebooks/
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root)

index: $(VENV)/.installed ## regenerate notebooks/README.md from the notebooks' metadata
	$(BIN)/commlab list --write-index

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache

# audiochat: two commands on a fresh Debian/Ubuntu machine.
#   make demo   set up .venv, install audiochat and espeak-ng, run `audiochat demo`
#   make test   same setup, check notebooks <-> package sync, run notebook tests and pytest
#   make lab    jupyter lab on nbs/
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NBDEV_TEST_FLAGS ?=
# Tests use one torch thread per process: notebooks run in parallel, tiny models gain nothing from more threads,
# and OpenMP threads competing for 2 cores make them many times slower.
nbtest pytest slow: export OMP_NUM_THREADS ?= 1

.PHONY: setup espeak demo test test-fast check-sync nbtest pytest lab lint export clean-nbs slow

# (re)install when pyproject.toml's content changed since the last install (nbdev-export touches its mtime)
setup:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "audiochat needs python >= 3.10")'
	@if [ ! -x $(BIN)/python ]; then \
	  if ! $(PYTHON) -m venv $(VENV) 2>/dev/null; then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); \
	    else echo "python venv support is missing; install it with: sudo apt-get install -y python3-venv"; exit 1; fi; \
	  fi; \
	fi
	@hash="$$(sha256sum pyproject.toml | cut -d' ' -f1)"; \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$hash" ]; then \
	  echo "installing audiochat and its dependencies into $(VENV) (a few minutes the first time)"; \
	  $(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]' && echo "$$hash" > $(STAMP); \
	fi

espeak:
	@if ! command -v espeak-ng >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing espeak-ng (text-to-speech tool)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng; \
	  else \
	    echo "espeak-ng (the text-to-speech tool) is missing. Install it with:"; \
	    echo "    sudo apt-get install -y espeak-ng"; \
	    exit 1; \
	  fi; \
	fi

# The whole pipeline at tiny scale, each step cached under runs/pipeline/ (delete a folder to redo that step):
# simulated dialogues -> codec -> AudioChat model -> a chat (story, two edits, understanding) -> runs/demo/report.html
PIPE := runs/pipeline
demo: setup espeak $(PIPE)/model/done
	OMP_NUM_THREADS=1 $(BIN)/audiochat demo --run $(PIPE)/model

$(PIPE)/data/summary.json: | setup espeak
	OMP_NUM_THREADS=1 $(BIN)/audiochat data build --preset tiny --out $(PIPE)/data --workers 1

$(PIPE)/codec/done: $(PIPE)/data/summary.json
	OMP_NUM_THREADS=1 $(BIN)/audiochat codec train --preset tiny --data $(PIPE)/data --out $(PIPE)/codec --minutes 4 --threads 1
	@touch $@

$(PIPE)/model/done: $(PIPE)/codec/done
	OMP_NUM_THREADS=1 $(BIN)/audiochat train --preset tiny --data.source=$(PIPE)/data --data.codec=$(PIPE)/codec \
	  --run.out=$(PIPE)/model --optim.steps=600
	@touch $@

# nbdev-export and nbdev-clean must leave the tree as it is: notebooks are the source, audiochat/ is generated.
check-sync: setup
	@before="$$(git status --porcelain)"; \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean; \
	after="$$(git status --porcelain)"; \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev-export / nbdev-clean changed the tree: export and clean the notebooks, then commit."; \
	  git status --short; git --no-pager diff --stat; exit 1; \
	fi; echo "notebooks and audiochat/ are in sync and clean"

nbtest: setup espeak
	$(BIN)/nbdev-test --timing $(NBDEV_TEST_FLAGS)

pytest: setup espeak
	$(BIN)/python -m pytest -q tests

test: check-sync nbtest pytest

# everything, including cells and tests marked slow
slow: setup espeak
	$(BIN)/nbdev-test --timing --flags "slow"
	$(BIN)/python -m pytest -q -m slow tests

lab: setup espeak
	$(BIN)/jupyter lab nbs/

export: setup
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

lint: setup
	$(BIN)/ruff check audiochat tests

# train the tiny preset on synthetic dialogues (about two minutes on a 2-core CPU); runs/train-tiny/ (tensorboard --logdir runs/train-tiny/tb)
.PHONY: train-tiny
train-tiny: setup
	OMP_NUM_THREADS=1 $(BIN)/audiochat train --preset tiny

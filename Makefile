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
nbtest pytest slow tutorials: export OMP_NUM_THREADS ?= 1

.PHONY: setup espeak demo test test-fast check-sync nbtest pytest tutorials lab lint export clean-nbs slow install-check

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
# simulated dialogues -> codec (mel: PCA fit, then its decoder) -> AudioChat model -> a chat (story, two edits,
# understanding) -> runs/demo/report.html. Both cores: two build workers, two torch threads for the codec and the model.
PIPE := runs/pipeline
DEMO_STEPS ?= 1000
CODEC_MINUTES ?= 2
demo: setup espeak $(PIPE)/model/learning.json
	OMP_NUM_THREADS=2 $(BIN)/audiochat demo --run $(PIPE)/model

# the learner's model measured on its text figures (10 StoryGen-Eval-mini dialogues, about 2 minutes), so the demo
# prints them beside the shipped model's (the full benchmark, audio included: benchmarks/learning.py --run DIR)
$(PIPE)/model/learning.json: $(PIPE)/model/done
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/learning.py --run $(PIPE)/model --dialogues 10 --no-audio --held-out 10 \
	  --free-form-items 6 --threads 2 --quiet

$(PIPE)/data/summary.json: | setup espeak
	OMP_NUM_THREADS=1 $(BIN)/audiochat data build --preset demo --out $(PIPE)/data --workers 2

$(PIPE)/codec/done: $(PIPE)/data/summary.json
	OMP_NUM_THREADS=2 $(BIN)/audiochat codec train --preset tiny --data $(PIPE)/data --out $(PIPE)/codec --minutes $(CODEC_MINUTES) --threads 2 \
	  $$(test -e $(PIPE)/codec/checkpoints/latest && echo --resume)
	@touch $@

# a run interrupted half-way resumes from its last checkpoint (the codec's too)
$(PIPE)/model/done: $(PIPE)/codec/done
	OMP_NUM_THREADS=2 $(BIN)/audiochat train --preset tiny --data.source=$(PIPE)/data --data.codec=$(PIPE)/codec \
	  --run.out=$(PIPE)/model --optim.steps=$(DEMO_STEPS) --run.threads=2 \
	  $$(test -e $(PIPE)/model/checkpoints/latest && echo --resume)
	@touch $@

# The longer CPU recipe: the same data and codec as `make demo`, 3,600 steps (about 55 minutes on 2 cores), then the
# learning benchmark (runs/course-model/learning.json). `make bundle` makes it the shipped model (audiochat/models/course:
# half precision, its model card holds the benchmark's figures); replace the shipped model only when the recipe changes.
COURSE_STEPS ?= 3600
.PHONY: course-model
course-model: $(PIPE)/codec/done
	OMP_NUM_THREADS=2 $(BIN)/audiochat train --preset tiny --data.source=$(PIPE)/data --data.codec=$(PIPE)/codec \
	  --run.out=runs/course-model --optim.steps=$(COURSE_STEPS) --run.threads=2 \
	  $$(test -e runs/course-model/checkpoints/latest && echo --resume)
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/learning.py --run runs/course-model --dialogues 20 --threads 2

SHIPPED := audiochat/models/course
.PHONY: bundle
bundle: setup
	@test -e runs/course-model/learning.json || { echo "make course-model first (it trains and benchmarks runs/course-model)"; exit 1; }
	rm -rf $(SHIPPED).new && $(BIN)/python -c "from audiochat.serve.chat import ChatEngine; \
	  ChatEngine.load('runs/course-model').save_pretrained('$(SHIPPED).new', half=True)"
	rm -rf $(SHIPPED) && mv $(SHIPPED).new $(SHIPPED) && du -sh $(SHIPPED)

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

# every tutorial in its tiny form (AUDIOCHAT_TUTORIAL_SIZE=tiny: fewer steps, same code), run from tutorials/ (relative
# paths work) with the executed copies written to a temporary folder: the committed notebooks (outputs of the normal
# size) stay as they are
tutorials: setup espeak
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	for nb in $$(ls tutorials/*.ipynb | sort); do \
	  start=$$(date +%s); \
	  if ! AUDIOCHAT_TUTORIAL_SIZE=tiny $(BIN)/jupyter nbconvert --to notebook --execute --output-dir "$$tmp" \
	       --ExecutePreprocessor.timeout=600 "$$nb" >"$$tmp/log" 2>&1; then \
	    grep -v "Kernel is running over TCP" "$$tmp/log" | tail -40; echo "FAILED: $$nb (tiny form)"; exit 1; fi; \
	  echo "$$nb: ok in $$(( $$(date +%s) - start )) s (tiny form)"; \
	done

test: check-sync lint nbtest pytest tutorials gpu-dry

# One GPU, unattended (about 9 minutes on an H100/H200): throughput and MFU of the SCT vs a plain decoder, the small
# preset end to end (data, codec, latents, training, eval), chat latency -> runs/gpu/results.json (GPU_ARGS: flags of
# benchmarks/gpu.py, e.g. GPU_ARGS="--skip e2e --sizes 90M"). gpu-dry: the same stages in a tiny CPU form (about a minute)
GPU_ARGS ?=
.PHONY: gpu gpu-dry
gpu: setup
	$(BIN)/python benchmarks/gpu.py $(GPU_ARGS)

gpu-dry: setup espeak
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/gpu.py --dry --threads 1

# `pip install .` into a new, empty venv (no extras): every module imports, `audiochat --help`, `python -m audiochat`
# and `audiochat demo` work outside the source tree (CI runs it after `make test`)
install-check: espeak
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv" && "$$tmp/venv/bin/python" -m pip install --disable-pip-version-check -q . && \
	cd "$$tmp" && "$$tmp/venv/bin/python" -c "import importlib, pkgutil, audiochat; \
	  mods = [m.name for m in pkgutil.walk_packages(audiochat.__path__, 'audiochat.') if m.name != 'audiochat.__main__']; \
	  [importlib.import_module(m) for m in mods]; print('imports:', len(mods), 'modules')" && \
	"$$tmp/venv/bin/audiochat" --help >/dev/null && "$$tmp/venv/bin/python" -m audiochat --version >/dev/null && \
	OMP_NUM_THREADS=1 "$$tmp/venv/bin/audiochat" demo --out "$$tmp/demo" >/dev/null && test -s "$$tmp/demo/report.html" && \
	echo "install-check: a clean install imports, runs --help and the demo"

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

# StoryGen-Eval-mini at tiny scale: the baselines and ablations trained on the pipeline data and codec for
# EVAL_STEPS steps each (cached under runs/pipeline/baselines/), then `audiochat eval` on EVAL_DIALOGUES dialogues
# with the oracle and cascade rows; tables in runs/eval/tables.md
EVAL_STEPS ?= 150
EVAL_DIALOGUES ?= 3
EVAL_RUNS := sct dit no-cot shared-noise dense mot
EVAL_ARGS_sct :=
EVAL_ARGS_dit := --model.arch=dit --data.cot=false
EVAL_ARGS_no-cot := --data.cot=false
EVAL_ARGS_shared-noise := --loss.policy=shared
EVAL_ARGS_dense := --model.arch=dense
EVAL_ARGS_mot := --model.arch=mot
.PHONY: eval-tiny
$(PIPE)/baselines/%/done: $(PIPE)/codec/done
	OMP_NUM_THREADS=1 $(BIN)/audiochat train --preset tiny --data.source=$(PIPE)/data --data.codec=$(PIPE)/codec \
	  --run.out=$(PIPE)/baselines/$* --optim.steps=$(EVAL_STEPS) --run.progress=false $(EVAL_ARGS_$*)
	@touch $@

eval-tiny: setup espeak $(foreach r,$(EVAL_RUNS),$(PIPE)/baselines/$(r)/done)
	OMP_NUM_THREADS=1 $(BIN)/audiochat eval $(foreach r,$(EVAL_RUNS),--checkpoint $(r)=$(PIPE)/baselines/$(r)) \
	  --baselines oracle,cascade --split storygen-eval-mini --dialogues $(EVAL_DIALOGUES) --out runs/eval

# The paper's findings at teaching scale (benchmarks/findings.py): SCT, Dense, MoT, DiT (several seeds), no CoT, shared
# noise and always-clean history, trained with the same recipe, data and budget, then evaluated with the ground truth,
# the codec ceiling and the cascade. FINDINGS_SCALE=full: about 90 minutes on 2 cores; tiny: minutes (the same path).
FINDINGS_SCALE ?= full
.PHONY: findings findings-demo
findings: setup espeak
	$(BIN)/python benchmarks/findings.py --scale $(FINDINGS_SCALE)

# The forcing claims at the make demo budget (benchmarks/findings.py --scale demo): forcing, one shared noise level,
# always-clean history and the restated-scene edit form, 1,000 steps per run on make demo's data and codec, three seeds
# each, every run measured by the learning benchmark (40 edits; the small edits apart). A run trains in about 14
# minutes on 2 quiet cores and is measured in 3 (about 2.3 hours for the three forcing systems). Each measured run
# is committed as a record (docs/results/findings-demo/RUN.json: its figures, training curve and provenance) and is
# not run again, so the grid can be finished over several jobs; the tables and figure (docs/results/findings-demo.md,
# docs/figures/findings_demo.png) are made from the records (FINDINGS_SYSTEMS=sct,shared-noise,clean-history for the
# forcing claims alone).
findings-demo: $(PIPE)/codec/done
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/findings.py --scale demo --systems $(FINDINGS_SYSTEMS) --threads 2

# docs/figures/app.png: the web app (`audiochat serve`) serving APP_RUN (default: the shipped model) with an example
# story told, photographed by headless Chromium (Debian: apt-get install chromium)
APP_RUN ?= $(SHIPPED)
.PHONY: app-screenshot
app-screenshot: setup
	OMP_NUM_THREADS=2 $(BIN)/python -c "from audiochat.serve.app import save_screenshot; print(save_screenshot('$(APP_RUN)', 'docs/figures/app.png', steps=25))"

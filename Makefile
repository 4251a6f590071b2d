# Set-up is automatic: every target creates .venv and installs the harness when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
COCO_ROOT ?= data/coco
RUNS ?= runs

.PHONY: install test lint check-install smoke smoke-ctran smoke-q2l-train bench reproduce-q2l reproduce-mlspl \
	reproduce-ctran reproduce-q2l-train report clean-venv

# TORCH_INDEX=https://download.pytorch.org/whl/cpu: PyTorch's CPU-only wheels (about 1 GB instead of 5) for a
# machine without a GPU; installed first, so the harness's own install keeps them.
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install -q torch torchvision --index-url $(TORCH_INDEX),)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Compiled modules (and pytest's rewritten test modules) are kept between runs, as Python does by default,
# even where the environment turns that off: without them each worker compiles every module again (~4 s).
test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q

# ruff over the package and the tests (config in pyproject.toml); mypy over the typed surface
# (the public API, records/, metrics.py, eval/).
lint: $(STAMP)
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/mypy

# The wheel installed into a fresh venv, run from outside the repository (CI runs it after the tests).
check-install: $(STAMP)
	bash .ci/check_installed.sh

clean-venv:
	rm -rf $(VENV)

# The main job: every Q2L model + the ASL baseline on COCO val2014, then the report in tables/.
reproduce-q2l: $(STAMP)
	$(BIN)/harness reproduce q2l --coco-root $(COCO_ROOT) --runs $(RUNS) --report-dir tables

# MLSPL: ROLE linear + fine-tuned by default; ALL=1 for every loss and mode.
reproduce-mlspl: $(STAMP)
	$(BIN)/harness reproduce mlspl --coco-root $(COCO_ROOT) --runs $(RUNS) --report-dir tables $(if $(ALL),--all,)

# C-Tran: train (100 epochs, resumable: rerun the target to continue), then evaluate at 0/25/50/75% known,
# with and without label-mask training. SELECTION=held-out for the protocol that does not choose on test.
SELECTION ?= test
# The checkpoint of the newest training run of model $(1) under runs folder $(2) with this selection.
CTRAN_BEST = $$(dirname $$(grep -l '"selection": "$(SELECTION)"' $(2)/$(1)/*/settings.json | tail -n 1))/best.safetensors
reproduce-ctran: $(STAMP)
	$(BIN)/harness ctran train --coco-root $(COCO_ROOT) --runs $(RUNS) --selection $(SELECTION) --resume auto
	$(BIN)/harness eval ctran-r101-576 --coco-root $(COCO_ROOT) --runs $(RUNS) --known 0 25 50 75 \
		--weights $(call CTRAN_BEST,ctran-r101-576,$(RUNS))
	$(BIN)/harness ctran train --coco-root $(COCO_ROOT) --runs $(RUNS) --selection $(SELECTION) --resume auto --no-lmt
	$(BIN)/harness eval ctran-r101-576-no-lmt --coco-root $(COCO_ROOT) --runs $(RUNS) --known 0 50 \
		--weights $(call CTRAN_BEST,ctran-r101-576-no-lmt,$(RUNS))
	$(BIN)/harness report --runs $(RUNS) --format all --out tables

# Query2Label trained as the authors' main_mlc.py (their recipe, each value's source recorded; seeded; resumable:
# rerun the target to continue), then the report. MODEL=q2l-r101-448 by default; SELECTION as for C-Tran;
# ARGS for more flags, e.g. `make reproduce-q2l-train MODEL=q2l-swinl-384 ARGS="--vram-budget 12GB"`.
# Under torchrun: `torchrun --nproc_per_node 2 -m harness q2l train MODEL --coco-root ...` (the same flags).
MODEL ?= q2l-r101-448
reproduce-q2l-train: $(STAMP)
	$(BIN)/harness q2l train $(MODEL) --coco-root $(COCO_ROOT) --runs $(RUNS) --selection $(SELECTION) --resume auto $(ARGS)
	$(BIN)/harness report --runs $(RUNS) --format all --out tables

# What every model costs on this machine (its GPU when one is visible): records in runs/, cost table printed.
bench: $(STAMP)
	$(BIN)/harness bench all --runs $(RUNS)

# Every format (markdown, csv, latex, json, html with plots) into tables/.
report: $(STAMP)
	$(BIN)/harness report --runs $(RUNS) --format all --out tables

# The whole pipeline in about a minute on CPU: 16 synthetic images, seeded random weights, flagged smoke.
# Its runs and report stay under $(SMOKE_DIR) (never mixed with real runs); the report's path is printed.
SMOKE_DIR ?= runs/smoke
smoke: $(STAMP)
	test -d $(SMOKE_DIR)/data || $(BIN)/harness data smoke --out $(SMOKE_DIR)/data --images 16 --train-images 0
	$(BIN)/harness eval q2l-r101-448 --coco-root $(SMOKE_DIR)/data --weights random --runs $(SMOKE_DIR)/runs
	$(BIN)/harness report --runs $(SMOKE_DIR)/runs --format markdown --out $(SMOKE_DIR)/report.md
	@echo "smoke report: $(SMOKE_DIR)/report.md (html: $(BIN)/harness report --runs $(SMOKE_DIR)/runs --format html --out $(SMOKE_DIR)/report.html)"

# C-Tran's pipeline on CPU in about a minute: tiny backbone, smoke subset (with train images), random
# weights, flagged smoke; its own data, runs and report under $(SMOKE_DIR)/ctran.
smoke-ctran: $(STAMP)
	test -d $(SMOKE_DIR)/ctran/data || $(BIN)/harness data smoke --out $(SMOKE_DIR)/ctran/data
	$(BIN)/harness ctran train --coco-root $(SMOKE_DIR)/ctran/data --runs $(SMOKE_DIR)/ctran/runs --tiny --scale 80 \
		--crop 64 --epochs 1 --limit 16 --batch-size 8 --backbone random --workers 0 --no-progress
	$(BIN)/harness eval ctran-r101-576 --coco-root $(SMOKE_DIR)/ctran/data --runs $(SMOKE_DIR)/ctran/runs \
		--known 0 25 50 75 --limit 16 --no-progress --weights $(call CTRAN_BEST,ctran-r101-576,$(SMOKE_DIR)/ctran/runs)
	$(BIN)/harness report --runs $(SMOKE_DIR)/ctran/runs --format markdown --out $(SMOKE_DIR)/ctran/report.md
	@echo "C-Tran smoke report: $(SMOKE_DIR)/ctran/report.md"

# Query2Label training's pipeline on CPU in under a minute: a tiny ResNet of the R101 family on 32 synthetic
# train images, 2 epochs, flagged smoke; its own data, runs and report under $(SMOKE_DIR)/q2l-train.
smoke-q2l-train: $(STAMP)
	test -d $(SMOKE_DIR)/q2l-train/data || $(BIN)/harness data smoke --out $(SMOKE_DIR)/q2l-train/data --images 16 \
		--train-images 32
	$(BIN)/harness q2l train q2l-r101-448 --coco-root $(SMOKE_DIR)/q2l-train/data --runs $(SMOKE_DIR)/q2l-train/runs \
		--smoke --no-progress
	$(BIN)/harness report --runs $(SMOKE_DIR)/q2l-train/runs --format markdown --out $(SMOKE_DIR)/q2l-train/report.md
	@echo "Query2Label training smoke report: $(SMOKE_DIR)/q2l-train/report.md"

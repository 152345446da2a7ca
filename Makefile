# Thin wrappers over the `uvft` CLI. RECIPE and ARGS pick the recipe and its dotted overrides:
#   make finetune RECIPE=recipes/florence2_base_multitask_lora.yaml ARGS="data.root=/datasets"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RECIPE ?= recipes/demo.yaml
ARGS ?=
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
# On a GPU machine: make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test test-slow lint format data finetune eval push demo-data check bench bench-gpu soak clean

setup: $(BIN)/uvft

$(BIN)/uvft: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,reference]"
	touch $@

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench

format: setup
	$(BIN)/ruff check --fix pipeline tests bench
	$(BIN)/ruff format pipeline tests bench

data: setup
	$(BIN)/uvft build $(RECIPE) $(ARGS)

finetune: setup
	$(BIN)/uvft finetune $(RECIPE) $(ARGS) --resume auto

# the base model first (EVAL_BASE=0 skips it), so the report puts base and fine-tuned side by side
EVAL_BASE ?= 1
eval: setup
	@if [ "$(EVAL_BASE)" = 1 ]; then $(BIN)/uvft eval $(RECIPE) --base $(ARGS); fi
	$(BIN)/uvft eval $(RECIPE) $(ARGS)

# make push REPO=me/demo ARGS="--dry-run --merged": the recipe's run folder (RUN=… to choose another)
REPO ?=
RUN ?= $(shell $(BIN)/python -c "from pipeline.recipe import load_recipe; print(load_recipe('$(RECIPE)').run_dir)")
push: setup
	@test -n "$(REPO)" || { echo "usage: make push REPO=namespace/name [RUN=runs/x] [ARGS=\"--dry-run --merged ...\"]"; exit 2; }
	$(BIN)/uvft push $(RUN) --repo-id $(REPO) $(ARGS)

demo-data: setup
	$(BIN)/uvft data demo

check: setup
	$(BIN)/uvft check $(RECIPE) $(ARGS)

# every CPU benchmark, one after another, then the table of their ratios (bench/results/); GPU: bench-gpu
bench: setup
	$(BIN)/python bench/run_all.py $(ARGS)

# on a CUDA machine: bench/gpu.py (the step and the whole loop, both families at full depth, with and
# without train.compile, MFU), then the GPU-marked tests
bench-gpu: setup
	$(BIN)/python bench/gpu.py $(ARGS)
	$(BIN)/python -m pytest -q -m gpu

# resident memory over 10x the recipe's steps (about 20 min for the demo): bench/results/soak.png
soak: setup
	$(BIN)/python bench/soak.py --recipe $(RECIPE) $(ARGS)

clean:
	rm -rf .cache/uvft

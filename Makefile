# Two commands: `make demo` and `make test`. Each installs what it needs into .venv first.
# `make gate` is CI's retrieval regression gate (docs/metrics.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned and installed first: an unpinned torch pulls gigabytes of CUDA packages.
TORCH := torch==2.13.0

# the regression gate: a SciFact slice scored against the committed baseline; skipped without the dataset
SCIFACT ?= ../shared/datasets/scifact
GATE_HOME := .ragline-ci
GATE_SLICE := --max-queries 60 --max-docs 1000
GATE_BASELINE := bench/baselines/scifact-slice.json
GATE_CHECKS := --max-drop 0.02 --metric ndcg@10 --metric recall@100

.PHONY: install install-test demo test bench bench-serve bench-peers gate gate-baseline clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "installing test dependencies (llama-cpp-python builds from source: about 5 minutes the first time)"
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/ragline ingest examples/corpus
	$(VENV)/bin/ragline status
	$(VENV)/bin/ragline ask "Why does a kettle take longer to boil water at high altitude?"
	@echo
	@echo "Try your own: .venv/bin/ragline ask \"How many moons does Mars have?\""

test: install-test
	$(PY) -m pytest

bench: install
	$(PY) bench/ingest_query.py

# a real `ragline serve` under concurrent query/ask + ingestion, then every document checked (bench/README.md)
bench-serve: install
	$(PY) bench/serve_load.py

# ragline vs LlamaIndex and Haystack on SciFact, same model and queries; the peers get their own venv,
# bench/.peers-venv (bench/README.md). Pass options with PEERS_ARGS="--max-docs 500 --max-queries 50".
bench-peers: install
	$(PY) bench/peers.py $(PEERS_ARGS)

gate: install
	@if [ ! -d "$(SCIFACT)" ]; then echo "gate: skipped, no BEIR SciFact folder at $(SCIFACT)"; exit 0; fi; \
	set -e; mkdir -p $(GATE_HOME); \
	echo "gate: scoring the SciFact slice ($(GATE_SLICE))"; \
	RAGLINE_HOME=$(GATE_HOME) $(VENV)/bin/ragline eval beir $(SCIFACT) $(GATE_SLICE) --output $(GATE_HOME)/scifact-slice.json; \
	$(VENV)/bin/ragline eval gate --baseline $(GATE_BASELINE) --current $(GATE_HOME)/scifact-slice.json $(GATE_CHECKS)

# refresh the committed baseline after an intended change in quality (commit the file with the change)
gate-baseline: install
	@test -d "$(SCIFACT)" || { echo "gate-baseline: no BEIR SciFact folder at $(SCIFACT)"; exit 2; }
	mkdir -p $(GATE_HOME) $(dir $(GATE_BASELINE))
	RAGLINE_HOME=$(GATE_HOME) $(VENV)/bin/ragline eval beir $(SCIFACT) $(GATE_SLICE) --output $(GATE_BASELINE)

clean:
	rm -rf .ragline .ragline-ci .pytest_cache test-artifacts

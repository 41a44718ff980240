# nanoprune: every target strings together `python -m <package> <verb>` calls; no logic here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RECIPE ?= configs/yolov3-tiny-person.yaml
# The TF pedestrian SSDLite's graph is in the shared assets: it runs offline (the torchvision
# recipe, configs/ssdlite-person.yaml, downloads its weights: SSD_RECIPE=configs/ssdlite-person.yaml).
SSD_RECIPE ?= configs/ssdlite-pedestrian-tf.yaml
PROFILE ?= quick
RUN ?= runs/$(basename $(notdir $(RECIPE)))
NANOPRUNE_ASSETS ?= ./assets
# What runs on the Nano (Python 3.6, no torch): vermin holds these to 3.6.
DEVICE_PY := edge_runtime export/__init__.py export/__main__.py export/bundle.py export/trt \
	benchmarks/__init__.py benchmarks/__main__.py benchmarks/latency.py benchmarks/loop.py \
	benchmarks/stats.py benchmarks/environment.py benchmarks/video.py benchmarks/tracking.py \
	benchmarks/power.py \
	docker/entrypoint.py
export NANOPRUNE_ASSETS
# The device tests also run under a real CPython 3.6 with the Nano's packages (no torch, no onnx).
PYTHON36 ?= $(shell for p in $(HOME)/.pyenv/versions/3.6*/bin/python python3.6; do \
	$$p -c '' 2>/dev/null && { command -v $$p; break; }; done)
VENV36 ?= .venv36
NANO_PACKAGES := "numpy>=1.19,<1.20" "opencv-python-headless>=4.5,<4.7" "onnxruntime==1.10.*" \
	"pytest>=7,<7.1" "pytest-timeout>=2,<2.2"

.PHONY: setup setup-dev test test-py36 lint format assets prune-yolo prune-ssd gpu-smoke export bench clean help

help:
	@echo "make prune-yolo [RECIPE=configs/x.yaml PROFILE=quick|full|smoke]   compress a YOLO end to end"
	@echo "make test                                 lint, py3.6 check, device tests on Python 3.6, pytest"
	@echo "make prune-ssd | export | bench | assets | docker-jetson | docker-workstation | deploy JETSON=user@host"
	@echo "make gpu-smoke [GPU_SMOKE_ARGS=\"--steps 50\"]      the full profile's CUDA path: train/eval images/s"

# The venv is (re)built when pyproject.toml changes; the stamp files say which extras are in.
$(VENV)/.host-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[host]'
	touch $@

$(VENV)/.dev-installed: $(VENV)/.host-installed
	$(PY) -m pip install -e '.[dev]'
	touch $@

setup: $(VENV)/.host-installed

setup-dev: setup $(VENV)/.dev-installed

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/vermin -q --no-tips --violations -t=3.6- $(DEVICE_PY)

format: setup-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup-dev lint test-py36
	MPLBACKEND=Agg $(VENV)/bin/pytest -q

$(VENV36)/.installed:
	$(PYTHON36) -m venv $(VENV36)
	$(VENV36)/bin/python -m pip install -q --disable-pip-version-check "pip>=21.3,<22"
	$(VENV36)/bin/python -m pip install -q --disable-pip-version-check --only-binary=:all: $(NANO_PACKAGES)
	touch $@

# Bundles are written by the host venv (the Nano cannot export), then read under Python 3.6;
# --confcutdir keeps the host conftest (3.10+ syntax, compress) out of that run.
test-py36: setup-dev
ifeq ($(strip $(PYTHON36)),)
	@echo "test-py36: skipped, no python3.6 on PATH or under ~/.pyenv/versions (the device tests ran on the host only)"
else
	$(MAKE) --no-print-directory $(VENV36)/.installed
	$(PY) -m tests.device.make_bundles $(VENV36)/bundles
	NANOPRUNE_DEVICE_BUNDLES=$(VENV36)/bundles $(VENV36)/bin/python -m pytest -q -p no:cacheprovider \
		--confcutdir tests/device tests/device
endif

assets: setup
	$(PY) -m compress assets fetch --all
	$(PY) -m compress assets list

# Each job first fetches what its recipe reads and is not there yet (offline: one clear line).
prune-yolo: setup
	$(PY) -m compress assets fetch --quiet --recipe $(RECIPE) --profile $(PROFILE)
	$(PY) -m nanoprune --recipe $(RECIPE) --profile $(PROFILE) --out $(RUN)

prune-ssd: setup
	$(PY) -m compress assets fetch --quiet --recipe $(SSD_RECIPE) --profile $(PROFILE)
	$(PY) -m nanoprune --recipe $(SSD_RECIPE) --profile $(PROFILE) --out runs/$(basename $(notdir $(SSD_RECIPE)))

export: setup
	$(PY) -m export onnx --run $(RUN)

# The full profile's CUDA path (AMP, channels-last, DDP on NCCL, GPU eval) for a few steps on
# coco-person-val2017: images/s for training and evaluation. Without CUDA: one line, status 3.
GPU_SMOKE_ARGS ?=
gpu-smoke: setup
	$(PY) -m compress gpu-smoke --recipe $(RECIPE) $(GPU_SMOKE_ARGS)

clean:
	rm -rf runs .pytest_cache

-include mk/*.mk

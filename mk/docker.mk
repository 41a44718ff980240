# Containers: the Jetson runtime image (arm64, L4T R32.7.1 / TensorRT 8.2), the workstation
# images (CUDA and CPU), and moving the Jetson image + bundle to the device.
#   make docker-jetson                    # needs docker buildx (+ QEMU binfmt on x86 hosts)
#   make docker-jetson-native             # on the Nano: legacy builder, device files only
#   make docker-workstation [docker-workstation-cpu]
#   make deploy JETSON=user@nano [REGISTRY=host:5000]
DOCKER ?= docker
IMAGE ?= nanoprune
TAG ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
JETSON_IMAGE ?= $(IMAGE)-jetson:$(TAG)
WORKSTATION_IMAGE ?= $(IMAGE)-workstation:$(TAG)
JETSON ?=
REGISTRY ?=
# The pipeline's export stage writes <recipe>-shipped.onnx / -base.onnx; `make export` model.onnx.
BUNDLE ?= $(firstword $(wildcard $(RUN)/export/*-shipped.onnx $(RUN)/export/*-pruned.onnx $(RUN)/export/model.onnx))
BASELINE_BUNDLE ?= $(firstword $(wildcard $(RUN)/export/*-base.onnx))

# What the Jetson image copies: the build context of a native build on the Nano, whose
# legacy builder reads no Dockerfile.jetson.dockerignore.
JETSON_CONTEXT := edge_runtime export/__init__.py export/__main__.py export/bundle.py export/trt \
	benchmarks docker/entrypoint.py docker/Dockerfile.jetson

.PHONY: docker-jetson docker-jetson-native docker-workstation docker-workstation-cpu docker-lint deploy

docker-jetson:
	$(DOCKER) buildx build --platform linux/arm64 -f docker/Dockerfile.jetson -t $(JETSON_IMAGE) --load .
	@echo "built $(JETSON_IMAGE); next: make deploy JETSON=user@nano"

# On the Nano itself (or any arm64 host): a tar of only the device files as the context.
docker-jetson-native:
	tar -c --exclude=__pycache__ $(JETSON_CONTEXT) | $(DOCKER) build -f docker/Dockerfile.jetson -t $(JETSON_IMAGE) -

docker-workstation:
	$(DOCKER) build -f docker/Dockerfile.workstation -t $(WORKSTATION_IMAGE) .

docker-workstation-cpu:
	$(DOCKER) build -f docker/Dockerfile.workstation \
		--build-arg BASE_IMAGE=python:3.11-slim-bookworm \
		--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
		-t $(IMAGE)-workstation-cpu:$(TAG) .

docker-lint: setup-dev
	$(VENV)/bin/hadolint docker/Dockerfile.jetson docker/Dockerfile.workstation
	shellcheck docker/*.sh

deploy:
	docker/deploy.sh --image $(JETSON_IMAGE) $(if $(JETSON),--host $(JETSON)) \
		$(if $(REGISTRY),--registry $(REGISTRY)) $(if $(BUNDLE),--bundle $(BUNDLE)) \
		$(if $(BASELINE_BUNDLE),--baseline-bundle $(BASELINE_BUNDLE))

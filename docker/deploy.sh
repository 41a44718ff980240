#!/usr/bin/env bash
# Move the Jetson image (and the model bundle + run script) to the device.
#
#   docker/deploy.sh --image nanoprune-jetson:TAG --host user@nano [--bundle pruned.onnx]
#                    [--baseline-bundle unpruned.onnx]
#   docker/deploy.sh --image nanoprune-jetson:TAG --registry registry.local:5000 [--host user@nano]
#
# Without --registry the image goes over ssh (docker save | gzip | ssh docker load: no registry
# needed, about 1 GB once). With --registry it is tagged and pushed, and the device pulls it.
# The bundles (models/model.onnx, models/baseline.onnx) and run-jetson.sh land in ~/nanoprune/.
set -euo pipefail

IMAGE=""
HOST=""
REGISTRY=""
BUNDLE=""
BASELINE_BUNDLE=""
DRY_RUN=0
HERE="$(cd "$(dirname "$0")" && pwd)"

die() { echo "deploy.sh: $*" >&2; exit 2; }
run() {
    if [[ "$DRY_RUN" == 1 ]]; then echo "+ $*"; else bash -c "$*"; fi
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) IMAGE="${2:?}"; shift 2 ;;
        --host) HOST="${2:-}"; shift 2 ;;
        --registry) REGISTRY="${2:-}"; shift 2 ;;
        --bundle) BUNDLE="${2:-}"; shift 2 ;;
        --baseline-bundle) BASELINE_BUNDLE="${2:-}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ -n "$IMAGE" ]] || die "--image is required"
[[ -n "$HOST" || -n "$REGISTRY" ]] || die "give JETSON=user@host (ssh) and/or REGISTRY=host:port (push)"

if [[ -n "$REGISTRY" ]]; then
    REMOTE="${REGISTRY%/}/${IMAGE}"
    run "docker tag '$IMAGE' '$REMOTE'"
    run "docker push '$REMOTE'"
    if [[ -n "$HOST" ]]; then
        run "ssh '$HOST' docker pull '$REMOTE' && ssh '$HOST' docker tag '$REMOTE' '$IMAGE'"
    fi
else
    run "docker save '$IMAGE' | gzip -1 | ssh '$HOST' 'gunzip | docker load'"
fi

if [[ -n "$HOST" ]]; then
    run "ssh '$HOST' mkdir -p nanoprune/models"
    run "scp '$HERE/run-jetson.sh' '$HOST:nanoprune/run-jetson.sh'"
    if [[ -n "$BUNDLE" && -f "$BUNDLE" ]]; then
        run "scp '$BUNDLE' '$HOST:nanoprune/models/model.onnx'"
    else
        echo "deploy.sh: note: no bundle '$BUNDLE' (run make prune-yolo / make export first); image only" >&2
    fi
    if [[ -n "$BASELINE_BUNDLE" && -f "$BASELINE_BUNDLE" ]]; then
        run "scp '$BASELINE_BUNDLE' '$HOST:nanoprune/models/baseline.onnx'"
    fi
    echo "next, on the device:  cd ~/nanoprune && IMAGE=$IMAGE ./run-jetson.sh --model models/model.onnx"
fi

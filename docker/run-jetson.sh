#!/usr/bin/env bash
# Start the nanoprune container on a Jetson Nano: live detection, an MJPEG page, FPS stats.
#
#   docker/run-jetson.sh --model ~/nanoprune/models/model.onnx                 # CSI camera 0
#   docker/run-jetson.sh --model m.onnx --source /dev/video1 --display         # USB camera + window
#   docker/run-jetson.sh --model m.onnx --source ~/vtest.avi --bench           # Nano FPS report
#   docker/run-jetson.sh --model m.onnx --dry-run                              # print the command
#
# Options:
#   --model FILE      ONNX bundle from `make export` (its folder is mounted read-only at /models)
#   --baseline FILE   with --bench: the unpruned bundle, timed A/B against --model
#   --source URI      csi://N (default csi://0), /dev/videoN, rtsp://..., or a video file
#   --port N          host port of the MJPEG page http://<nano>:N/ (default 8080)
#   --engines DIR     engine cache volume (default ~/.cache/nanoprune/engines): built once
#   --reports DIR     loop stats and benchmark JSONs (default ./reports)
#   --display         show a window on the Nano's display (X11)
#   --bench           measure latency + loop FPS instead of running live (needs a file source)
#   --engine-only     build (or find) the engine and exit
#   --image NAME      image (default $IMAGE or nanoprune-jetson:latest)
#   --dry-run         print the docker command, run nothing
#   -- ARGS           more flags for `python -m edge_runtime run` (e.g. -- --conf 0.4)
set -euo pipefail

IMAGE="${IMAGE:-nanoprune-jetson:latest}"
MODEL=""
BASELINE=""
SOURCE="csi://0"
PORT=8080
ENGINES="${HOME}/.cache/nanoprune/engines"
REPORTS="${PWD}/reports"
DISPLAY_WINDOW=0
MODE=run
DRY_RUN=0
EXTRA=()

die() { echo "run-jetson.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) MODEL="${2:?--model needs a file}"; shift 2 ;;
        --baseline) BASELINE="${2:?--baseline needs a file}"; shift 2 ;;
        --source|--camera) SOURCE="${2:?--source needs a URI}"; shift 2 ;;
        --port) PORT="${2:?--port needs a number}"; shift 2 ;;
        --engines) ENGINES="${2:?}"; shift 2 ;;
        --reports) REPORTS="${2:?}"; shift 2 ;;
        --display) DISPLAY_WINDOW=1; shift ;;
        --bench) MODE=bench; shift ;;
        --engine-only) MODE=engine; shift ;;
        --image) IMAGE="${2:?}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[[ -n "$MODEL" ]] || die "--model FILE is required (the .onnx from make export)"
[[ -f "$MODEL" ]] || die "model $MODEL not found"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number, got $PORT"
MODEL_DIR="$(cd "$(dirname "$MODEL")" && pwd)"
MODEL_NAME="$(basename "$MODEL")"

ARGS=(docker run --rm --init --name nanoprune --runtime nvidia
      -v "${MODEL_DIR}:/models:ro" -e "NANOPRUNE_MODEL=/models/${MODEL_NAME}"
      -v "${ENGINES}:/engines" -v "${REPORTS}:/reports")
if [[ -n "$BASELINE" ]]; then
    [[ -f "$BASELINE" ]] || die "baseline $BASELINE not found"
    BASE_DIR="$(cd "$(dirname "$BASELINE")" && pwd)"
    ARGS+=(-v "${BASE_DIR}:/baseline:ro" -e "NANOPRUNE_BASELINE=/baseline/$(basename "$BASELINE")")
fi
if [[ -t 0 && -t 1 ]]; then ARGS+=(-it); fi

case "$SOURCE" in
    csi://*)
        # nvarguscamerasrc talks to the host's argus daemon through this socket.
        ARGS+=(-v /tmp/argus_socket:/tmp/argus_socket) ;;
    /dev/video*|v4l2:///dev/video*)
        ARGS+=(--device "${SOURCE#v4l2://}") ;;
    *://*) ;;  # rtsp/http/gst: nothing to mount
    *)
        [[ -e "$SOURCE" ]] || die "source $SOURCE is neither a camera URI nor an existing file"
        SRC_DIR="$(cd "$(dirname "$SOURCE")" && pwd)"
        ARGS+=(-v "${SRC_DIR}:/media:ro")
        SOURCE="/media/$(basename "$SOURCE")" ;;
esac
ARGS+=(-e "NANOPRUNE_SOURCE=${SOURCE}")

if [[ "$MODE" == run ]]; then
    ARGS+=(-p "${PORT}:8080" -e "NANOPRUNE_HTTP=0.0.0.0:8080")
else
    ARGS+=(-e "NANOPRUNE_HTTP=")
fi
if [[ "$DISPLAY_WINDOW" == 1 ]]; then
    ARGS+=(-e "DISPLAY=${DISPLAY:-:0}" -v /tmp/.X11-unix:/tmp/.X11-unix)
    EXTRA=(--show "${EXTRA[@]}")
fi
ARGS+=("$IMAGE" "$MODE")
if [[ ${#EXTRA[@]} -gt 0 ]]; then ARGS+=(-- "${EXTRA[@]}"); fi

if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "${ARGS[@]}"; echo
    exit 0
fi
mkdir -p "$ENGINES" "$REPORTS"
if [[ "$DISPLAY_WINDOW" == 1 ]] && command -v xhost >/dev/null; then
    xhost +local: >/dev/null
fi
[[ "$MODE" == run ]] && echo "live view: http://$(hostname -I 2>/dev/null | awk '{print $1}'):${PORT}/"
exec "${ARGS[@]}"

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
#   --source URI      csi://N (default csi://0), /dev/videoN or N (USB), rtsp://..., or a video file
#   --port N          host port of the MJPEG page (default 8080), published on 127.0.0.1 only
#   --lan             publish the MJPEG page on every interface: http://<nano-ip>:N/ (no login!)
#   --engines DIR     engine cache volume (default ~/.cache/nanoprune/engines): built once
#   --reports DIR     loop stats and benchmark JSONs (default ./reports)
#   --display         show a window on the Nano's display (X11)
#   --bench           measure latency + loop FPS instead of running live (needs a file source)
#   --engine-only     build (or find) the engine and exit
#   --image NAME      image (default $IMAGE or nanoprune-jetson:latest)
#   --no-tegrastats   do not record the host's tegrastats into the reports folder
#   --dry-run         print the docker command, run nothing
#   -- ARGS           more flags for `python -m edge_runtime run` (e.g. -- --conf 0.4)
set -euo pipefail
shopt -s extglob

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
LAN=0
TEGRASTATS=1
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
        --lan) LAN=1; shift ;;
        --no-tegrastats) TEGRASTATS=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[[ -n "$MODEL" ]] || die "--model FILE is required (the .onnx from make export)"
[[ -f "$MODEL" ]] || die "model $MODEL not found"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number, got $PORT"
MODEL_DIR="$(cd "$(dirname "$MODEL")" && pwd)"
MODEL_NAME="$(basename "$MODEL")"

if [[ "$DRY_RUN" == 0 && ! -e /etc/nv_tegra_release ]]; then
    die "no /etc/nv_tegra_release: this is not a Jetson (run it on the Nano, or use --dry-run)"
fi

# The RTSP hardware-decoder path and the reports read the L4T release; /proc/device-tree/model
# is masked in a container and nvpmodel / jetson_clocks need the host, so their output goes in
# as files (dusty-nv/jetson-containers' run.sh mounts nv_tegra_release and the model the same way).
ARGS=(docker run --rm --init --name nanoprune --runtime nvidia
      -v "${MODEL_DIR}:/models:ro" -e "NANOPRUNE_MODEL=/models/${MODEL_NAME}"
      -v "${ENGINES}:/engines" -v "${REPORTS}:/reports"
      -v /etc/nv_tegra_release:/etc/nv_tegra_release:ro
      -e "NANOPRUNE_DEVICE_FACTS=/reports/device")
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
    +([0-9]))
        # a bare index is what the runtime opens as /dev/videoN
        ARGS+=(--device "/dev/video${SOURCE}") ;;
    *://*) ;;  # rtsp/http/gst: nothing to mount
    *)
        [[ -e "$SOURCE" ]] || die "source $SOURCE is neither a camera URI nor an existing file"
        SRC_DIR="$(cd "$(dirname "$SOURCE")" && pwd)"
        ARGS+=(-v "${SRC_DIR}:/media:ro")
        SOURCE="/media/$(basename "$SOURCE")" ;;
esac
ARGS+=(-e "NANOPRUNE_SOURCE=${SOURCE}")

if [[ "$MODE" == run ]]; then
    # Inside, the server listens on all of the container's interfaces so that Docker can
    # forward to it; what the host exposes is decided here: loopback unless --lan.
    if [[ "$LAN" == 1 ]]; then PUBLISH="${PORT}:8080"; else PUBLISH="127.0.0.1:${PORT}:8080"; fi
    ARGS+=(-p "$PUBLISH" -e "NANOPRUNE_HTTP=0.0.0.0:8080")
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
mkdir -p "$ENGINES" "$REPORTS/device"
tr -d '\0' < /proc/device-tree/model > "$REPORTS/device/model" 2>/dev/null || true
nvpmodel -q > "$REPORTS/device/nvpmodel" 2>&1 || true
# --show needs root: sudo -n asks for no password, and the report says "unavailable" without it.
{ jetson_clocks --show 2>/dev/null || sudo -n jetson_clocks --show 2>/dev/null; } \
    > "$REPORTS/device/jetson_clocks" || true
if [[ "$DISPLAY_WINDOW" == 1 ]] && command -v xhost >/dev/null; then
    xhost +local: >/dev/null
fi
if [[ "$MODE" == run ]]; then
    if [[ "$LAN" == 1 ]]; then
        echo "live view: http://$(hostname -I 2>/dev/null | awk '{print $1}'):${PORT}/ (open to the LAN)"
    else
        echo "live view: http://127.0.0.1:${PORT}/ on the Nano; from another machine: ssh -L ${PORT}:127.0.0.1:${PORT} $(whoami)@<nano-ip>"
    fi
fi
if [[ "$TEGRASTATS" == 1 ]] && command -v tegrastats >/dev/null; then
    # The host's tegrastats sees GPU load and clocks the container cannot: kept beside the
    # stats for `python -m benchmarks power FILE`.
    LOG="$REPORTS/tegrastats-$(date +%Y%m%d-%H%M%S).log"
    tegrastats --interval 1000 --logfile "$LOG" &
    TEGRA_PID=$!
    trap 'kill "$TEGRA_PID" 2>/dev/null || true; echo "tegrastats log: $LOG"' EXIT
    "${ARGS[@]}"
else
    exec "${ARGS[@]}"
fi

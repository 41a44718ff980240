"""Frame sources by URI (jetson-utils style URIs, a tensorrt_demos-style flag group).

    csi://0                 MIPI CSI camera through nvarguscamerasrc (GStreamer, Jetson)
    /dev/video0, v4l2:///dev/video0, 0     USB (V4L2) camera
    rtsp://host/stream      hardware H.264/H.265 decode on a Jetson (GStreamer), FFmpeg elsewhere
    gst://<pipeline>        any GStreamer pipeline ending in appsink
    path/to/video.mp4       every frame in order (optionally looping)
    path/to/folder/, x.jpg  images in name order

The readers themselves (newest-frame live reader with reconnects, in-order file readers) are
in `edge_runtime.capture`. A GStreamer URI on an OpenCV built without GStreamer is refused
with a message naming the cause.
"""

import os
import re

import cv2

from edge_runtime.capture import IMAGE_SUFFIXES, ImageSource, LiveSource, VideoFileSource
from edge_runtime.errors import SourceError


def is_jetson():
    return os.path.exists("/etc/nv_tegra_release")


def gstreamer_support(build_info=None):
    """True when this OpenCV was built with GStreamer (4.1's and 4.5+'s report formats)."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    match = re.search(r"GStreamer:[ \t]*(?:\n\s*base:[ \t]*)?(\w+)", info)
    return bool(match) and match.group(1).upper() == "YES"


def require_gstreamer(uri):
    if not gstreamer_support():
        raise SourceError(
            "{} needs OpenCV built with GStreamer, but this OpenCV {} has none "
            "(cv2.getBuildInformation(): 'GStreamer: NO'); use JetPack's python3-opencv "
            "(e.g. the l4t-ml container) instead of a pip opencv wheel".format(uri, cv2.__version__)
        )


# -- GStreamer pipelines (DESIGN.md section 4) ---------------------------------------------------


def csi_pipeline(sensor_id=0, width=1280, height=720, fps=30, flip=0, out_size=None):
    """The CSI camera through nvarguscamerasrc. `out_size` (w, h): nvvidconv scales on the
    VIC (hardware) to it, as jkjung-avt/tensorrt_demos' camera.py does, so that the CPU's
    videoconvert and everything after it see the small frame the model needs, not 1280x720."""
    scaled = "width={}, height={}, ".format(int(out_size[0]), int(out_size[1])) if out_size else ""
    return (
        "nvarguscamerasrc sensor-id={} ! video/x-raw(memory:NVMM), width={}, height={}, "
        "framerate={}/1, format=NV12 ! nvvidconv flip-method={} ! video/x-raw, {}format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=1 max-buffers=1"
    ).format(int(sensor_id), int(width), int(height), int(fps), int(flip), scaled)


def loop_frame_size(width, height, input_width, input_height, resize="letterbox"):
    """The smallest frame (w, h) that gives the model the same input as a full-size one,
    keeping the aspect ratio; None when the camera frame is no larger than that already.

    letterbox scales by min(W/w, H/h) and stretch resizes each axis: a frame scaled by that
    factor (by max(...) for stretch, so neither axis is upsampled later) loses nothing the
    model would have seen. Sizes are even, as the NV12/BGRx conversions want."""
    ratios = (float(input_width) / width, float(input_height) / height)
    scale = min(ratios) if resize == "letterbox" else max(ratios)
    if scale >= 1.0:
        return None
    return (
        max(2, int(round(width * scale / 2.0)) * 2),
        max(2, int(round(height * scale / 2.0)) * 2),
    )


def rtsp_pipeline(uri, codec="h264", latency_ms=200):
    return (
        "rtspsrc location={} latency={} ! rtp{}depay ! {}parse ! nvv4l2decoder ! nvvidconv ! "
        "video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=1 max-buffers=1"
    ).format(uri, int(latency_ms), codec, codec)


# -- URI -> source -----------------------------------------------------------------------------


def _capture_opener(target, api=None, width=None, height=None, fps=None):
    """A callable that opens cv2.VideoCapture(target[, api]) with the size/rate asked for."""

    def open_capture():
        cap = cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)
        if cap.isOpened():
            for prop, value in (
                (cv2.CAP_PROP_FRAME_WIDTH, width),
                (cv2.CAP_PROP_FRAME_HEIGHT, height),
                (cv2.CAP_PROP_FPS, fps),
            ):
                if value:
                    cap.set(prop, float(value))
        return cap

    return open_capture


def _csi(uri, rest, opts):
    require_gstreamer(uri)
    sensor = rest.strip("/") or "0"
    if not sensor.isdigit():
        raise SourceError("{}: the CSI sensor id must be a number (csi://0)".format(uri))
    pipe = csi_pipeline(
        int(sensor),
        opts.get("width") or 1280,
        opts.get("height") or 720,
        opts.get("fps") or 30,
        opts.get("flip") or 0,
        opts.get("out_size"),
    )
    return LiveSource(_capture_opener(pipe, cv2.CAP_GSTREAMER), uri, fps=opts.get("fps") or 30)


def _v4l2(uri, rest, opts):
    device = "/" + rest if rest.startswith("dev/") else rest  # v4l2://dev/video0 too
    if device.isdigit():
        target = int(device)
    else:
        if not os.path.exists(device):
            raise SourceError("{}: no such camera device {}".format(uri, device))
        match = re.match(r"^/dev/video(\d+)$", device)
        target = int(match.group(1)) if match else device
    opener = _capture_opener(
        target,
        getattr(cv2, "CAP_V4L2", 200),
        opts.get("width"),
        opts.get("height"),
        opts.get("fps"),
    )
    return LiveSource(opener, uri, fps=opts.get("fps"))


def _stream(uri, rest, opts):
    if is_jetson() and uri.startswith("rtsp") and gstreamer_support():
        pipe = rtsp_pipeline(uri, opts.get("codec") or "h264", opts.get("latency_ms") or 200)
        return LiveSource(_capture_opener(pipe, cv2.CAP_GSTREAMER), uri)
    return LiveSource(_capture_opener(uri, getattr(cv2, "CAP_FFMPEG", 1900)), uri)


def _gst(uri, rest, opts):
    require_gstreamer(uri)
    if "appsink" not in rest:
        raise SourceError("{}: a GStreamer pipeline must end in appsink".format(uri))
    return LiveSource(_capture_opener(rest, cv2.CAP_GSTREAMER), uri)


def _path(uri, path, opts):
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
        return ImageSource(
            [os.path.join(path, n) for n in names], uri, loop=opts.get("loop", False)
        )
    if not os.path.exists(path):
        raise SourceError(
            "{}: no such file or folder (and not a known URI: {})".format(
                uri, ", ".join(s + "://" for s in sorted(SCHEMES))
            )
        )
    if path.lower().endswith(IMAGE_SUFFIXES):
        return ImageSource([path], uri, loop=opts.get("loop", False))
    return VideoFileSource(path, loop=opts.get("loop", False))


# URI scheme -> builder(uri, rest after "scheme://", options)
SCHEMES = {
    "csi": _csi,
    "v4l2": _v4l2,
    "rtsp": _stream,
    "rtsps": _stream,
    "http": _stream,
    "https": _stream,
    "gst": _gst,
    "file": _path,
}


def open_source(
    uri, width=None, height=None, fps=None, loop=False, flip=0, codec="h264", out_size=None
):
    """A frame source for `uri` (see the module docstring); SourceError when it cannot be opened.

    width/height/fps: capture settings for cameras (CSI default 1280x720@30); loop: restart
    files at the end; flip: nvvidconv flip-method for CSI; codec: h264|h265 for Jetson RTSP;
    out_size: (w, h) the CSI frames are scaled to in nvvidconv (see loop_frame_size).
    """
    uri = str(uri)
    opts = {
        "width": width,
        "height": height,
        "fps": fps,
        "loop": loop,
        "flip": flip,
        "codec": codec,
        "out_size": out_size,
    }
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", uri)
    if match:
        scheme = match.group(1).lower()
        if scheme not in SCHEMES:
            raise SourceError(
                "{}: unknown source scheme {!r}; use one of {} or a file/folder path".format(
                    uri, scheme, ", ".join(s + "://" for s in sorted(SCHEMES))
                )
            )
        return SCHEMES[scheme](uri, match.group(2), opts)
    if re.match(r"^/dev/video\d+$", uri) or uri.isdigit():
        return _v4l2(uri, uri, opts)
    return _path(uri, uri, opts)


def add_source_args(parser):
    """The source flag group, for any script that reads frames (tensorrt_demos' add_camera_args)."""
    group = parser.add_argument_group("source")
    group.add_argument(
        "--source",
        required=True,
        help="csi://0, /dev/video0, v4l2:///dev/video0, rtsp://..., gst://..., a video "
        "file, an image folder or an image",
    )
    group.add_argument("--width", type=int, help="camera capture width (CSI default 1280)")
    group.add_argument("--height", type=int, help="camera capture height (CSI default 720)")
    group.add_argument("--fps", type=int, help="camera frame rate (CSI default 30)")
    group.add_argument(
        "--loop", action="store_true", help="start a video file/folder again at its end"
    )
    group.add_argument("--flip", type=int, default=0, help="CSI nvvidconv flip-method (0-7)")
    group.add_argument(
        "--codec", default="h264", choices=["h264", "h265"], help="RTSP codec on a Jetson"
    )
    group.add_argument(
        "--frame-size",
        metavar="WxH",
        help="CSI: the size nvvidconv scales frames to (default: the smallest the model needs, "
        "e.g. 416x234 from 1280x720 for a 416x416 letterbox model); 'full' keeps the capture size",
    )
    return group


def parse_frame_size(text):
    match = re.match(r"^(\d+)x(\d+)$", text or "")
    if not match or not int(match.group(1)) or not int(match.group(2)):
        raise SourceError("--frame-size {!r}: expected WxH, e.g. 640x360, or 'full'".format(text))
    return int(match.group(1)), int(match.group(2))


def source_from_args(args, meta=None):
    """The source the flags ask for; `meta` (the bundle's) sizes CSI frames for the model."""
    out_size = None
    frame_size = getattr(args, "frame_size", None)
    if frame_size and frame_size != "full":
        out_size = parse_frame_size(frame_size)
    elif frame_size is None and meta and str(args.source).startswith("csi://"):
        _, _, in_h, in_w = (int(d) for d in meta["input_shape"])
        out_size = loop_frame_size(
            args.width or 1280, args.height or 720, in_w, in_h, meta.get("resize", "letterbox")
        )
    return open_source(
        args.source,
        width=args.width,
        height=args.height,
        fps=args.fps,
        loop=args.loop,
        flip=args.flip,
        codec=args.codec,
        out_size=out_size,
    )

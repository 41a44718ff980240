"""Frame -> network input, as the bundle metadata says (cv2 + numpy, torch-free, Python 3.6).

The device loop (edge_runtime.detector), the INT8 calibrator and the host's parity check all
feed the network through `Preprocessor`, so what the engine is calibrated and checked on is
what the device feeds it. `Geometry` maps boxes back to the frame.
"""

import os

import cv2
import numpy as np


def letterbox(frame, height, width, pad_value=114):
    """Resize keeping the aspect ratio, pad the rest evenly on both sides.

    Returns (image [height, width, 3] uint8, (rx, ry), (pad_left, pad_top)); a box in input
    pixels maps back to the frame with (x - pad_left) / rx, (y - pad_top) / ry. The ratio is per
    axis (rounded new size / old size), the convention of the host's datasets, so boxes map back
    exactly the same way on both sides.
    """
    h, w = frame.shape[:2]
    ratio = min(float(height) / h, float(width) / w)
    new_w, new_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
    if (new_w, new_h) != (w, h):
        frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    out = cv2.copyMakeBorder(
        frame,
        top,
        height - new_h - top,
        left,
        width - new_w - left,
        cv2.BORDER_CONSTANT,
        value=(pad_value, pad_value, pad_value),
    )
    return out, (float(new_w) / w, float(new_h) / h), (left, top)


def stretch(frame, height, width, pad_value=114):
    """Resize to the input size ignoring the aspect ratio (ratio is then per axis)."""
    h, w = frame.shape[:2]
    if (w, h) != (width, height):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    return frame, (float(width) / w, float(height) / h), (0, 0)


RESIZERS = {"letterbox": letterbox, "stretch": stretch}


class Geometry(object):
    """Input pixels -> frame pixels: x_frame = (x_in - left) / sx, same for y."""

    __slots__ = ("left", "top", "sx", "sy", "width", "height")

    def __init__(self, left, top, sx, sy, width, height):
        self.left, self.top, self.sx, self.sy = left, top, sx, sy
        self.width, self.height = width, height

    def to_frame(self, boxes):
        """boxes [n, 4] xyxy in network-input pixels -> frame pixels, clipped to the frame."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.left) / self.sx
        out[:, 1::2] = (boxes[:, 1::2] - self.top) / self.sy
        np.clip(out[:, 0::2], 0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.height, out=out[:, 1::2])
        return out


class Preprocessor(object):
    """Built once from the bundle metadata (export.bundle: input_shape, resize, pad_value,
    color, normalize {scale, mean, std}); call it per frame: frame_bgr -> (blob, Geometry).
    The camera loop, the parity check and INT8 calibration all use this one."""

    def __init__(self, meta):
        _, _, self.height, self.width = [int(d) for d in meta["input_shape"]]
        self.resize = RESIZERS[meta.get("resize", "letterbox")]
        self.pad_value = int(meta.get("pad_value", 114))
        self.to_rgb = meta.get("color", "RGB") == "RGB"
        norm = meta.get("normalize") or {}
        # x = pixel * scale, then (x - mean) / std only when that is not the identity
        self.scale = np.float32(norm.get("scale", 1.0 / 255.0))
        self.mean = np.asarray(norm.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(norm.get("std", [1.0, 1.0, 1.0]), dtype=np.float32).reshape(3, 1, 1)
        self.standardize = bool(self.mean.any() or (self.std != 1.0).any())

    def __call__(self, frame_bgr):
        if frame_bgr is None or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise ValueError(
                "expected a BGR image [H, W, 3], got {}".format(getattr(frame_bgr, "shape", None))
            )
        image, (sx, sy), (left, top) = self.resize(
            frame_bgr, self.height, self.width, self.pad_value
        )
        h, w = frame_bgr.shape[:2]
        geometry = Geometry(left, top, sx, sy, w, h)
        if self.to_rgb:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        blob = np.multiply(image.transpose(2, 0, 1), self.scale, dtype=np.float32)
        if self.standardize:
            blob = (blob - self.mean) / self.std
        return np.ascontiguousarray(blob[np.newaxis]), geometry


def preprocess(frame_bgr, meta):
    """One frame through `Preprocessor(meta)`: (float32 [1, 3, H, W], (rx, ry), (pad_left, pad_top))."""
    blob, g = Preprocessor(meta)(frame_bgr)
    return blob, (g.sx, g.sy), (g.left, g.top)


def read_image(path):
    """cv2.imread with an error that names the file (imread returns None silently)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("{}: not a readable image".format(path))
    return image


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(folder, limit=None):
    """Image files in a folder, sorted by name (so a calibration set is reproducible)."""
    if not os.path.isdir(str(folder)):
        raise ValueError("{}: not a folder of images".format(folder))
    names = sorted(n for n in os.listdir(str(folder)) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError("{}: holds no images ({})".format(folder, ", ".join(IMAGE_SUFFIXES)))
    paths = [os.path.join(str(folder), n) for n in names]
    return paths[:limit] if limit else paths

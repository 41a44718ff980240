"""Frame (BGR uint8, any size) -> network blob, exactly as the bundle metadata says.

Letterbox / stretch come from `export.trt.preprocess` (shared with the parity check and the
INT8 calibrator). Then channel order, scale/mean/std and HWC -> NCHW, all as
whole-array numpy/cv2 operations. `Geometry` remembers how to map boxes back to the frame.
"""

import cv2
import numpy as np

# One resize for the device, the parity check and INT8 calibration: what the engine is checked
# and calibrated on is what the camera loop feeds it.
from export.trt.preprocess import RESIZERS


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
    """Built once from the metadata; call it per frame: frame_bgr -> (blob, Geometry)."""

    def __init__(self, meta):
        _, c, self.height, self.width = [int(d) for d in meta["input_shape"]]
        self.resize = RESIZERS[meta["resize"]]
        self.pad_value = int(meta.get("pad_value", 114))
        self.to_rgb = meta["color"] == "RGB"
        norm = meta["normalize"]
        # Same arithmetic, in the same order, as export.trt.preprocess (parity and INT8
        # calibration use that one): x = pixel * scale, then (x - mean) / std when not identity.
        self.scale = np.float32(norm.get("scale", 1.0 / 255.0))
        self.mean = np.asarray(norm.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(norm.get("std", [1.0, 1.0, 1.0]), dtype=np.float32).reshape(3, 1, 1)
        self.standardize = bool(self.mean.any() or (self.std != 1.0).any())

    def __call__(self, frame_bgr):
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

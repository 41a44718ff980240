"""`BundleDetector`: the synchronous one-frame API over a backend (benchmarks and parity use it).

    det = BundleDetector("model.onnx", backend="auto", threads=2)
    boxes, scores, classes = det.detect(frame_bgr)   # boxes [n, 4] xyxy in frame pixels

The loop in `edge_runtime.pipeline` runs the very same three steps (`preprocess`, `infer`,
`postprocess`) in separate threads, so its detections equal `detect()` on the same frames.
"""

from edge_runtime.backends import open_backend
from edge_runtime.postprocess import Postprocessor
from export.trt.preprocess import Preprocessor


class BundleDetector(object):
    """A model bundle (ONNX or TensorRT engine) with its pre- and post-processing.

    Args:
        model_path: .onnx bundle, or .plan/.engine/.trt engine with its metadata JSON.
        backend: "auto" (by suffix), "ort" or "trt" (an ONNX on "trt" builds a cached engine).
        threads: intra-op threads for onnxruntime (None = its default).
        score_threshold, nms_iou: override the bundle's defaults.
        **options: passed to the backend (e.g. providers=, cache_dir=, precision=).
    """

    def __init__(
        self,
        model_path,
        backend="auto",
        threads=None,
        score_threshold=None,
        nms_iou=None,
        **options,
    ):
        self.backend = open_backend(model_path, backend=backend, threads=threads, **options)
        self.meta = self.backend.meta
        self.preprocess = Preprocessor(self.meta)
        self.postprocess = Postprocessor(
            self.meta, score_threshold=score_threshold, nms_iou=nms_iou
        )
        self.classes = list(self.meta["classes"])

    @property
    def input_shape(self):
        return self.backend.input_shape

    def infer(self, blob):
        """blob [1, 3, H, W] float32 -> raw outputs {name: array} (model only, for timing)."""
        return self.backend.infer(blob)

    def detect(self, frame_bgr):
        """One BGR frame -> (boxes [n, 4] xyxy frame pixels, scores [n], classes [n])."""
        blob, geometry = self.preprocess(frame_bgr)
        return self.postprocess(self.backend.infer(blob), geometry)

    def describe(self):
        info = self.backend.describe()
        info.update(
            name=self.meta.get("name"),
            input_shape=list(self.input_shape),
            score_threshold=self.postprocess.score_threshold,
            nms_iou=self.postprocess.nms_iou,
        )
        return info

    def close(self):
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

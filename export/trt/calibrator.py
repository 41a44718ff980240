"""INT8 entropy calibration over a folder of images (desktop GPUs; the Nano has no INT8).

The images go through `export.trt.preprocess` with the bundle's metadata, so the ranges are
measured on what the deployed loop feeds the engine. Device buffers come from pycuda (what
the Nano has) or cuda-python (desktop), whichever imports first. Torch-free, Python 3.6.
"""

import os

import numpy as np

from edge_runtime.files import atomic_write_bytes
from export.trt.preprocess import list_images, preprocess, read_image


class PycudaBuffer(object):
    def __init__(self, nbytes):
        import pycuda.autoinit  # noqa: F401  (creates the context the builder runs in)
        import pycuda.driver as cuda

        self._cuda = cuda
        self._mem = cuda.mem_alloc(nbytes)

    @property
    def ptr(self):
        return int(self._mem)

    def upload(self, array):
        self._cuda.memcpy_htod(self._mem, np.ascontiguousarray(array))

    def free(self):
        self._mem.free()


class CudaPythonBuffer(object):
    def __init__(self, nbytes):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self._cudart = cudart
        err, self._ptr = cudart.cudaMalloc(nbytes)
        _check(err, "cudaMalloc")
        self._nbytes = nbytes

    @property
    def ptr(self):
        return int(self._ptr)

    def upload(self, array):
        array = np.ascontiguousarray(array)
        (err,) = self._cudart.cudaMemcpy(
            self._ptr,
            array.ctypes.data,
            array.nbytes,
            self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
        )
        _check(err, "cudaMemcpy")

    def free(self):
        self._cudart.cudaFree(self._ptr)


def _check(err, what):
    if int(err) != 0:
        raise RuntimeError("{} failed: {}".format(what, err))


# Tried in order: the first whose import works allocates the calibration buffer.
BUFFER_BACKENDS = (("pycuda", PycudaBuffer), ("cuda-python", CudaPythonBuffer))


def device_buffer(nbytes):
    errors = []
    for name, cls in BUFFER_BACKENDS:
        try:
            return cls(nbytes)
        except ImportError as exc:
            errors.append("{}: {}".format(name, exc))
    raise RuntimeError(
        "INT8 calibration needs pycuda or cuda-python for device buffers ("
        + "; ".join(errors)
        + ")"
    )


class CalibrationImages(object):
    """Preprocessed batches [1, 3, H, W] float32 from an image folder, in name order."""

    def __init__(self, folder, meta, limit=200):
        self.paths = list_images(folder, limit)
        self.meta = meta

    def __len__(self):
        return len(self.paths)

    def __iter__(self):
        for path in self.paths:
            yield preprocess(read_image(path), self.meta)[0]


def make_entropy_calibrator(trt, images, cache_path, buffer_factory=device_buffer):
    """A `trt.IInt8EntropyCalibrator2` over `images` (CalibrationImages or any iterable of
    float32 [1, 3, H, W] arrays). The class is built here because its base comes from the
    tensorrt module in use. The calibration table is cached at `cache_path`: a rebuild with
    the same table skips the images."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(images)
            self.buffer = None
            self.count = 0

        def get_batch_size(self):
            return 1  # explicit-batch networks: the batch is the input's static first dim

        def get_batch(self, names):
            try:
                batch = next(self.batches)
            except StopIteration:
                return None
            if self.buffer is None:
                self.buffer = buffer_factory(batch.nbytes)
            self.buffer.upload(batch)
            self.count += 1
            return [self.buffer.ptr]  # the network has one input

        def read_calibration_cache(self):
            if cache_path and os.path.exists(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            if cache_path:
                atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()

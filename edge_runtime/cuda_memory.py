"""Host and device buffers for the TensorRT backend: pycuda (the Nano's), or cuda-python.

Both offer the same small interface: host(shape, dtype), device(nbytes), address(dev),
to_device, to_host, synchronize, push/pop of the CUDA context, close, and `gpu_name`.
pycuda takes the device's primary context, the one the CUDA runtime (and so TensorRT's builder
and runtime) uses, instead of making its own: a process holds one CUDA context, which a 4 GB
Nano notices (each context costs tens of MiB). The backend pops it after loading and pushes it
around every call, since the loop's inference thread is another thread.
"""

import numpy as np

from edge_runtime.backends import first_line
from edge_runtime.errors import ModelError


class PycudaMemory(object):
    """Page-locked host arrays, device buffers, one stream, one context (pycuda)."""

    def __init__(self, device=0):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        # Device.retain_primary_context (pycuda 2020.1+) returns the runtime's context, not
        # current yet: push it so that it is current from here on, as make_context would be.
        self.context = cuda.Device(device).retain_primary_context()
        self.context.push()
        self.stream = cuda.Stream()
        self.stream_handle = self.stream.handle
        self.gpu_name = cuda.Device(device).name()

    def host(self, shape, dtype):
        return self.cuda.pagelocked_empty(tuple(shape), dtype)

    def device(self, nbytes):
        return self.cuda.mem_alloc(max(int(nbytes), 1))

    def address(self, dev):
        return int(dev)

    def to_device(self, dev, host):
        self.cuda.memcpy_htod_async(dev, host, self.stream)

    def to_host(self, host, dev):
        self.cuda.memcpy_dtoh_async(host, dev, self.stream)

    def synchronize(self):
        self.stream.synchronize()

    def push(self):
        self.context.push()

    def pop(self):
        self.cuda.Context.pop()

    def close(self):
        self.context.detach()  # releases our hold on the primary context


class CudaPythonMemory(object):
    """The same with NVIDIA's cuda-python (desktop; TensorRT 10 wheels pair with it)."""

    def __init__(self, device=0):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self._check(cudart.cudaSetDevice(device))
        self.stream = self._check(cudart.cudaStreamCreate())
        self.stream_handle = int(self.stream)
        name = self._check(cudart.cudaGetDeviceProperties(device)).name
        self.gpu_name = (
            name.decode("utf-8", "replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
        )
        self._allocs = []

    def _check(self, result):
        err, rest = result[0], result[1:]
        if int(err) != 0:
            raise RuntimeError("CUDA error {}".format(err))
        return rest[0] if len(rest) == 1 else (rest or None)

    def host(self, shape, dtype):
        return np.empty(tuple(shape), dtype)  # pageable: cudaMemcpyAsync still works

    def device(self, nbytes):
        ptr = self._check(self.cudart.cudaMalloc(max(int(nbytes), 1)))
        self._allocs.append(ptr)
        return ptr

    def address(self, dev):
        return int(dev)

    def to_device(self, dev, host):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.cudart.cudaMemcpyAsync(int(dev), host.ctypes.data, host.nbytes, kind, self.stream)
        )

    def to_host(self, host, dev):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.cudart.cudaMemcpyAsync(host.ctypes.data, int(dev), host.nbytes, kind, self.stream)
        )

    def synchronize(self):
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def push(self):
        self._check(self.cudart.cudaSetDevice(0))

    def pop(self):
        pass

    def close(self):
        for ptr in self._allocs:
            self.cudart.cudaFree(ptr)
        self._allocs = []
        self.cudart.cudaStreamDestroy(self.stream)


def open_memory():
    """pycuda first (what the Nano has), else cuda-python; one clear error without either."""
    errors = []
    for factory in (PycudaMemory, CudaPythonMemory):
        try:
            return factory()
        except ImportError as exc:
            errors.append(str(exc))
        except Exception as exc:  # pycuda's and cuda-python's own errors: no usable GPU
            raise ModelError(
                "the TensorRT backend cannot use the GPU through {}: {}".format(
                    factory.__name__, first_line(exc)
                )
            ) from exc
    raise ModelError(
        "the TensorRT backend needs pycuda (`pip3 install pycuda==2022.1` on the Nano) or "
        "cuda-python ({})".format("; ".join(errors))
    )

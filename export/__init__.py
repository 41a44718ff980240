"""ONNX export, simplification, parity and TensorRT checks and engines.

Only `export.bundle` and `export.trt` are imported on the device: they stay torch-free and
Python 3.6 compatible. Everything else here is host-side.
"""

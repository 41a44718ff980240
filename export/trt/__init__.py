"""TensorRT engines from nanoprune bundles, built and cached on the device.

Torch-free and Python 3.6 (the Jetson Nano's JetPack 4.6): `get_or_build_engine` in
`export.trt.cache` is what the edge runtime calls; `python -m export engine` is the CLI.
"""

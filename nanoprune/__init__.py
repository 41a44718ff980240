"""The end-to-end run over compress, export and benchmarks (`python -m nanoprune`)."""

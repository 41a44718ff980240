"""Benchmarks: latency and loop FPS, peers (unpruned model, OpenCV HOG), reports, comparisons.

Device-side modules (Python 3.6, no torch, no `compress`; copied into the Jetson image):
`stats`, `environment`, `latency`, `loop`, `video` and `__main__`. Host-side: `run`, `hog`,
`accuracy`, `report`, `plots`, `compare`.
"""

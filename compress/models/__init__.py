"""Detectors: Darknet YOLO family and torchvision SSD, all behind `Detector` (base.py)."""

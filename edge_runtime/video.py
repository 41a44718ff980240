"""Frames of a video file, read once into memory (OpenCV, torch-free, Python 3.6).

The benchmarks time detectors on the same decoded frames, and label-free distillation trains
on them; both read them here. The live loop reads cameras and streams through `sources`.
"""


def read_frames(video, count, start=0, stride=1):
    """Up to `count` BGR frames of `video`: frames start, start + stride, start + 2 * stride, ...

    Raises ValueError naming the file when OpenCV cannot open it or decodes nothing."""
    import cv2

    if count < 1 or stride < 1 or start < 0:
        raise ValueError(
            "{}: count and stride must be >= 1 and start >= 0, got {}, {}, {}".format(
                video, count, stride, start
            )
        )
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(
            "{}: OpenCV cannot open this video (missing, or a codec OpenCV lacks)".format(video)
        )
    frames, index = [], 0
    try:
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            if index >= start and (index - start) % stride == 0:
                frames.append(frame)
            index += 1
    finally:
        cap.release()
    if not frames:
        raise ValueError("{}: no frames decoded (from frame {})".format(video, start))
    return frames

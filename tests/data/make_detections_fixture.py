"""Turn an `edge_runtime run --log det.jsonl` log into the cached-detections fixture.

    python -m export onnx ...  # or any YOLOv3-tiny person bundle
    python -m edge_runtime run --model yolov3-tiny-person.onnx --threads 1 --conf 0.1 \\
        --source $NANOPRUNE_ASSETS/video/one-by-one-person-detection.mp4 --log det.jsonl
    python tests/data/make_detections_fixture.py det.jsonl tests/data/one_by_one_detections.json

Boxes are rounded to 0.1 px and scores to 3 decimals (the fixture stays ~40 KB).
"""

import json
import sys


def main(log_path, out_path, model="yolov3-tiny-person 416 (darknet COCO weights), ort CPU"):
    frames = []
    with open(log_path) as f:
        for line in f:
            record = json.loads(line)
            frames.append(
                [
                    [round(v, 1) for v in box] + [round(score, 3)]
                    for box, score, label in zip(
                        record["boxes"], record["scores"], record["labels"]
                    )
                    if label == "person"
                ]
            )
    fixture = {
        "video": "video/one-by-one-person-detection.mp4",
        "fps": 10.0,
        "size": [768, 432],
        "model": model,
        "score_floor": 0.1,
        "made_by": [s.strip() for s in __doc__.strip().splitlines()[2:6]],
        "detections": frames,  # per frame: [[x1, y1, x2, y2, score], ...]
    }
    with open(out_path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

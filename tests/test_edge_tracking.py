"""People tracking and counting on synthetic tracks: IDs survive gaps and crossings, lines count
each crossing once in the right direction, zones count entries and dwell, bad specs fail clearly.

Device code: this module keeps Python 3.6 syntax so it also runs under the Nano's Python.
"""

import numpy as np
import pytest

from edge_runtime.counting import Counter, parse_line, parse_shapes, parse_zone
from edge_runtime.errors import EdgeError
from edge_runtime.track import (
    STD_POSITION,
    STD_VELOCITY,
    KalmanBoxes,
    Tracker,
    greedy_match,
    iou_matrix,
)
from edge_runtime.tracking import TrackingStage

W, H = 640, 480


def box_at(foot_x, foot_y, w=40.0, h=100.0):
    """A person's box standing at foot point (x, y)."""
    return [foot_x - w / 2, foot_y - h, foot_x + w / 2, foot_y]


def walk(start, step, frames, **size):
    """Boxes of one person walking from foot point `start` by `step` pixels per frame."""
    return [box_at(start[0] + i * step[0], start[1] + i * step[1], **size) for i in range(frames)]


class Frame:
    """The loop result fields the tracking stage reads (index, frame, boxes, scores, classes)."""

    image = np.zeros((H, W, 3), np.uint8)

    def __init__(self, index, boxes, scores=None):
        self.index, self.timestamp, self.frame = index, 1000.0 + index, self.image
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(
            [0.9] * len(self.boxes) if scores is None else scores, dtype=np.float32
        )
        self.classes = np.zeros(len(self.boxes), dtype=np.int64)


def run(frames, lines=(), zones=(), fps=10.0, **tracker_args):
    """Feed per-frame [(box, score), ...] through a TrackingStage; return (stage, results)."""
    parsed_lines, parsed_zones = parse_shapes(list(lines), list(zones))
    stage = TrackingStage(
        Tracker(**tracker_args), Counter(parsed_lines, parsed_zones), ["person"], fps=fps
    )
    results = []
    for i, dets in enumerate(frames):
        boxes = [b for b, _ in dets]
        result = Frame(i, boxes, [s for _, s in dets])
        stage.update(result)
        results.append(result)
    return stage, results


def frames_of(*people, **kw):
    """Merge per-person box lists (None = not detected that frame) into per-frame detections."""
    score = kw.get("score", 0.9)
    n = max(len(p) for p in people)
    out = []
    for i in range(n):
        out.append([(p[i], score) for p in people if i < len(p) and p[i] is not None])
    return out


def events(results, kind=None):
    found = [e for r in results for e in r.events]
    return [e for e in found if kind is None or e["type"] == kind]


def ids_of(results):
    return sorted(set(int(i) for r in results for i in r.track_ids if i > 0))


def test_crossings_are_counted_once_each_in_their_direction() -> None:
    # A line drawn left to right: walking down the picture is "in", walking up is "out".
    down = walk((200, 150), (0, 8), 40)
    up = [None] * 45 + walk((420, 420), (0, -8), 40)
    stage, results = run(frames_of(down, up), lines=["door=0,240,640,240"])
    crossings = events(results, "cross")
    assert [(e["line"], e["dir"]) for e in crossings] == [("door", "in"), ("door", "out")]
    assert crossings[0]["id"] != crossings[1]["id"]
    summary = stage.summary()
    assert summary["lines"]["door"]["in"] == 1 and summary["lines"]["door"]["out"] == 1
    assert summary["unique_tracks"] == 2 == len(ids_of(results))


def test_a_walk_past_the_end_of_the_segment_is_not_counted() -> None:
    past = walk((500, 150), (0, 8), 40)  # crosses y=240 at x=500, right of the segment's end
    _, results = run(frames_of(past), lines=["0,240,300,240"])
    assert events(results, "cross") == []


def test_an_occlusion_shorter_than_the_death_limit_keeps_the_id() -> None:
    path = walk((60, 300), (6, 0), 60)
    hidden = [b if not 20 <= i < 32 else None for i, b in enumerate(path)]  # 12 frames unseen
    stage, results = run(frames_of(hidden), max_misses=15)
    assert ids_of(results) == [1] and stage.tracker.unique == 1
    # The same gap with a shorter limit ends the track: the person comes back as someone new.
    stage, results = run(frames_of(hidden), max_misses=8)
    assert ids_of(results) == [1, 2]


def test_two_people_crossing_paths_keep_their_ids() -> None:
    # A walks right, B walks left through A; B is hidden behind A for 4 frames in the middle.
    a = walk((100, 300), (8, 0), 60, w=44.0, h=110.0)
    b = walk((580, 290), (-8, 0), 60, w=40.0, h=100.0)
    b = [box if not 28 <= i < 32 else None for i, box in enumerate(b)]
    stage, results = run(frames_of(a, b))
    assert stage.tracker.unique == 2
    first, last = results[5], results[-1]
    # whoever started on the left is still the one moving right at the end
    left_id = int(first.track_ids[np.argmin(first.boxes[:, 0])])
    right_now = int(last.track_ids[np.argmax(last.boxes[:, 0])])
    assert left_id == right_now


def test_a_flickering_detection_neither_double_counts_nor_adds_people() -> None:
    # Walk down across the line while the detector drops every third box, scores some low,
    # and the boxes jitter by a few pixels; then stand on the line jittering for 30 frames.
    rng = np.random.RandomState(0)
    path = walk((320, 180), (0, 4), 30) + [box_at(320, 300)] * 30
    line_y = 300 - 1.0  # standing right on the line (within the margin)
    frames = []
    for i, box in enumerate(path):
        if i % 3 == 2:
            frames.append([])
            continue
        jitter = rng.uniform(-1.5, 1.5, 4)
        score = 0.3 if i % 5 == 0 else 0.9
        frames.append([(list(np.asarray(box) + jitter), score)])
    stage, results = run(
        frames, lines=[f"0,{line_y},640,{line_y}"], zones=["0,250,640,250,640,480,0,480"]
    )
    assert stage.tracker.unique == 1
    assert [e["dir"] for e in events(results, "cross")] == ["in"]
    assert len(events(results, "enter")) == 1 and events(results, "leave") == []


def test_zone_counts_people_inside_and_their_dwell_time() -> None:
    # 10 FPS: in at frame ~10, out at frame ~40 -> about 3 s inside.
    path = walk((50, 300), (10, 0), 60)
    stage, results = run(frames_of(path), zones=["shop=200,200,500,200,500,400,200,400"])
    enter, leave = events(results, "enter"), events(results, "leave")
    assert len(enter) == 1 and len(leave) == 1 and leave[0]["why"] == "walked out"
    assert 2.5 <= leave[0]["dwell_s"] <= 3.5
    zone = stage.summary()["zones"]["shop"]
    assert zone["entries"] == 1 and zone["exits"] == 1 and zone["inside"] == 0
    assert zone["dwell_s"] == {str(enter[0]["id"]): leave[0]["dwell_s"]}
    assert max(r.counts["zones"]["shop"] for r in results) == 1


def test_a_track_that_dies_inside_a_zone_leaves_it() -> None:
    path = walk((300, 300), (0, 0), 20) + [None] * 10
    stage, results = run(frames_of(path), zones=["100,200,500,200,500,400,100,400"], max_misses=5)
    leave = events(results, "leave")
    assert len(leave) == 1 and leave[0]["why"] == "lost"
    # confirmed at frame 2, last seen at frame 19 (10 FPS): the hidden frames do not count
    assert leave[0]["dwell_s"] == pytest.approx(1.7)
    assert stage.summary()["zones"]["zone1"]["inside"] == 0


def test_low_score_boxes_keep_tracks_alive_but_never_start_one() -> None:
    path = walk((60, 300), (5, 0), 40)
    frames = [[(b, 0.9 if i < 10 else 0.3)] for i, b in enumerate(path)]
    stage, results = run(frames, max_misses=3)
    assert ids_of(results) == [1] and all(r.track_ids[0] == 1 for r in results[10:])
    weak_only = [[(b, 0.3)] for b in path]
    stage, results = run(weak_only)
    assert stage.tracker.unique == 0 and ids_of(results) == []


def test_single_frame_false_positives_get_no_id() -> None:
    rng = np.random.RandomState(1)
    frames = [[(box_at(*rng.uniform([50, 150], [600, 470])), 0.9)] for _ in range(50)]
    stage, results = run(frames, lines=["0,240,640,240"])
    assert stage.tracker.unique == 0 and events(results) == []


def test_per_minute_rates_and_history() -> None:
    # 6 people cross one after another, 2 s apart, at 10 FPS (12 s of video).
    people = [[None] * (20 * k) + walk((100 + 60 * k, 150), (0, 10), 20) for k in range(6)]
    stage, results = run(frames_of(*people), lines=["door=0,240,640,240"])
    line = stage.summary()["lines"]["door"]
    assert line["in"] == 6 and line["in_last_window"] == 6
    assert 25 <= line["in_per_min"] <= 40  # 6 crossings in ~10-12 s of video
    history = results[-1].counts["history"]
    assert [s for s, _ in history] == list(range(len(history))) and max(n for _, n in history) == 1


def test_greedy_match_takes_the_best_pairs_above_the_threshold() -> None:
    sim = np.array([[0.9, 0.5, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 0.1]])
    matches, rows, cols = greedy_match(sim, 0.3)
    assert matches.tolist() == [[0, 0], [1, 1]] and rows == [2] and cols == [2]
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
    assert np.allclose(iou_matrix(boxes, boxes), [[1, 1 / 3.0], [1 / 3.0, 1]])


@pytest.mark.parametrize(
    "parse, spec, message",
    [
        (parse_line, "1,2,3", "expected [name=]x1,y1,x2,y2 (4 numbers), got 3"),
        (parse_line, "door=a,b,c,d", "coordinates must be numbers"),
        (parse_line, "=1,2,3,4", "empty name"),
        (parse_line, "5,5,5,5", "the two end points are the same"),
        (parse_line, "-1,0,10,10", "coordinates must be >= 0"),
        (parse_zone, "1,2,3,4", "3 or more points"),
        (parse_zone, "1,2,3,4,5", "3 or more points"),
        (parse_zone, "0,0,1,1,2,2", "no area"),
    ],
)
def test_bad_specs_give_one_clear_error(parse, spec, message) -> None:
    with pytest.raises(EdgeError) as err:
        parse(spec)
    assert message in str(err.value) and repr(spec) in str(err.value)


def test_specs_in_pixels_fractions_and_names() -> None:
    lines, zones = parse_shapes(
        ["door=0,0.5,1,0.5", "100,50,300,50"], ["hall=0.1,0.1,0.9,0.1,0.5,0.9"]
    )
    assert [s.name for s in lines + zones] == ["door", "line2", "hall"]
    for shape in lines + zones:
        shape.resolve(W, H)
    assert lines[0].points.tolist() == [[0, 240], [640, 240]]
    assert lines[1].points.tolist() == [[100, 50], [300, 50]]
    assert np.allclose(zones[0].points, [[64, 48], [576, 48], [320, 432]])
    with pytest.raises(EdgeError, match="used twice"):
        parse_shapes(["a=0,0,1,1"], ["a=0,0,1,0,1,1"])
    with pytest.raises(EdgeError, match=r"point \(700, 50\) is outside the 640x480 frame"):
        parse_line("door=10,50,700,50").resolve(W, H)


def textbook_kalman(z_seq, seen):
    """The 8x8 matrix Kalman filter (F, Q, H, R written out) on one box, for comparison."""
    f = np.eye(8)
    f[:4, 4:] = np.eye(4)
    h = np.eye(4, 8)
    z0 = np.asarray(z_seq[0], float)
    scale = z0[[3, 3, 2, 3]]
    x = np.concatenate([z0, np.zeros(4)])
    p = np.diag(np.concatenate([(2 * STD_POSITION * scale) ** 2, (10 * STD_VELOCITY * scale) ** 2]))
    for z, ok in zip(z_seq[1:], seen[1:]):
        scale = x[[3, 3, 2, 3]]
        q = np.diag(np.concatenate([(STD_POSITION * scale) ** 2, (STD_VELOCITY * scale) ** 2]))
        x, p = f.dot(x), f.dot(p).dot(f.T) + q
        x[2:4] = np.maximum(x[2:4], 1.0)
        if ok:
            r = np.diag((STD_POSITION * x[[3, 3, 2, 3]]) ** 2)
            k = p.dot(h.T).dot(np.linalg.inv(h.dot(p).dot(h.T) + r))
            x, p = x + k.dot(np.asarray(z, float) - h.dot(x)), p - k.dot(h).dot(p)
    return x, p


def test_the_blockwise_kalman_filter_equals_the_textbook_one() -> None:
    rng = np.random.RandomState(3)
    z_seq = [[100 + 3 * i, 200 + i, 40, 100 + 0.5 * i] + rng.normal(0, 2, 4) for i in range(25)]
    seen = [True] * 10 + [False] * 5 + [True] * 10  # a gap: predictions only
    kf = KalmanBoxes()
    kf.add(np.array([z_seq[0]]))
    for z, ok in zip(z_seq[1:], seen[1:]):
        kf.predict()
        if ok:
            kf.update(np.array([0]), np.array([z]))
    x, p = textbook_kalman(z_seq, seen)
    np.testing.assert_allclose(kf.mean[0], x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(kf.covariance()[0], p, rtol=1e-9, atol=1e-9)

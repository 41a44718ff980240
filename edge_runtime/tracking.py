"""People tracking and counting as a stage of the loop (`--track`, `--count-line`, `--zone`).

`TrackingStage.update(result)` runs in its own thread after postprocessing, frame by frame in
order: it tracks the person boxes, counts line crossings and zone visits, and annotates the
result for the outputs:

    result.track_ids  [n] int aligned with result.boxes, -1 where no confirmed track
    result.events     [{"type": "cross"|"enter"|"leave", ...}] of this frame
    result.counts     {"in_view", "unique", "lines", "zones", "history"} for pages and overlays
    result.tracks     [(id, (x1, y1, x2, y2), trail [(x, y), ...])] for drawing

`draw(result, image)` adds IDs, trails, lines and zones to an annotated frame.
"""

import collections

import cv2
import numpy as np

from edge_runtime.counting import Counter, parse_shapes
from edge_runtime.track import Tracker

TRAIL = 20  # foot points kept per track for drawing (2 s at 10 FPS)
HISTORY_S = 120  # seconds of "people in view" kept for the live page
LINE_COLOR, ZONE_COLOR, TRACK_COLOR = (0, 255, 255), (255, 160, 0), (60, 220, 60)


def add_tracking_args(parser):
    """The tracking/counting flag group (any of --count-line/--zone turns tracking on)."""
    g = parser.add_argument_group("tracking and counting")
    g.add_argument("--track", action="store_true", help="track people and give them IDs")
    g.add_argument(
        "--count-line",
        action="append",
        metavar="[NAME=]X1,Y1,X2,Y2",
        help="count people crossing this segment (pixels, or fractions of the frame when all "
        "values are in [0, 1]); 'in' = onto the right-hand side walking from (X1,Y1) to "
        "(X2,Y2) on screen; repeatable",
    )
    g.add_argument(
        "--zone",
        action="append",
        metavar="[NAME=]X1,Y1,X2,Y2,X3,Y3,...",
        help="count people inside this polygon and their dwell time; repeatable",
    )
    g.add_argument(
        "--track-high", type=float, default=0.5, help="score that starts tracks (first round)"
    )
    g.add_argument(
        "--track-iou", type=float, default=0.3, help="least IoU to match a box to a track"
    )
    g.add_argument(
        "--track-min-hits", type=int, default=3, help="frames in a row before a track gets an ID"
    )
    g.add_argument(
        "--track-max-misses",
        type=int,
        default=30,
        help="frames a track survives unseen (occlusion) before it ends",
    )
    return g


def tracking_enabled(args):
    return bool(args.track or args.count_line or args.zone)


def tracking_from_args(args, class_names, fps=None):
    """A TrackingStage for the parsed flags, or None when tracking is off.

    fps: the source's frame rate for files (event times are then video time, so rates mean
    the same on a fast desktop and a slow Nano); None for live sources (capture times).
    """
    from edge_runtime.errors import EdgeError

    if not tracking_enabled(args):
        return None
    lines, zones = parse_shapes(args.count_line, args.zone)
    if not 0.0 < args.track_high <= 1.0:
        raise EdgeError("--track-high must be within (0, 1]")
    if not 0.0 < args.track_iou <= 1.0:
        raise EdgeError("--track-iou must be within (0, 1]")
    if args.track_min_hits < 1 or args.track_max_misses < 1:
        raise EdgeError("--track-min-hits and --track-max-misses must be >= 1")
    # Low-score boxes are those the detector keeps below --track-high (its --conf floor).
    tracker = Tracker(
        high=args.track_high,
        low=0.0,
        match_iou=args.track_iou,
        min_hits=args.track_min_hits,
        max_misses=args.track_max_misses,
    )
    return TrackingStage(tracker, Counter(lines, zones), class_names, fps=fps)


def people_classes(class_names):
    """A lookup [number of classes] -> is this class a person (all are when none is named so)."""
    names = [n.lower() for n in class_names]
    lookup = np.array([n in ("person", "pedestrian", "people") for n in names], dtype=bool)
    return lookup if lookup.any() else np.ones(len(names), dtype=bool)


class TrackingStage(object):
    """Tracker + counter + the short memories the outputs draw from (trails, history)."""

    def __init__(self, tracker, counter, class_names, fps=None):
        self.tracker, self.counter = tracker, counter
        self.people = people_classes(class_names)
        self.fps = float(fps) if fps else None
        self.trails = {}
        self.history = collections.deque(maxlen=HISTORY_S)  # (second, most people in view)
        self.in_view_max, self.frames, self.size = 0, 0, None

    def update(self, result):
        """The loop's stage function: annotate `result` with IDs, events and counts."""
        if self.size is None:
            h, w = result.frame.shape[:2]
            self.counter.resolve(w, h)
            self.size = (w, h)
        t = result.index / self.fps if self.fps else result.timestamp
        classes = np.asarray(result.classes).astype(np.int64)
        rows = np.nonzero(self.people[classes])[0]
        ids = np.full(len(result.boxes), -1, dtype=np.int64)
        ids[rows] = self.tracker.update(result.boxes[rows], result.scores[rows])
        boxes = self.tracker.boxes()
        feet, tracks = {}, []
        for trk, box in zip(self.tracker.tracks, boxes.tolist()):
            if not trk.confirmed or trk.misses:
                continue  # only people seen in this frame are drawn and counted
            x1, y1, x2, y2 = box
            foot = ((x1 + x2) / 2.0, y2)
            feet[trk.id] = foot
            trail = self.trails.get(trk.id)
            if trail is None:
                trail = self.trails[trk.id] = collections.deque(maxlen=TRAIL)
            trail.append(foot)
            tracks.append((trk.id, (x1, y1, x2, y2), list(trail)))
        alive = set(trk.id for trk in self.tracker.confirmed())
        for tid in [i for i in self.trails if i not in alive]:
            del self.trails[tid]
        result.events = self.counter.update(t, feet, alive)
        self._remember(t, len(tracks))
        counts = self.counter.live()
        counts.update(in_view=len(tracks), unique=self.tracker.unique)
        counts["history"] = list(self.history)
        result.track_ids, result.counts, result.tracks = ids, counts, tracks

    def _remember(self, t, in_view):
        self.frames += 1
        self.in_view_max = max(self.in_view_max, in_view)
        second = int(t)
        # tuples: the MJPEG thread may be serialising a copy of this history right now
        if self.history and self.history[-1][0] == second:
            self.history[-1] = (second, max(self.history[-1][1], in_view))
        else:
            self.history.append((second, in_view))

    def summary(self):
        """The "counting" part of the stats JSON."""
        out = {
            "frames": self.frames,
            "unique_tracks": self.tracker.unique,
            "in_view": len(self.tracker.visible()),
            "in_view_max": self.in_view_max,
            "clock": "video" if self.fps else "capture",
            "tracker": {
                "high": self.tracker.high,
                "match_iou": self.tracker.match_iou,
                "min_hits": self.tracker.min_hits,
                "max_misses": self.tracker.max_misses,
                "buffer": self.tracker.buffer,
                "wide": self.tracker.wide,
            },
        }
        out.update(self.counter.summary())
        return out

    def status(self, result):
        """A short line for the overlay: people in view, unique, and each line's in/out."""
        c = result.counts or {}
        parts = ["in view {}".format(c.get("in_view", 0)), "unique {}".format(c.get("unique", 0))]
        for name, (n_in, n_out) in sorted((c.get("lines") or {}).items()):
            parts.append("{} in {} out {}".format(name, n_in, n_out))
        for name, n in sorted((c.get("zones") or {}).items()):
            parts.append("{} {}".format(name, n))
        return "  ".join(parts)

    def draw(self, result, image):
        """Lines, zones, trails and IDs onto `image` (the annotated frame), in place."""
        for line in self.counter.lines:
            _draw_line(image, line, (result.counts or {}).get("lines", {}).get(line.name))
        for zone in self.counter.zones:
            pts = np.round(zone.points).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [pts], True, ZONE_COLOR, 2, cv2.LINE_AA)
            n = (result.counts or {}).get("zones", {}).get(zone.name, 0)
            _label(image, "{}: {}".format(zone.name, n), tuple(pts[0, 0]), ZONE_COLOR)
        for tid, (x1, y1, _x2, _y2), trail in result.tracks or ():
            if len(trail) > 1:
                pts = np.round(np.array(trail)).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(image, [pts], False, TRACK_COLOR, 2, cv2.LINE_AA)
            _label(image, "#{}".format(tid), (int(x1) + 3, int(y1) + 18), TRACK_COLOR)
        _label(image, self.status(result), (8, 42), (255, 255, 255))
        return image


def _label(image, text, org, color):
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)


def _draw_line(image, line, counts):
    (x1, y1), (x2, y2) = line.points
    cv2.line(image, (int(x1), int(y1)), (int(x2), int(y2)), LINE_COLOR, 2, cv2.LINE_AA)
    # an arrow from the middle towards the "in" side
    mx, my = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    dx, dy = x2 - x1, y2 - y1
    norm = max(np.hypot(dx, dy), 1e-9)
    tip = (int(mx - dy / norm * 20), int(my + dx / norm * 20))
    cv2.arrowedLine(image, (int(mx), int(my)), tip, LINE_COLOR, 2, cv2.LINE_AA, tipLength=0.4)
    n_in, n_out = counts or (0, 0)
    _label(
        image, "{} in {} out {}".format(line.name, n_in, n_out), (int(x1), int(y1) - 6), LINE_COLOR
    )

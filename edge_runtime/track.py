"""A multi-object box tracker for the device: numpy only, Python 3.6, no scipy.

    tracker = Tracker()
    for boxes, scores in frames:                      # boxes [n, 4] xyxy pixels
        ids = tracker.update(boxes, scores)           # [n] int, -1 for no confirmed track
        for t in tracker.visible():                   # confirmed tracks seen this frame
            print(t.id, t.box())

The design follows ByteTrack (Zhang et al., ECCV 2022): every box above the detector's
threshold is used. High-score boxes are matched first to the confirmed tracks by IoU with each
track's Kalman prediction; the tracks left over then get a second chance on the low-score
boxes, which are mostly people half hidden behind someone else; tentative tracks come last.
Low-score boxes never start a track, so background clutter does not become people. IoU is
taken on boxes enlarged by a buffer (C-BIoU), which keeps small, jittery people matched.

Motion is a constant-velocity Kalman filter on (cx, cy, w, h) with noise proportional to the
box size (as in SORT/ByteTrack, so near and far people are treated alike). All live tracks are
kept in stacked arrays and filtered in one batched step, which keeps the per-frame cost with
20 people under a millisecond on an x86 desktop core (`python -m benchmarks tracking`).

Assignment is greedy on IoU (best pair first) rather than Hungarian: scipy is not on the
Jetson's Python 3.6 image, a pure-Python Hungarian is O(n^3) interpreted steps (several ms at
20 people), and once pairs are gated by IoU the two agree except in contrived ties (each track
overlaps one or two boxes at 10+ FPS). See `greedy_match`.

A track is born tentative, becomes confirmed (and only then gets an ID) after `min_hits`
matches with at most `tentative_misses` frames between them (a detector flickers most while a
person walks in at the border), and dies after `max_misses` frames without one. IDs are consecutive
integers from 1 and never reused, so the number handed out is the number of unique people.
"""

import numpy as np

# Kalman noise as fractions of the box size (ByteTrack's values, per frame).
STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160


def iou_matrix(a, b):
    """IoU between every box of a [n, 4] and b [m, 4] (xyxy) -> [n, m]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def greedy_match(similarity, threshold):
    """Pairs (row, col) by descending similarity, each row and column used once, only pairs with
    similarity >= threshold. Returns (matches [k, 2], unmatched rows, unmatched cols)."""
    n, m = similarity.shape
    rows_left, cols_left = set(range(n)), set(range(m))
    matches = []
    if n and m:
        r, c = np.nonzero(similarity >= threshold)
        order = np.argsort(-similarity[r, c], kind="stable")
        for i in order:
            ri, ci = int(r[i]), int(c[i])
            if ri in rows_left and ci in cols_left:
                matches.append((ri, ci))
                rows_left.discard(ri)
                cols_left.discard(ci)
    return (
        np.array(matches, dtype=np.int64).reshape(-1, 2),
        sorted(rows_left),
        sorted(cols_left),
    )


def grow(boxes, ratio):
    """Boxes [n, 4] xyxy enlarged by `ratio` of their width and height on every side."""
    if not ratio:
        return boxes
    w = (boxes[:, 2] - boxes[:, 0]) * ratio
    h = (boxes[:, 3] - boxes[:, 1]) * ratio
    return boxes + np.stack([-w, -h, w, h], axis=1)


def xyxy_to_z(boxes):
    """[n, 4] xyxy -> [n, 4] (cx, cy, w, h)."""
    z = np.empty((len(boxes), 4))
    z[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    z[:, :2] = boxes[:, :2] + z[:, 2:] / 2
    return z


def z_to_xyxy(z):
    """[n, >=4] (cx, cy, w, h, ...) -> [n, 4] xyxy."""
    boxes = np.empty((len(z), 4))
    boxes[:, :2] = z[:, :2] - z[:, 2:4] / 2
    boxes[:, 2:] = boxes[:, :2] + z[:, 2:4]
    return boxes


class KalmanBoxes(object):
    """Constant-velocity Kalman filters for many boxes at once.

    State per box: (cx, cy, w, h) and their velocities; measurement (cx, cy, w, h). With a
    diagonal process and measurement noise (as here) the four coordinates never correlate, so
    the 8x8 covariance is four 2x2 (position, velocity) blocks and the filter reduces to closed
    forms on arrays: no matrix inverse, no LAPACK call. That matters on the device: numpy
    1.19's OpenBLAS wakes its thread pool for every batched 4x4 inverse, which cost more wall
    time than the rest of the tracker together. The result equals the textbook 8x8 filter.

    `mean` [n, 8]; `p_pos`, `p_cross`, `p_vel` [n, 4]: variance of each position, its
    covariance with its velocity, and the velocity's variance. Rows are added, filtered and
    dropped together by the tracker.
    """

    def __init__(self):
        self.mean = np.zeros((0, 8))
        self.p_pos, self.p_cross, self.p_vel = np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4))

    @staticmethod
    def _scale(z):
        # w-noise follows the width, everything else the height (people are tall and thin)
        return z[:, [3, 3, 2, 3]]

    def add(self, z):
        """Append filters started at measurements z [k, 4] (velocity unknown)."""
        s = self._scale(z)
        self.mean = np.concatenate([self.mean, np.concatenate([z, np.zeros_like(z)], 1)], 0)
        self.p_pos = np.concatenate([self.p_pos, (2 * STD_POSITION * s) ** 2], 0)
        self.p_cross = np.concatenate([self.p_cross, np.zeros_like(z)], 0)
        self.p_vel = np.concatenate([self.p_vel, (10 * STD_VELOCITY * s) ** 2], 0)

    def keep(self, mask):
        self.mean = self.mean[mask]
        self.p_pos, self.p_cross, self.p_vel = (
            self.p_pos[mask],
            self.p_cross[mask],
            self.p_vel[mask],
        )

    def predict(self):
        if not len(self.mean):
            return
        s = self._scale(self.mean)
        self.mean[:, :4] += self.mean[:, 4:]
        # P <- F P F^T + Q, block by block
        self.p_pos += 2 * self.p_cross + self.p_vel + (STD_POSITION * s) ** 2
        self.p_cross += self.p_vel
        self.p_vel += (STD_VELOCITY * s) ** 2
        # a shrinking box would turn negative while a person stays hidden; keep it sane
        self.mean[:, 2:4] = np.maximum(self.mean[:, 2:4], 1.0)

    def update(self, rows, z):
        """Correct filters `rows` with measurements z [k, 4]."""
        if not len(rows):
            return
        mean, p_pos, p_cross = self.mean[rows], self.p_pos[rows], self.p_cross[rows]
        innovation_var = p_pos + (STD_POSITION * self._scale(mean)) ** 2
        gain_pos, gain_vel = p_pos / innovation_var, p_cross / innovation_var
        innovation = z - mean[:, :4]
        mean[:, :4] += gain_pos * innovation
        mean[:, 4:] += gain_vel * innovation
        self.mean[rows] = mean
        self.p_vel[rows] -= gain_vel * p_cross
        self.p_pos[rows] = (1 - gain_pos) * p_pos
        self.p_cross[rows] = (1 - gain_pos) * p_cross

    def covariance(self):
        """The full [n, 8, 8] covariances (for checks; the filter never builds them)."""
        n, idx = len(self.mean), np.arange(4)
        cov = np.zeros((n, 8, 8))
        cov[:, idx, idx] = self.p_pos
        cov[:, idx, idx + 4] = cov[:, idx + 4, idx] = self.p_cross
        cov[:, idx + 4, idx + 4] = self.p_vel
        return cov

    def boxes(self):
        return z_to_xyxy(self.mean)


class Track(object):
    """One tracked person: `id` (0 while tentative), matches so far, frames since the last."""

    __slots__ = ("id", "hits", "misses")

    def __init__(self):
        self.id, self.hits, self.misses = 0, 1, 0

    @property
    def confirmed(self):
        return self.id > 0


class Tracker(object):
    """ByteTrack-style association over `KalmanBoxes`.

    Args:
        high: detections at or above this score are matched first and may start tracks.
        low: detections in [low, high) are only used to keep existing tracks alive.
        match_iou: least IoU between a prediction and a high-score detection to match.
        low_match_iou: least IoU for the low-score round (stricter: those boxes are noisier).
        min_hits: matches before a track is confirmed and gets an ID.
        max_misses: frames a confirmed track survives unmatched (occlusion, missed detections).
        tentative_misses: frames in a row a not yet confirmed track survives unmatched.
        buffer: boxes are enlarged by this fraction of their size on every side before IoU
            (C-BIoU, Yang et al., WACV 2023): small, far-away people move more than their own
            width between frames and their boxes jitter, so plain IoU misses them.
        wide: a second, wider buffer for the confirmed tracks and high-score boxes the first
            round left over (C-BIoU's cascade); 0 turns it off. On vtest.avi (YOLOv3-tiny,
            people ~40 px tall) plain IoU gave 203 IDs, buffer 0.3 gave 88, with wide 0.6 62.
    """

    def __init__(
        self,
        high=0.5,
        low=0.1,
        match_iou=0.3,
        low_match_iou=0.5,
        min_hits=3,
        max_misses=30,
        tentative_misses=1,
        buffer=0.3,
        wide=0.6,
    ):
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError("tracker: need 0 <= low <= high <= 1, got {} {}".format(low, high))
        if min_hits < 1 or max_misses < 1:
            raise ValueError("tracker: min_hits and max_misses must be >= 1")
        self.high, self.low = float(high), float(low)
        self.match_iou, self.low_match_iou = float(match_iou), float(low_match_iou)
        self.min_hits, self.max_misses = int(min_hits), int(max_misses)
        self.tentative_misses = int(tentative_misses)
        self.buffer = float(buffer)
        self.wide = float(wide)
        self.kf = KalmanBoxes()
        self.tracks = []  # aligned with the rows of self.kf
        self.next_id = 1

    @property
    def unique(self):
        """How many confirmed tracks (people) there have been."""
        return self.next_id - 1

    def update(self, boxes, scores):
        """Advance one frame with detections boxes [n, 4] xyxy and scores [n].

        Returns [n] int64: the confirmed track ID each detection was given, -1 where none
        (a low-score box matched no track, or the track is still tentative).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        self.kf.predict()
        predicted = self.kf.boxes()
        # one similarity matrix per frame; every round reads its part of it
        similarity = iou_matrix(grow(predicted, self.buffer), grow(boxes, self.buffer))

        high = np.nonzero(scores >= self.high)[0]
        low = np.nonzero((scores >= self.low) & (scores < self.high))[0]
        confirmed = np.array([t.confirmed for t in self.tracks], dtype=bool)
        matched_rows, matched_dets = [], []

        def match(rows, dets, threshold, buffer=None):
            """Greedy IoU match of track rows to detections; returns what is left of each."""
            if not len(rows) or not len(dets):
                return rows, dets
            if buffer is None:
                sim = similarity[np.ix_(rows, dets)]
            else:
                sim = iou_matrix(grow(predicted[rows], buffer), grow(boxes[dets], buffer))
            m, rows_left, dets_left = greedy_match(sim, threshold)
            matched_rows.extend(rows[m[:, 0]].tolist())
            matched_dets.extend(dets[m[:, 1]].tolist())
            return rows[rows_left], dets[dets_left]

        # Round 1: high-score boxes and confirmed tracks (seen or hidden) go first, so a
        # tentative track born from a stray box can never take a known person's detection.
        rows_left, high_left = match(np.nonzero(confirmed)[0], high, self.match_iou)
        if self.wide:
            rows_left, high_left = match(rows_left, high_left, self.match_iou, self.wide)
        # Round 2: low-score boxes keep the confirmed tracks left alive (they are mostly
        # people half hidden); they never feed tentative tracks, which would be clutter.
        match(rows_left, low, self.low_match_iou)
        # Round 3: tentative tracks take what is left of the high-score boxes; the rest
        # start tracks.
        _, new_dets = match(np.nonzero(~confirmed)[0], high_left, self.match_iou)

        matched_rows = np.asarray(matched_rows, dtype=np.int64)
        matched_dets = np.asarray(matched_dets, dtype=np.int64)
        self.kf.update(matched_rows, xyxy_to_z(boxes[matched_dets]))

        hit = np.zeros(len(self.tracks), dtype=bool)
        hit[matched_rows] = True
        for r, d in zip(matched_rows.tolist(), matched_dets.tolist()):
            t = self.tracks[r]
            t.hits += 1
            t.misses = 0
            if not t.confirmed and t.hits >= self.min_hits:
                t.id = self.next_id
                self.next_id += 1
            if t.confirmed:
                ids[d] = t.id

        keep = np.ones(len(self.tracks), dtype=bool)
        for r in np.nonzero(~hit)[0].tolist():
            t = self.tracks[r]
            t.misses += 1
            limit = self.max_misses if t.confirmed else self.tentative_misses
            if t.misses > limit:
                keep[r] = False
        self.tracks = [t for t, k in zip(self.tracks, keep) if k]
        self.kf.keep(keep)

        if len(new_dets):
            self.kf.add(xyxy_to_z(boxes[new_dets]))
            for d in new_dets.tolist():
                t = Track()
                if self.min_hits <= 1:
                    t.id = self.next_id
                    self.next_id += 1
                    ids[d] = t.id
                self.tracks.append(t)
        return ids

    def visible(self):
        """Confirmed tracks matched in the last update, with their filtered boxes."""
        return [t for t in self.tracks if t.confirmed and t.misses == 0]

    def confirmed(self):
        return [t for t in self.tracks if t.confirmed]

    def boxes(self):
        """Filtered xyxy box of every live track, aligned with `self.tracks`."""
        return self.kf.boxes()

"""Counting lines and zones over tracked people's foot points.

    --count-line door=0.1,0.8,0.9,0.8      a segment; crossing it is counted "in" or "out"
    --zone table=300,120,520,120,520,420,300,420   a polygon; who is inside now, entries, dwell

Coordinates are pixels, or fractions of the frame when every value lies in [0, 1]. A name is
optional (`line1`, `zone1`, ... otherwise).

Direction: "in" is a crossing onto the right-hand side of the segment as it is walked from
(x1, y1) to (x2, y2) on screen (y grows downwards), so a line drawn left to right counts people
walking down the picture (towards a camera above a door) as "in".

A foot point (bottom centre of the track's box) is where a person stands, so it is what lines
and zones test. Within `margin` pixels of a line or a zone's border a point keeps the side it
had: box jitter around the border then never adds a count.
"""

import collections

import numpy as np

from edge_runtime.errors import EdgeError


def _numbers(flag, text):
    name, sep, body = text.partition("=")
    if not sep:
        name, body = "", text
    name = name.strip()
    if sep and not name:
        raise EdgeError("{} {!r}: empty name before '='".format(flag, text))
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        raise EdgeError(
            "{} {!r}: coordinates must be numbers separated by commas".format(flag, text)
        ) from None
    if any(v < 0 or v != v for v in values):
        raise EdgeError("{} {!r}: coordinates must be >= 0".format(flag, text))
    return name, values


class Shape(object):
    """Points as given (pixels or fractions) and, after `resolve`, in pixels."""

    flag = ""

    def __init__(self, name, values, spec):
        self.name, self.spec = name, spec
        self.fractions = all(v <= 1.0 for v in values)
        self.raw = np.asarray(values, dtype=np.float64).reshape(-1, 2)
        self.points = None if self.fractions else self.raw.copy()

    def resolve(self, width, height):
        """Pixel points for a width x height frame; pixel specs must fit inside it."""
        if self.fractions:
            self.points = self.raw * np.array([width, height], dtype=np.float64)
            return self
        outside = (self.raw[:, 0] > width) | (self.raw[:, 1] > height)
        if outside.any():
            x, y = self.raw[np.argmax(outside)]
            raise EdgeError(
                "{} {!r}: point ({:g}, {:g}) is outside the {}x{} frame".format(
                    self.flag, self.spec, x, y, width, height
                )
            )
        return self


class Line(Shape):
    flag = "--count-line"

    def __init__(self, name, values, spec):
        Shape.__init__(self, name, values, spec)
        self.n_in = self.n_out = 0
        self.times = {"in": collections.deque(), "out": collections.deque()}

    def signed_distances(self, points):
        """[k] pixels from the line through the segment for points [k, 2]; > 0 on the
        right-hand ("in") side of p1 -> p2."""
        (x1, y1), (x2, y2) = self.points
        dx, dy = x2 - x1, y2 - y1
        return (dx * (points[:, 1] - y1) - dy * (points[:, 0] - x1)) / np.hypot(dx, dy)

    def hits_segment(self, p, q, dp, dq):
        """Does the move p -> q (on opposite sides, distances dp, dq) pass through the segment?"""
        s = dp / (dp - dq)
        x = p[0] + s * (q[0] - p[0]), p[1] + s * (q[1] - p[1])
        (x1, y1), (x2, y2) = self.points.tolist()
        dx, dy = x2 - x1, y2 - y1
        u = ((x[0] - x1) * dx + (x[1] - y1) * dy) / (dx * dx + dy * dy)
        return 0.0 <= u <= 1.0


class Zone(Shape):
    flag = "--zone"

    def __init__(self, name, values, spec):
        Shape.__init__(self, name, values, spec)
        self.entries = self.exits = 0
        self.since = {}  # track id -> time it entered (inside now)
        self.seen = {}  # track id -> last time its foot point was seen inside
        self.dwell = {}  # track id -> seconds inside over all its visits
        self.visits = []  # seconds of every finished visit
        self.times = collections.deque()

    def signed_distances(self, points):
        """[k] pixels from the polygon's border for points [k, 2]; > 0 inside."""
        return polygon_signed_distance(points, self.points)


def polygon_signed_distance(points, polygon):
    """Distance of points [k, 2] to the border of polygon [m, 2], positive inside (even-odd
    rule), for all points at once (one call per frame, not one per person)."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    ab = b - a
    ap = points[:, None, :] - a[None, :, :]  # [k, m, 2]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    gap = ap - t[:, :, None] * ab
    distance = np.sqrt((gap * gap).sum(-1)).min(axis=1)
    y = points[:, 1:2]
    straddles = (a[:, 1] > y) != (b[:, 1] > y)  # the edge spans the point's height
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = a[:, 0] + (y - a[:, 1]) * ab[:, 0] / ab[:, 1]
    inside = (straddles & (points[:, 0:1] < x_cross)).sum(axis=1) % 2 == 1
    return np.where(inside, distance, -distance)


def parse_line(text, index=1):
    """'[name=]x1,y1,x2,y2' -> Line; one clear EdgeError for anything else."""
    name, values = _numbers("--count-line", text)
    if len(values) != 4:
        raise EdgeError(
            "--count-line {!r}: expected [name=]x1,y1,x2,y2 (4 numbers), got {}".format(
                text, len(values)
            )
        )
    if values[:2] == values[2:]:
        raise EdgeError("--count-line {!r}: the two end points are the same".format(text))
    return Line(name or "line{}".format(index), values, text)


def parse_zone(text, index=1):
    """'[name=]x1,y1,x2,y2,x3,y3[,...]' -> Zone (a polygon of 3 or more points)."""
    name, values = _numbers("--zone", text)
    if len(values) % 2 or len(values) < 6:
        raise EdgeError(
            "--zone {!r}: expected [name=]x1,y1,x2,y2,x3,y3[,...] (3 or more points), "
            "got {} numbers".format(text, len(values))
        )
    zone = Zone(name or "zone{}".format(index), values, text)
    pts = zone.raw
    area = 0.5 * abs(
        np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1))
    )
    if area == 0:
        raise EdgeError("--zone {!r}: the polygon has no area".format(text))
    return zone


def parse_shapes(line_specs, zone_specs):
    """Lines and zones from the repeated flags; names must be unique."""
    lines = [parse_line(s, i + 1) for i, s in enumerate(line_specs or ())]
    zones = [parse_zone(s, i + 1) for i, s in enumerate(zone_specs or ())]
    seen = set()
    for shape in lines + zones:
        if shape.name in seen:
            raise EdgeError(
                "{} {!r}: the name {!r} is used twice".format(shape.flag, shape.spec, shape.name)
            )
        seen.add(shape.name)
    return lines, zones


def _side(distance, margin):
    if distance >= margin:
        return 1
    if distance <= -margin:
        return -1
    return 0


class Counter(object):
    """Line crossings and zone visits from tracks' foot points, frame by frame.

    Args:
        lines, zones: from `parse_shapes` (resolved to pixels with `resolve` before use).
        margin: pixels either side of a line or border where a point keeps its previous side.
        rate_window_s: span of the "last minute" rates.
    """

    def __init__(self, lines=(), zones=(), margin=3.0, rate_window_s=60.0):
        self.lines, self.zones = list(lines), list(zones)
        self.margin, self.window = float(margin), float(rate_window_s)
        self.line_state = {}  # (line index, track id) -> (side, point, distance) last off-line
        self.t0 = self.t = None

    def resolve(self, width, height):
        for shape in self.lines + self.zones:
            shape.resolve(width, height)

    def update(self, t, feet, alive):
        """One frame at time t (s): feet {track id: (x, y)} of tracks seen in this frame, alive
        the ids of every live track (seen or hidden). Returns the events, in order."""
        if self.t0 is None:
            self.t0 = t
        self.t = t
        events = []
        ids = list(feet)
        points = np.array([feet[i] for i in ids], dtype=np.float64).reshape(-1, 2)
        point_list = points.tolist()
        for li, line in enumerate(self.lines):
            distances = line.signed_distances(points).tolist()
            for tid, point, d in zip(ids, point_list, distances):
                self._line_step(li, line, tid, point, d, t, events)
        for zone in self.zones:
            distances = zone.signed_distances(points).tolist()
            for tid, d in zip(ids, distances):
                self._zone_step(zone, tid, d, t, events)
            for tid in [i for i in zone.since if i not in alive]:
                # a track ends `max_misses` frames after it was last seen: it left back then
                self._leave(zone, tid, zone.seen[tid], events, "lost")
        for key in [k for k in self.line_state if k[1] not in alive]:
            del self.line_state[key]
        self._trim(t)
        return events

    def _line_step(self, li, line, tid, point, d, t, events):
        side = _side(d, self.margin)
        if not side:
            return
        before = self.line_state.get((li, tid))
        self.line_state[(li, tid)] = (side, point, d)
        if before is None or before[0] == side:
            return
        if not line.hits_segment(before[1], point, before[2], d):
            return  # went round the end of the segment
        direction = "in" if side > 0 else "out"
        if side > 0:
            line.n_in += 1
        else:
            line.n_out += 1
        line.times[direction].append(t)
        events.append({"type": "cross", "line": line.name, "dir": direction, "id": int(tid)})

    def _zone_step(self, zone, tid, d, t, events):
        side = _side(d, self.margin)
        inside = tid in zone.since
        if side >= 0 and inside:
            zone.seen[tid] = t
        if side > 0 and not inside:
            zone.since[tid] = zone.seen[tid] = t
            zone.entries += 1
            zone.times.append(t)
            events.append({"type": "enter", "zone": zone.name, "id": int(tid)})
        elif side < 0 and inside:
            self._leave(zone, tid, t, events, "walked out")

    def _leave(self, zone, tid, t, events, why):
        visit = t - zone.since.pop(tid)
        del zone.seen[tid]
        zone.exits += 1
        zone.visits.append(visit)
        zone.dwell[tid] = zone.dwell.get(tid, 0.0) + visit
        events.append(
            {
                "type": "leave",
                "zone": zone.name,
                "id": int(tid),
                "dwell_s": round(visit, 2),
                "why": why,
            }
        )

    def _trim(self, t):
        queues = [q for line in self.lines for q in line.times.values()]
        queues += [zone.times for zone in self.zones]
        for q in queues:
            while q and q[0] < t - self.window:
                q.popleft()

    def _avg_per_min(self, n):
        minutes = (self.t - self.t0) / 60.0 if self.t is not None else 0.0
        return round(n / minutes, 3) if minutes > 0 else None

    def live(self):
        """The few figures a page or an overlay shows every frame."""
        return {
            "lines": dict((line.name, [line.n_in, line.n_out]) for line in self.lines),
            "zones": dict((zone.name, len(zone.since)) for zone in self.zones),
        }

    def summary(self):
        """Totals, rates (last `rate_window_s` and the run's average, per minute), dwell."""
        lines = {}
        for line in self.lines:
            lines[line.name] = {
                "in": line.n_in,
                "out": line.n_out,
                "in_last_window": len(line.times["in"]),
                "out_last_window": len(line.times["out"]),
                "in_per_min": self._avg_per_min(line.n_in),
                "out_per_min": self._avg_per_min(line.n_out),
                "points_px": np.round(line.points, 1).tolist() if line.points is not None else None,
            }
        zones = {}
        for zone in self.zones:
            now = dict((tid, self.t - since) for tid, since in zone.since.items())
            dwell = dict(zone.dwell)
            for tid, s in now.items():
                dwell[tid] = dwell.get(tid, 0.0) + s
            zones[zone.name] = {
                "inside": len(zone.since),
                "inside_ids": sorted(int(i) for i in zone.since),
                "entries": zone.entries,
                "exits": zone.exits,
                "entries_last_window": len(zone.times),
                "entries_per_min": self._avg_per_min(zone.entries),
                "mean_visit_s": round(float(np.mean(zone.visits)), 2) if zone.visits else None,
                "max_visit_s": round(float(np.max(zone.visits)), 2) if zone.visits else None,
                "dwell_s": dict((str(int(k)), round(v, 2)) for k, v in sorted(dwell.items())),
                "points_px": np.round(zone.points, 1).tolist() if zone.points is not None else None,
            }
        return {"rate_window_s": self.window, "lines": lines, "zones": zones}

"""Power and thermals while the loop runs: a sampler, a summary, and watts per frame.

    with PowerSampler() as sampler:       # tegrastats, else the INA3221 rails under sysfs
        stats = run_loop(...)
    power = with_throughput(sampler.summary(), stats["loop_fps"])
    # {"measured": True, "source": "tegrastats", "total": {"mean_w", "peak_w"}, "rails": ...,
    #  "temps_c": ..., "throttling": ..., "fps_per_watt", "mj_per_frame"}

On a machine with neither (a workstation, a container without /sys) the summary is
`{"measured": False, "reason": ...}` and `describe()` says "power: not measured": a report
never shows a figure nobody measured. Python 3.6, no torch.
"""

import os
import subprocess
import threading

from edge_runtime import tegrastats

DEFAULT_INTERVAL_MS = 500
# A busy engine whose clock falls this far below the highest clock it showed while busy in
# the same run was held back (thermal or over-current throttling, or a power-mode cap).
BUSY_LOAD = 50
CLOCK_DROP = 0.9
NOT_MEASURED = "power: not measured"


class _Series(object):
    """Mean and peak of one quantity, in bounded memory."""

    __slots__ = ("total", "count", "peak")

    def __init__(self):
        self.total, self.count, self.peak = 0.0, 0, None

    def add(self, value):
        self.total += value
        self.count += 1
        self.peak = value if self.peak is None else max(self.peak, value)

    def summary(self, scale=1.0, digits=3):
        return {
            "mean": round(self.total / self.count * scale, digits),
            "peak": round(self.peak * scale, digits),
        }


class PowerStats(object):
    """Running summary of samples (`edge_runtime.tegrastats`), live or from a log."""

    def __init__(self):
        self.samples = 0
        self.rails, self.temps = {}, {}
        self.total = _Series()
        self.total_rail = None
        self.clock_peak = {"gpu": 0, "cpu": 0}
        self.busy = {"gpu": [], "cpu": []}  # (mhz) of busy samples, checked at the end
        self.clocks_seen = False

    def add(self, sample):
        rails = sample.get("rails_mw") or {}
        if not rails and not sample.get("temps_c"):
            return
        self.samples += 1
        for name, mw in rails.items():
            self.rails.setdefault(name, _Series()).add(mw)
        total_name = next((r for r in tegrastats.TOTAL_RAILS if r in rails), None)
        if rails:
            self.total_rail = total_name or "sum of rails"
            self.total.add(rails[total_name] if total_name else sum(rails.values()))
        for name, value in (sample.get("temps_c") or {}).items():
            self.temps.setdefault(name, _Series()).add(value)
        self._add_clocks("gpu", [sample.get("gpu")])
        self._add_clocks("cpu", sample.get("cpu") or [])

    def _add_clocks(self, unit, readings):
        for r in readings:
            if not r or r.get("mhz") is None:
                continue
            self.clocks_seen = True
            if r["load"] >= BUSY_LOAD:
                self.clock_peak[unit] = max(self.clock_peak[unit], r["mhz"])
                if len(self.busy[unit]) < 100000:
                    self.busy[unit].append(r["mhz"])

    def throttling(self):
        """Whether a busy GPU or CPU ran below 90% of its own busy peak, and how often."""
        if not self.clocks_seen:
            return {"seen": None, "note": "unknown: no clocks in these samples"}
        out = {"seen": False}
        for unit in ("gpu", "cpu"):
            peak = self.clock_peak[unit]
            busy = self.busy[unit]
            low = sum(1 for mhz in busy if mhz < CLOCK_DROP * peak)
            out[unit] = {"busy_samples": len(busy), "below_90pct_of_peak": low, "peak_mhz": peak}
            out["seen"] = out["seen"] or low > 0
        return out

    def summary(self, source):
        if not self.samples:
            return {"measured": False, "reason": "{} gave no samples".format(source)}
        hot = [
            (v.peak, k)
            for k, v in self.temps.items()
            if k.upper() not in tegrastats.PLACEHOLDER_SENSORS
        ]
        out = {
            "measured": True,
            "source": source,
            "samples": self.samples,
            "total_rail": self.total_rail,
            "total": _watts(self.total) if self.total.count else None,
            "rails": dict((k, _watts(v)) for k, v in sorted(self.rails.items())),
            "temps_c": dict((k, v.summary(digits=1)) for k, v in sorted(self.temps.items())),
            "hottest": {"sensor": max(hot)[1], "peak_c": round(max(hot)[0], 1)} if hot else None,
            "throttling": self.throttling(),
        }
        return out


def _watts(series):
    s = series.summary(scale=0.001)
    return {"mean_w": s["mean"], "peak_w": s["peak"]}


def summarize(samples, source="tegrastats log"):
    stats = PowerStats()
    for sample in samples:
        stats.add(sample)
    return stats.summary(source)


def with_throughput(power, fps):
    """Add FPS per watt and millijoules per frame (from the mean total input power)."""
    power = dict(power)
    total = (power.get("total") or {}).get("mean_w") if power.get("measured") else None
    if total and fps:
        power["fps_per_watt"] = round(float(fps) / total, 3)
        power["mj_per_frame"] = round(total / float(fps) * 1000.0, 1)
    return power


def describe(power):
    """One line for a summary: 'power: 4.62 W mean (POM_5V_IN), 5.41 FPS/W, 185 mJ/frame'."""
    if not power or not power.get("measured") or not power.get("total"):
        return NOT_MEASURED
    total = power["total"]
    parts = [
        "power: {:.2f} W mean, {:.2f} W peak ({})".format(
            total.get("mean_w", 0.0), total.get("peak_w", 0.0), power.get("total_rail")
        )
    ]
    if power.get("fps_per_watt") is not None:
        parts.append(
            "{:.2f} FPS/W, {:.0f} mJ/frame".format(power["fps_per_watt"], power["mj_per_frame"])
        )
    if power.get("hottest"):
        parts.append("hottest {sensor} {peak_c} C".format(**power["hottest"]))
    seen = (power.get("throttling") or {}).get("seen")
    parts.append({True: "throttled", False: "no throttling", None: "throttling unknown"}[seen])
    return ", ".join(parts)


def _which(name):
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class PowerSampler(object):
    """Samples power while a block runs: `tegrastats` when it is on PATH, else the INA3221
    rails and thermal zones under sysfs, else nothing (the summary says so).

    Args:
        interval_ms: sampling period.
        root: filesystem root for the sysfs readers (tests point it at a fake tree).
        command: the tegrastats executable, or None to look it up on PATH.
    """

    def __init__(self, interval_ms=DEFAULT_INTERVAL_MS, root="/", command=None):
        self.interval_ms = int(interval_ms)
        self.root = root
        self.command = command if command is not None else _which("tegrastats")
        self.stats = PowerStats()
        self.source = None
        self._proc = None
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self):
        if self.command:
            try:
                self._proc = subprocess.Popen(
                    [self.command, "--interval", str(self.interval_ms)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    universal_newlines=True,
                )
                self.source = "tegrastats"
                self._thread = threading.Thread(target=self._read_tegrastats, name="tegrastats")
            except OSError:
                self._proc = None
        if self._proc is None:
            rails = tegrastats.find_ina3221(self.root)
            if rails:
                zones = tegrastats.find_thermal_zones(self.root)
                self.source = "INA3221 sysfs"
                self._thread = threading.Thread(
                    target=self._poll_sysfs, args=(rails, zones), name="ina3221"
                )
        if self._thread is not None:
            self._thread.daemon = True
            self._thread.start()
        return self

    def _add(self, sample):
        with self._lock:
            self.stats.add(sample)

    def _read_tegrastats(self):
        for line in self._proc.stdout:
            try:
                self._add(tegrastats.parse_line(line))
            except tegrastats.TegrastatsError:
                continue

    def _poll_sysfs(self, rails, zones):
        while not self._stop.is_set():
            self._add(tegrastats.read_sysfs(rails, zones))
            self._stop.wait(self.interval_ms / 1000.0)

    def stop(self):
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self):
        if self.source is None:
            return {
                "measured": False,
                "reason": "no tegrastats on PATH and no INA3221 power monitor under /sys",
            }
        with self._lock:
            return self.stats.summary(self.source)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

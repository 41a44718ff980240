"""Per-stage timings (bounded memory), summaries in milliseconds, and peak resident memory."""

import collections
import resource

import numpy as np

STAGES = ("capture", "preprocess", "inference", "postprocess", "output")


class StageTimes(object):
    """Running mean over every frame + the last `keep` samples for percentiles (a long run on a
    4 GB Nano must not grow a list per frame forever)."""

    def __init__(self, keep=20000):
        self.recent = collections.deque(maxlen=keep)
        self.total, self.count = 0.0, 0

    def add(self, seconds):
        self.recent.append(seconds)
        self.total += seconds
        self.count += 1

    def summary(self):
        if not self.count:
            return {"n": 0}
        ms = np.asarray(self.recent, dtype=np.float64) * 1000.0
        return {
            "n": self.count,
            "mean_ms": round(self.total / self.count * 1000.0, 3),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "max_ms": round(float(ms.max()), 3),
        }


class Recorder(object):
    """One StageTimes per stage (+ end-to-end latency) and a short window for the live FPS."""

    def __init__(self, stages=STAGES, keep=20000):
        self.stages = collections.OrderedDict((s, StageTimes(keep)) for s in stages)
        self.latency = StageTimes(keep)
        self.out_times = collections.deque(maxlen=30)
        self.first_out, self.last_out, self.outputs = None, None, 0

    def add_frame(self, timings, latency, out_time):
        for stage, seconds in timings.items():
            if stage in self.stages:
                self.stages[stage].add(seconds)
        self.latency.add(latency)
        self.out_times.append(out_time)
        if self.first_out is None:
            self.first_out = out_time
        self.last_out = out_time
        self.outputs += 1

    def live_fps(self):
        if len(self.out_times) < 2 or self.out_times[-1] == self.out_times[0]:
            return 0.0
        return (len(self.out_times) - 1) / (self.out_times[-1] - self.out_times[0])

    def loop_fps(self):
        """Steady-state throughput: frames out per second from the first to the last output."""
        if self.outputs < 2 or self.last_out == self.first_out:
            return None
        return (self.outputs - 1) / (self.last_out - self.first_out)

    def stage_means_ms(self):
        return dict(
            (s, round(t.total / t.count * 1000.0, 2)) for s, t in self.stages.items() if t.count
        )

    def summary(self):
        return dict((s, t.summary()) for s, t in self.stages.items())


def peak_rss_mb():
    """Peak resident memory of this process in MiB (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (IOError, OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux

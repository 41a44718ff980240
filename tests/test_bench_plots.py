"""The report's plots stay readable: point names never overlap, short bars keep a readable
value label."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

from benchmarks import plots  # noqa: E402


def test_names_of_close_points_do_not_overlap():
    rows = [
        {"name": f"yolov3-tiny-person-cycle{i}", "role": "intermediate", "fps": 20 + i * 0.3,
         "AP50": 0.40 - i * 0.002}
        for i in range(6)
    ] + [{"name": "hog", "role": "peer", "fps": 21.0, "AP50": 0.12}]  # fmt: skip
    fig = plots.ap_vs_fps_figure(rows, "FPS")
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    texts = [t for t in ax.texts if t.get_text()]
    assert sorted(t.get_text() for t in texts) == sorted(r["name"] for r in rows)
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
    png = plots.ap_vs_fps(rows, "FPS")
    assert png.startswith(b"\x89PNG")


def test_short_bars_get_a_dark_label_above_them(monkeypatch):
    seen = []
    real = matplotlib.axes.Axes.annotate

    def spy(self, text, xy, *args, **kwargs):
        seen.append((text, kwargs.get("color")))
        return real(self, text, xy, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "annotate", spy)
    rows = [
        {"name": "base", "role": "unpruned", "p50": 120.0, "p90": 130.0},
        {"name": "pruned", "role": "final", "p50": 4.0, "p90": 5.0},
    ]
    assert plots.latency_bars([("latency", rows)]).startswith(b"\x89PNG")
    assert ("120.0", "white") in seen and ("4.0", "#222222") in seen


def test_prune_plots_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.figure
    import matplotlib.pyplot as plt
    import pytest

    from compress.prune import plots as prune_plots
    from compress.prune.acp import plots as acp_plots

    for module in (prune_plots, acp_plots):
        path = tmp_path / f"{module.__name__}.png"
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        module._save(fig, path)
        good = path.read_bytes()
        assert good.startswith(b"\x89PNG")

        def broken(self, buf, **kwargs):
            buf.write(b"\x89PNG half")
            raise OSError("No space left on device")

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
        fig, _ = plt.subplots()
        with pytest.raises(OSError):
            module._save(fig, path)
        monkeypatch.undo()
        assert path.read_bytes() == good  # the last good plot stays whole
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

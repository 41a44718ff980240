"""Jetson-side runtime choices checked without a Jetson: CSI frames scaled in nvvidconv to the
size the model needs, and one CUDA context (pycuda shares the runtime's primary context)."""

from __future__ import annotations

import argparse
import sys
import types

import pytest

from edge_runtime import cuda_memory, sources
from edge_runtime.errors import EdgeError


@pytest.mark.parametrize(
    "capture, model, resize, expected",
    [
        ((1280, 720), (416, 416), "letterbox", (416, 234)),
        ((1920, 1080), (288, 288), "letterbox", (288, 162)),
        ((1280, 720), (416, 416), "stretch", (740, 416)),  # no axis upsampled afterwards
        ((1280, 720), (608, 352), "letterbox", (608, 342)),
        ((320, 240), (416, 416), "letterbox", None),  # already small: nothing to scale
    ],
)
def test_loop_frame_size(capture, model, resize, expected):
    assert sources.loop_frame_size(*capture, *model, resize=resize) == expected


def _args(**kw):
    parser = argparse.ArgumentParser()
    sources.add_source_args(parser)
    return parser.parse_args(["--source", kw.pop("source", "csi://0")] + kw.pop("argv", []))


def test_csi_is_scaled_in_nvvidconv(monkeypatch):
    seen = {}

    def fake_open(uri, **kw):
        seen.update(kw, uri=uri)
        return "source"

    monkeypatch.setattr(sources, "open_source", fake_open)
    meta = {"input_shape": [1, 3, 416, 416], "resize": "letterbox"}
    sources.source_from_args(_args(), meta)
    assert seen["out_size"] == (416, 234)
    sources.source_from_args(_args(argv=["--frame-size", "640x360"]), meta)
    assert seen["out_size"] == (640, 360)
    sources.source_from_args(_args(argv=["--frame-size", "full"]), meta)
    assert seen["out_size"] is None
    sources.source_from_args(_args(source="clip.avi"), meta)
    assert seen["out_size"] is None  # files keep their frames
    with pytest.raises(EdgeError, match="--frame-size '640'"):
        sources.source_from_args(_args(argv=["--frame-size", "640"]), meta)
    pipe = sources.csi_pipeline(0, 1280, 720, 30, 0, (416, 234))
    # scaled on the NVMM side, before the CPU's videoconvert sees the frame
    assert (
        "nvvidconv flip-method=0 ! video/x-raw, width=416, height=234, format=BGRx ! videoconvert"
        in pipe
    )


def test_pycuda_shares_the_primary_context(monkeypatch):
    calls = []

    class Context:
        def push(self):
            calls.append("push")

        def detach(self):
            calls.append("detach")

        @staticmethod
        def pop():
            calls.append("pop")

    class Device:
        def __init__(self, n):
            self.n = n

        def retain_primary_context(self):
            calls.append("retain_primary_context")
            return Context()

        def make_context(self):  # a second context: what must not happen
            calls.append("make_context")
            return Context()

        def name(self):
            return "NVIDIA Tegra X1"

    class Stream:
        handle = 7

    driver = types.SimpleNamespace(
        init=lambda: calls.append("init"), Device=Device, Stream=Stream, Context=Context
    )
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    memory = cuda_memory.PycudaMemory()
    memory.pop()
    memory.close()
    assert "make_context" not in calls
    assert calls == ["init", "retain_primary_context", "push", "pop", "detach"]
    assert memory.gpu_name == "NVIDIA Tegra X1"

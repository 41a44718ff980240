"""The environment record: what compare uses to tell comparable runs from others."""

from __future__ import annotations

from benchmarks import environment

NVPMODEL_Q = "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"
CLOCKS = """SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit
Online CPUs: 0-3
cpu0: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0
GPU MinFreq=921600000 MaxFreq=921600000 CurrentFreq=921600000
EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1
"""


def test_parse_nvpmodel():
    assert environment.parse_nvpmodel(NVPMODEL_Q) == {"name": "MAXN", "id": 0}
    assert environment.parse_nvpmodel("NV Power Mode: 5W\n1") == {"name": "5W", "id": 1}
    assert environment.parse_nvpmodel(None) is None


def test_parse_jetson_clocks():
    clocks = environment.parse_jetson_clocks(CLOCKS)
    assert len(clocks["cpu"]) == 2 and clocks["cpu"][0].startswith("cpu0:")
    assert "CurrentFreq=921600000" in clocks["gpu"] and clocks["emc"].startswith("EMC")


def test_collect_here():
    env = environment.collect(backend="ort", threads=2)
    for key in environment.COMPARABLE_KEYS:
        assert key in env
    assert env["threads"] == 2 and env["backend"] == "ort"
    assert env["cpu_usable"] >= 1 and env["cpu_model"]
    assert env["libraries"]["onnxruntime"] and env["libraries"]["python"].startswith("3.")
    assert env["jetson"] is None  # this workstation is no Jetson: no power mode invented
    assert env["power_mode"] is None

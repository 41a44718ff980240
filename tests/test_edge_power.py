"""Power and thermals: recorded tegrastats lines (Jetson Nano R32, Orin Nano R36), the INA3221
monitor under a fake sysfs, the sampler, and `python -m benchmarks power LOG`."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from benchmarks import __main__ as bench_cli
from edge_runtime import device, power, tegrastats

DATA = Path(__file__).resolve().parent / "data" / "tegrastats"
NANO_LOG = DATA / "nano-jp461.log"
ORIN_LOG = DATA / "orin-nano-jp6.log"


def test_nano_line():
    s = tegrastats.parse_line(NANO_LOG.read_text().splitlines()[1])
    assert s["rails_mw"] == {"POM_5V_IN": 5032, "POM_5V_GPU": 2085, "POM_5V_CPU": 1058}
    assert s["gpu"] == {"load": 99, "mhz": 921} and s["emc"] == {"load": 21, "mhz": 1600}
    assert [c["mhz"] for c in s["cpu"]] == [1479] * 4 and s["cpu"][0]["load"] == 38
    assert s["temps_c"]["GPU"] == 40.5 and s["temps_c"]["thermal"] == 41.0
    assert s["ram_mb"] == [2210, 3964] and s["time"] is None
    assert "RAM" not in s["rails_mw"] and "SWAP" not in s["rails_mw"]  # "1923/3964MB" is no rail


def test_orin_line():
    s = tegrastats.parse_line(ORIN_LOG.read_text().splitlines()[3])
    assert s["time"] == "11-15-2024 08:38:10"
    assert s["rails_mw"] == {"VDD_IN": 11020, "VDD_CPU_GPU_CV": 3712, "VDD_SOC": 2690}
    assert s["gpu"] == {"load": 64, "mhz": 420}
    assert s["cpu"][4] is None and s["cpu"][5] is None  # "off" cores
    assert "CV0" not in s["temps_c"]  # -256C: no sensor there
    assert s["temps_c"]["tj"] == 54.218


def test_newer_three_value_rails_and_older_forms():
    s = tegrastats.parse_line(
        "RAM 974/7546MB (lfb 6x4MB) CPU [0%@729,0%@729] GR3D_FREQ 12% gpu@50.875C/50.875C "
        "VDD_IN 4548mW/4548mW/4548mW VDD_SOC 1489mW/1489mW/1489mW"
    )
    assert s["rails_mw"] == {"VDD_IN": 4548, "VDD_SOC": 1489}
    assert s["gpu"] == {"load": 12, "mhz": None} and s["temps_c"] == {"gpu": 50.875}
    with pytest.raises(tegrastats.TegrastatsError, match="not a tegrastats line"):
        tegrastats.parse_line("Traceback (most recent call last):")


def test_nano_log_summary():
    samples, skipped = tegrastats.read_log(NANO_LOG)
    summary = power.summarize(samples)
    assert summary["samples"] == 6 and skipped == []
    assert summary["total_rail"] == "POM_5V_IN"
    mean_in = (1750 + 5032 + 5215 + 5174 + 5256 + 2085) / 6 / 1000
    assert summary["total"]["mean_w"] == pytest.approx(mean_in, abs=1e-3)
    assert summary["total"]["peak_w"] == 5.256
    assert summary["rails"]["POM_5V_GPU"]["peak_w"] == 2.245
    assert summary["temps_c"]["CPU"]["peak"] == 43.0
    assert summary["hottest"] == {"sensor": "AO", "peak_c": 46.5}  # PMIC@100C is no die sensor
    assert summary["throttling"]["seen"] is False
    assert summary["throttling"]["gpu"]["busy_samples"] == 4


def test_orin_log_shows_the_clock_drop_under_load():
    summary = power.summarize(tegrastats.read_log(ORIN_LOG)[0])
    assert summary["total_rail"] == "VDD_IN" and summary["total"]["peak_w"] == 12.479
    throttle = summary["throttling"]
    assert throttle["seen"] is True and throttle["gpu"]["below_90pct_of_peak"] == 1
    assert throttle["gpu"]["peak_mhz"] == 624


def test_boards_without_a_total_rail_sum_their_rails():
    agx = (
        "RAM 721/31927MB (lfb 7291x4MB) CPU [2%@1190,0%@1190] EMC_FREQ 0%@665 GR3D_FREQ 0%@318 "
        "AO@37.5C GPU@37.5C GPU 0/0 CPU 311/311 SOC 932/932 CV 0/0 VDDRQ 621/621 SYS5V 1482/1482"
    )
    summary = power.summarize([tegrastats.parse_line(agx)])
    assert summary["total_rail"] == "sum of rails"
    assert summary["total"]["mean_w"] == pytest.approx(3.346)


def test_watts_per_frame_and_not_measured():
    summary = power.summarize(tegrastats.read_log(NANO_LOG)[0])
    figures = power.with_throughput(summary, fps=20.0)
    watts = summary["total"]["mean_w"]
    assert figures["fps_per_watt"] == pytest.approx(20.0 / watts, abs=1e-3)
    assert figures["mj_per_frame"] == pytest.approx(watts / 20.0 * 1000, abs=0.1)
    line = power.describe(figures)
    assert "W mean" in line and "FPS/W" in line and "mJ/frame" in line and "no throttling" in line
    assert power.describe({"measured": False}) == "power: not measured"
    assert power.with_throughput({"measured": False}, 20.0) == {"measured": False}


def test_power_verb_prints_mean_input_watts_last(capsys, tmp_path):
    assert bench_cli.main(["power", str(NANO_LOG), "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "mean total input power: 4.085 W (POM_5V_IN)"
    assert any(line.startswith("POM_5V_GPU") for line in out)
    assert any("throttling: none seen" in line for line in out)
    assert (tmp_path / "p.json").exists()
    mixed = tmp_path / "mixed.log"
    mixed.write_text("tegrastats started\n" + ORIN_LOG.read_text())
    assert bench_cli.main(["power", str(mixed)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "skipped 1 line(s)" in out[-2] and out[-1].endswith("W (VDD_IN)")
    junk = tmp_path / "junk.log"
    junk.write_text("hello\n")
    assert bench_cli.main(["power", str(junk)]) == 2
    assert "junk.log: no tegrastats line in it (line 1" in capsys.readouterr().err


def _fake_sysfs(root: Path, layout: str) -> None:
    if layout == "iio":  # L4T R32 (Nano): rail_name_N + in_powerN_input in mW
        dev = root / "sys/bus/i2c/devices/6-0040"
        folder = dev / "iio:device0"
        folder.mkdir(parents=True)
        for n, (name, mw) in enumerate(
            [("POM_5V_IN", 4920), ("POM_5V_GPU", 1980), ("POM_5V_CPU", 1040)]
        ):
            (folder / f"rail_name_{n}").write_text(name + "\n")
            (folder / f"in_power{n}_input").write_text(f"{mw}\n")
        (dev / "name").write_text("ina3221x\n")
    else:  # L4T R35+ (Orin): inN_label, inN_input mV, currN_input mA
        dev = root / "sys/bus/i2c/devices/1-0040"
        folder = dev / "hwmon" / "hwmon3"
        folder.mkdir(parents=True)
        for n, (label, mv, ma) in enumerate(
            [("VDD_IN", 5040, 2200), ("VDD_CPU_GPU_CV", 5040, 800), ("NC", 0, 0)], 1
        ):
            (folder / f"in{n}_label").write_text(label + "\n")
            (folder / f"in{n}_input").write_text(f"{mv}\n")
            (folder / f"curr{n}_input").write_text(f"{ma}\n")
        (dev / "name").write_text("ina3221\n")
    zone = root / "sys/class/thermal/thermal_zone1"
    zone.mkdir(parents=True)
    (zone / "type").write_text("GPU-therm\n")
    (zone / "temp").write_text("41500\n")


@pytest.mark.parametrize("layout", ["iio", "hwmon"])
def test_ina3221_under_sysfs(tmp_path, layout):
    _fake_sysfs(tmp_path, layout)
    rails = tegrastats.find_ina3221(str(tmp_path))
    sample = tegrastats.read_sysfs(rails, tegrastats.find_thermal_zones(str(tmp_path)))
    if layout == "iio":
        assert sample["rails_mw"] == {"POM_5V_IN": 4920, "POM_5V_GPU": 1980, "POM_5V_CPU": 1040}
    else:
        assert sample["rails_mw"] == {"VDD_IN": 11088, "VDD_CPU_GPU_CV": 4032}  # NC skipped
    assert sample["temps_c"] == {"GPU": 41.5}
    with power.PowerSampler(interval_ms=20, root=str(tmp_path), command="") as sampler:
        time.sleep(0.15)
    summary = sampler.summary()
    assert summary["source"] == "INA3221 sysfs" and summary["samples"] >= 2
    assert summary["throttling"]["seen"] is None  # sysfs has no clocks: unknown, not "none"


def test_sampler_reads_a_running_tegrastats(tmp_path):
    fake = tmp_path / "tegrastats"
    lines = NANO_LOG.read_text().splitlines()
    fake.write_text(
        "#!/bin/sh\n" + "".join(f"echo '{line}'\nsleep 0.02\n" for line in lines) + "sleep 30\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with power.PowerSampler(interval_ms=20, command=str(fake)) as sampler:
        deadline = time.time() + 10
        while sampler.stats.samples < len(lines) and time.time() < deadline:
            time.sleep(0.05)
    summary = sampler.summary()
    assert summary["source"] == "tegrastats" and summary["samples"] == 6
    assert summary["total"]["peak_w"] == 5.256
    assert sampler._proc.poll() is not None  # stopped with the block


def test_no_monitor_here_means_not_measured(tmp_path):
    with power.PowerSampler(root=str(tmp_path), command="") as sampler:
        pass
    summary = sampler.summary()
    assert summary["measured"] is False and "INA3221" in summary["reason"]
    assert power.describe(summary) == power.NOT_MEASURED


def test_device_facts_from_the_host(tmp_path, monkeypatch):
    facts = tmp_path / "device"
    facts.mkdir()
    (facts / "model").write_text("NVIDIA Jetson Nano Developer Kit\x00")
    (facts / "nvpmodel").write_text("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n")
    (facts / "jetson_clocks").write_text(
        "SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit\nOnline CPUs: 0-3\n"
        "cpu0: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000\n"
        "GPU MinFreq=921600000 MaxFreq=921600000 CurrentFreq=921600000\n"
        "EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1\n"
    )
    got = device.facts(str(facts))
    assert got["model"] == "NVIDIA Jetson Nano Developer Kit" and got["source"] == "host"
    assert got["power_mode"] == {"name": "MAXN", "id": 0}
    assert got["clocks"]["gpu"].endswith("CurrentFreq=921600000")
    (facts / "jetson_clocks").write_text("jetson_clocks: must be run as root\n")
    assert device.facts(str(facts))["clocks"] == "unavailable (run as root)"
    from benchmarks import environment

    monkeypatch.setenv(device.FACTS_ENV, str(facts))
    env = environment.collect(backend="trt", threads=4)
    assert env["device"] == "NVIDIA Jetson Nano Developer Kit" and env["power_mode"] == "MAXN"
    monkeypatch.setenv(device.FACTS_ENV, str(tmp_path / "absent"))
    if not os.path.exists(device.RELEASE_FILE):
        assert device.facts() is None  # this workstation is no Jetson

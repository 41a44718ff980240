"""Jetson power, clock and temperature readings: `tegrastats` lines and the INA3221 monitor.

One sample is a dict `{"time", "rails_mw", "temps_c", "cpu", "gpu", "emc"}` whichever way it
was read, so a live run and a recorded log are summarised by the same code (`edge_runtime.power`).

tegrastats formats this parser reads (recorded lines in tests/data/tegrastats/):
    Nano, L4T R32 (JetPack 4.6):
        RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB)
        CPU [5%@1224,4%@1224,3%@1224,6%@1224] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@37C
        CPU@40C PMIC@100C GPU@40C AO@45C thermal@40C POM_5V_IN 1750/1628 POM_5V_GPU 0/0
        POM_5V_CPU 366/406
    Orin Nano / NX, L4T R35-R36 (a timestamp first, units on the rails, "off" cores):
        11-15-2024 08:38:09 RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB)
        CPU [15%@729,...,off,off] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] ... cpu@53.968C
        gpu@53.343C tj@53.968C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW
        VDD_SOC 2817mW/2817mW
A rail reads "instant/average" (newer releases add "/peak"); only the instant value is used,
since the average runs from when tegrastats started, not from when the loop did.

INA3221 under sysfs (what tegrastats itself reads; readable inside a container):
    L4T R32 (iio):   /sys/bus/i2c/devices/6-0040/iio:device0/rail_name_N, in_powerN_input (mW)
    L4T R35+ (hwmon): /sys/bus/i2c/devices/1-0040/hwmon/hwmonK/inN_label, inN_input (mV),
                      currN_input (mA)
(layouts as jetson_stats' jtop/core/power.py reads them). Python 3.6, no torch.
"""

import glob
import os
import re
import time

# The rail that measures the whole module's input: the Nano's and TX1's POM_5V_IN, VDD_IN on
# Xavier NX and the Orin Nano/NX. Boards without one (AGX Xavier, AGX Orin) get the rails' sum,
# as jetson_stats does.
TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")
# Sensors that are no measurement: absent ones read -256C on Orin; the Nano's "PMIC@100C"
# stays at 100C in published idle logs whose every die sensor reads 30-40C, so it is kept in
# the record but never named the hottest.
ABSENT_TEMP_C = -100.0
PLACEHOLDER_SENSORS = ("PMIC",)

_STAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s+")
_RAIL = re.compile(
    r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)"
)
_TEMP = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/-?[\d.]+C)*(?=\s|$)")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")


class TegrastatsError(ValueError):
    """A line that is not tegrastats output."""


def _load_at(match):
    if not match:
        return None
    return {"load": int(match.group(1)), "mhz": int(match.group(2)) if match.group(2) else None}


def parse_line(line):
    """One tegrastats line -> a sample dict; TegrastatsError when it is none."""
    text = line.strip()
    stamp = _STAMP.match(text)
    rails = dict((m.group(1), int(m.group(2))) for m in _RAIL.finditer(text))
    gpu = _load_at(_GPU.search(text))
    ram = _RAM.search(text)
    if not rails and gpu is None and ram is None:
        raise TegrastatsError("not a tegrastats line: {!r}".format(text[:60]))
    temps = {}
    for m in _TEMP.finditer(text):
        value = float(m.group(2))
        if value > ABSENT_TEMP_C:
            temps[m.group(1)] = value
    cpu = None
    cpu_match = _CPU.search(text)
    if cpu_match:
        cpu = [_load_at(_CORE.match(core.strip())) for core in cpu_match.group(1).split(",")]
    return {
        "time": stamp.group(1) if stamp else None,
        "rails_mw": rails,
        "temps_c": temps,
        "cpu": cpu,
        "gpu": gpu,
        "emc": _load_at(_EMC.search(text)),
        "ram_mb": [int(ram.group(1)), int(ram.group(2))] if ram else None,
    }


def read_log(path):
    """Every sample of a recorded log (`tegrastats --logfile`), and the lines skipped.

    Returns (samples, skipped) where skipped is [(line number, reason)]; a log with no
    tegrastats line at all raises TegrastatsError naming the file.
    """
    samples, skipped = [], []
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                samples.append(parse_line(line))
            except TegrastatsError as exc:
                skipped.append((number, str(exc)))
    if not samples:
        first = " (line {}: {})".format(*skipped[0]) if skipped else " (it is empty)"
        raise TegrastatsError("{}: no tegrastats line in it{}".format(path, first))
    return samples, skipped


# -- INA3221 and thermal zones under sysfs ------------------------------------------------------


def _read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def _read_text(path):
    with open(path) as f:
        return f.read().strip()


def _iio_rails(folder):
    """L4T R32: rail_name_N + in_powerN_input (mW)."""
    rails = {}
    for name_file in sorted(glob.glob(os.path.join(folder, "rail_name_*"))):
        n = name_file.rsplit("_", 1)[-1]
        power = os.path.join(folder, "in_power{}_input".format(n))
        if os.path.exists(power):
            rails[_read_text(name_file)] = ("mw", power)
    return rails


def _hwmon_rails(folder):
    """L4T R35+: inN_label + inN_input (mV) x currN_input (mA); 'NC' inputs and the
    'sum of shunt voltages' channel are no rail."""
    rails = {}
    for label_file in sorted(glob.glob(os.path.join(folder, "in*_label"))):
        label = _read_text(label_file)
        n = os.path.basename(label_file)[2:].split("_")[0]
        volt = os.path.join(folder, "in{}_input".format(n))
        curr = os.path.join(folder, "curr{}_input".format(n))
        if label.upper().startswith("NC") or "sum of shunt" in label.lower():
            continue
        if os.path.exists(volt) and os.path.exists(curr):
            rails[label] = ("mv*ma", volt, curr)
    return rails


def find_ina3221(root="/"):
    """{rail name: how to read it} for every INA3221 channel under `root`/sys; {} when none."""
    rails = {}
    for device in sorted(glob.glob(os.path.join(root, "sys/bus/i2c/devices/*"))):
        try:
            name = _read_text(os.path.join(device, "name"))
        except (IOError, OSError):
            continue
        if "ina3221" not in name:
            continue
        for folder in sorted(glob.glob(os.path.join(device, "iio:device*"))):
            rails.update(_iio_rails(folder))
        for folder in sorted(glob.glob(os.path.join(device, "hwmon", "hwmon*"))):
            rails.update(_hwmon_rails(folder))
    return rails


def find_thermal_zones(root="/"):
    """{zone type: temp file} from /sys/class/thermal (millidegrees Celsius)."""
    zones = {}
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        try:
            kind = _read_text(os.path.join(zone, "type"))
        except (IOError, OSError):
            continue
        zones[kind.replace("-therm", "").replace("-", "_")] = os.path.join(zone, "temp")
    return zones


def read_sysfs(rails, zones):
    """One sample (the same dict as parse_line's) from the INA3221 rails and thermal zones."""
    rails_mw, temps = {}, {}
    for name, how in rails.items():
        try:
            if how[0] == "mw":
                rails_mw[name] = _read_int(how[1])
            else:
                rails_mw[name] = int(round(_read_int(how[1]) * _read_int(how[2]) / 1000.0))
        except (IOError, OSError, ValueError):
            continue
    for name, path in zones.items():
        try:
            value = _read_int(path) / 1000.0
        except (IOError, OSError, ValueError):
            continue
        if value > ABSENT_TEMP_C:
            temps[name] = value
    return {
        "time": time.strftime("%m-%d-%Y %H:%M:%S"),
        "rails_mw": rails_mw,
        "temps_c": temps,
        "cpu": None,
        "gpu": None,
        "emc": None,
        "ram_mb": None,
    }

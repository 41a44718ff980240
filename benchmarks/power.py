"""`python -m benchmarks power LOG`: summarise a recorded tegrastats log.

    tegrastats --interval 500 --logfile run.log     # on the Jetson, while something runs
    python -m benchmarks power run.log [--json out.json]

Prints mean and peak watts per rail, temperatures, whether a busy GPU or CPU ran below its
own clock peak (throttling), and, on its last line, the mean total input power in watts
(`POM_5V_IN` on a Nano, `VDD_IN` on Xavier NX / Orin Nano). Device-side: Python 3.6, no torch.
"""

import argparse
import sys

from edge_runtime import power, tegrastats
from edge_runtime.files import atomic_write_json


def format_summary(summary, skipped=()):
    lines = ["{} samples ({})".format(summary["samples"], summary["source"])]
    lines.append("{:<18} {:>8} {:>8}".format("rail", "mean W", "peak W"))
    for name, w in summary["rails"].items():
        lines.append("{:<18} {:>8.3f} {:>8.3f}".format(name, w["mean_w"], w["peak_w"]))
    if summary["temps_c"]:
        lines.append(
            "temperatures (mean/peak C): "
            + ", ".join(
                "{} {}/{}".format(k, v["mean"], v["peak"]) for k, v in summary["temps_c"].items()
            )
        )
    throttle = summary["throttling"]
    if throttle["seen"] is None:
        lines.append("throttling: " + throttle["note"])
    else:
        lines.append(
            "throttling: {} (busy samples below 90% of their clock peak: GPU {}/{}, CPU {}/{})".format(
                "seen" if throttle["seen"] else "none seen",
                throttle["gpu"]["below_90pct_of_peak"],
                throttle["gpu"]["busy_samples"],
                throttle["cpu"]["below_90pct_of_peak"],
                throttle["cpu"]["busy_samples"],
            )
        )
    if skipped:
        lines.append(
            f"skipped {len(skipped)} line(s) that are not tegrastats output (first: line {skipped[0][0]})"
        )
    total = summary["total"]
    lines.append(
        "mean total input power: {:.3f} W ({})".format(total["mean_w"], summary["total_rail"])
    )
    return "\n".join(lines)


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("log", help="a tegrastats log (tegrastats --logfile FILE)")
    parser.add_argument("--json", help="also write the summary as JSON here")
    return parser


def main(args):
    try:
        samples, skipped = tegrastats.read_log(args.log)
    except OSError as exc:
        print(f"error: {args.log}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except tegrastats.TegrastatsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = power.summarize(samples, source="tegrastats log " + args.log)
    if not summary.get("total"):
        print(f"error: {args.log}: no power rails in its lines", file=sys.stderr)
        return 2
    summary["skipped_lines"] = [n for n, _ in skipped]
    if args.json:
        atomic_write_json(args.json, summary)
    print(format_summary(summary, skipped))
    return 0

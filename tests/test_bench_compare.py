"""`python -m benchmarks compare`: ratios, AP deltas, environment warnings, --fail-below."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as bench_cli
from benchmarks.compare import build_table, environment_warnings, load_models


def latency_json(path, models, device="AMD EPYC", threads=2, power=None, backend="ort"):
    env = {
        "device": device,
        "cpu_model": "AMD EPYC",
        "gpu": None,
        "power_mode": power,
        "backend": backend,
        "threads": threads,
    }
    data = {
        "kind": "latency",
        "backend": backend,
        "threads": threads,
        "environment": env,
        "models": [
            {
                "name": n,
                "latency_ms": {"p50": p50, "p90": p50 * 1.2, "fps": 1000 / p50},
                "flops": 10**9,
                "ap": {"AP50": ap, "AP50_95": ap / 2} if ap is not None else {},
            }
            for n, p50, ap in models
        ],
    }
    path.write_text(json.dumps(data))
    return path


def test_speedup_and_ap_delta(tmp_path):
    a = latency_json(tmp_path / "a.json", [("base", 40.0, 0.30), ("pruned", 16.0, 0.28)])
    models, env = load_models(a)
    rows = build_table(models)
    assert rows[0]["baseline"] and rows[0]["speedup"] == pytest.approx(1.0)
    assert rows[1]["speedup"] == pytest.approx(2.5)
    assert rows[1]["AP50_delta"] == pytest.approx(-0.02)
    rows = build_table(models, baseline="pruned")
    assert rows[0]["speedup"] == pytest.approx(0.4)


def test_same_environment_no_warning(tmp_path, capsys):
    a = latency_json(tmp_path / "a.json", [("base", 40.0, 0.3)])
    b = latency_json(tmp_path / "b.json", [("pruned", 20.0, 0.29)])
    assert bench_cli.main(["compare", str(a), str(b)]) == 0
    captured = capsys.readouterr()
    assert "2.00x" in captured.out and "-0.010" in captured.out
    assert "mixes machines" not in captured.err  # same environment; the model sets differ
    assert "models differ" in captured.err


def test_a_run_compared_with_its_own_baseline_never_fails(tmp_path, capsys):
    """Each file's pruned model is divided by the base model of the same file, so comparing
    a run with an earlier copy of itself (or a run on a slower machine) is like with like."""
    a = latency_json(tmp_path / "a.json", [("base", 30.0, None), ("pruned", 15.0, None)])
    b = latency_json(tmp_path / "b.json", [("base", 60.0, None), ("pruned", 30.0, None)])
    rows = build_table(load_models(a)[0] + load_models(b)[0])
    assert [r["speedup"] for r in rows] == pytest.approx([1.0, 2.0, 1.0, 2.0])
    assert [r["baseline"] for r in rows] == [True, False, True, False]
    assert rows[3]["vs_first"] == pytest.approx(0.5) and rows[1]["vs_first"] is None
    assert bench_cli.main(["compare", str(a), str(b), "--fail-below", "1.8"]) == 0
    assert bench_cli.main(["compare", str(a), str(a), "--fail-below", "1.8"]) == 0
    assert "1.00x" in capsys.readouterr().out  # a file against itself: 1.00x per model


def test_differing_runs_are_warned(tmp_path, capsys):
    a = latency_json(tmp_path / "a.json", [("base", 30.0, None), ("pruned", 15.0, None)])
    b = latency_json(tmp_path / "b.json", [("base", 30.0, None), ("other", 15.0, None)])
    data = json.loads(b.read_text())
    data["iterations"] = 20
    data["models"][0]["input_shape"] = [1, 3, 320, 320]
    b.write_text(json.dumps(data))
    data = json.loads(a.read_text())
    data["iterations"] = 200
    data["models"][0]["input_shape"] = [1, 3, 416, 416]
    a.write_text(json.dumps(data))
    assert bench_cli.main(["compare", str(a), str(b)]) == 0
    err = capsys.readouterr().err
    assert "only in a.json" not in err  # full paths are named
    assert "models differ" in err and "pruned" in err and "other" in err
    assert "[1, 3, 320, 320] differs" in err and "20 iterations against 200" in err


def test_binary_file_is_one_line(tmp_path, capsys):
    binary = tmp_path / "photo.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256)))
    assert bench_cli.main(["compare", str(binary)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "photo.json" in err[0] and "binary" in err[0]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"device": "NVIDIA Jetson Nano Developer Kit"}, "device"),
        ({"threads": 4}, "threads"),
        ({"power": "5W"}, "power_mode"),
        ({"backend": "trt"}, "backend"),
    ],
)
def test_mismatched_environment_is_flagged(tmp_path, capsys, change, key):
    a = latency_json(tmp_path / "a.json", [("base", 40.0, 0.3)], power="MAXN")
    kwargs = {"power": "MAXN", **change}
    b = latency_json(tmp_path / "b.json", [("pruned", 20.0, 0.29)], **kwargs)
    envs = [(str(p), load_models(p)[1]) for p in (a, b)]
    warnings = environment_warnings(envs)
    assert len(warnings) == 1 and key in warnings[0]
    assert bench_cli.main(["compare", str(a), str(b)]) == 0  # a warning, not a failure
    assert key in capsys.readouterr().err
    assert bench_cli.main(["compare", str(a), str(b), "--strict-env"]) == 1


def test_fail_below(tmp_path, capsys):
    a = latency_json(tmp_path / "a.json", [("base", 30.0, None), ("pruned", 20.0, None)])  # 1.5x
    assert bench_cli.main(["compare", str(a), "--fail-below", "1.4"]) == 0
    assert bench_cli.main(["compare", str(a), "--fail-below", "2.0"]) == 1
    err = capsys.readouterr().err
    assert "FAIL: pruned is 1.50x" in err
    out = tmp_path / "cmp.json"
    assert bench_cli.main(["compare", str(a), "--fail-below", "2.0", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["failing"] == ["pruned"]


def test_bad_files_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert bench_cli.main(["compare", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    assert bench_cli.main(["compare", str(other)]) == 2
    assert "not a benchmark JSON" in capsys.readouterr().err
    assert bench_cli.main(["compare", str(tmp_path / "nope.json")]) == 2


def test_bench_run_json_is_accepted(tmp_path):
    inner = json.loads(latency_json(tmp_path / "a.json", [("base", 40.0, 0.3)]).read_text())
    wrapped = tmp_path / "bench.json"
    wrapped.write_text(json.dumps({"kind": "bench", "latency": inner}))
    models, env = load_models(wrapped)
    assert models[0]["name"] == "base" and env["threads"] == 2

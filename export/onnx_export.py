"""Detector -> one ONNX model bundle the Jetson runs: graph + everything needed to use it.

    python -m export onnx --run runs/yolov3-tiny-person          # the run's final model
    python -m export onnx --model runs/.../prune/model --out m.onnx

The legacy TorchScript exporter (`dynamo=False`, opsets 11-17, what TensorRT 8.2 parses)
traces `detector.export_module()` (forward + decode, no NMS) at a static 1x3xHxW input into
outputs `boxes` [1, N, 4] (xyxy, input pixels) and `scores` [1, N, C]. onnxsim folds it, the
bundle metadata (`export.bundle`) goes into `metadata_props`, then onnxruntime must match
PyTorch on real images (`export.parity`) before the file is written, atomically.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from compress.evaluate import model_figures
from compress.io import sha256_file, write_json
from compress.paths import assets_root
from edge_runtime import files
from export import bundle
from export.check import check_model
from export.parity import DEFAULT_ATOL, ParityError, check_parity, load_images
from export.simplify import simplify_model

INPUT_NAME = "images"
OUTPUT_NAMES = ("boxes", "scores")


def state_sha256(module: torch.nn.Module) -> str:
    """A hash of the weights (names, shapes, values), so a bundle names what it came from."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def trace_to_onnx(
    module: torch.nn.Module, input_shape: list[int], opset: int, dynamic_batch: bool
) -> onnx.ModelProto:
    example = torch.rand(*input_shape, generator=torch.Generator().manual_seed(0))
    axes = {n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the legacy exporter is chosen on purpose (TensorRT 8.2): silence its deprecation notice
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


def bundle_metadata(
    detector, name: str, opset: int, dynamic_batch: bool, extra_meta: dict | None
) -> dict:
    fields = dict(detector.bundle_meta())
    fields.update(name=name, input_name=INPUT_NAME, opset=opset, dynamic_batch=bool(dynamic_batch))
    fields.update(model_figures(detector))
    source = {
        "state_sha256": state_sha256(detector),
        "torch": torch.__version__,
        "exporter": "torch.onnx legacy",
    }
    source.update((extra_meta or {}).get("source", {}))
    fields.update({k: v for k, v in (extra_meta or {}).items() if k != "source"})
    fields["source"] = source
    return bundle.make_meta(**fields)


def export_bundle(
    detector,
    out_path: str | Path,
    name: str,
    opset: int = 13,
    simplify: bool = True,
    parity_images=None,
    dynamic_batch: bool = False,
    extra_meta: dict | None = None,
    parity_atol: float = DEFAULT_ATOL,
    check_target: str = "nano",
) -> dict[str, Any]:
    """Export `detector` (a compress.models.base.Detector) to `out_path`; return the report.

    Args:
        opset: 13 by default, TensorRT 8.2's ceiling.
        simplify: run onnxsim (constant folding) before the metadata goes in.
        parity_images: image folder, list of paths/BGR arrays, or None/an int: that many of
            the sample photos under $NANOPRUNE_ASSETS/images (synthetic frames fill up).
        dynamic_batch: make the batch dimension dynamic (desktop; the Nano wants static).
        extra_meta: more bundle fields (e.g. {"source": {"run": ...}}), merged last.
    Raises:
        ParityError: onnxruntime's outputs differ from PyTorch's; the model is then written
            to `<out>.parity-failed.onnx` for inspection, never to `out_path`.
    """
    t0 = time.time()
    out_path = Path(out_path)
    det = copy.deepcopy(detector).cpu().eval()  # the caller's model stays where it was
    meta = bundle_metadata(det, name, opset, dynamic_batch, extra_meta)
    module = det.export_module().eval()
    model = trace_to_onnx(module, meta["input_shape"], opset, dynamic_batch)
    simplify_report = {
        "simplified": False,
        "reason": "skipped (simplify=False)",
        "nodes": len(model.graph.node),
    }
    if simplify:
        model, simplify_report = simplify_model(model)
    model.producer_name, model.producer_version = "nanoprune", _version()
    model.doc_string = (
        f"nanoprune bundle {name}: boxes [1,N,4] xyxy input px, scores [1,N,C]; NMS on the device"
    )
    onnx.helper.set_model_props(model, bundle.to_props(meta))
    onnx.checker.check_model(model)
    data = model.SerializeToString()

    images = load_images(parity_images)
    try:
        parity = check_parity(module, data, meta, images, atol=parity_atol)
    except ParityError:
        files.atomic_write_bytes(str(out_path.with_suffix(".parity-failed.onnx")), data)
        raise
    files.atomic_write_bytes(str(out_path), data)
    check = check_model(model, check_target, str(out_path))
    return {
        "onnx": str(out_path),
        "sha256": sha256_file(out_path),
        "bytes": len(data),
        "name": name,
        "opset": opset,
        "dynamic_batch": bool(dynamic_batch),
        "nodes": len(model.graph.node),
        "simplify": simplify_report,
        "parity": parity,
        "trt_check": {
            "target": check_target,
            "ok": check.ok,
            "problems": [str(p) for p in check.problems],
        },
        "meta": meta,
        "seconds": round(time.time() - t0, 2),
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nanoprune")
    except Exception:  # not installed (running from a checkout): the bundle still works
        return "0"


# --- command line ---------------------------------------------------------------------------


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder: exports summary.json's final_model")
    src.add_argument("--model", help="model folder with model.json (from save_detector)")
    parser.add_argument(
        "--out", help="ONNX path (default: <run>/export/model.onnx or <model>/model.onnx)"
    )
    parser.add_argument(
        "--name",
        help="bundle name (default: <recipe>-<stage> inside a run folder, else the folder name)",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default 13: TensorRT 8.2)"
    )
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    parser.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    parser.add_argument(
        "--parity-images",
        default=None,
        help="folder (or image) for the parity check (default: $NANOPRUNE_ASSETS/images, else synthetic)",
    )
    parser.add_argument(
        "--parity-count", type=int, default=None, help="use at most this many images"
    )
    parser.add_argument(
        "--atol", type=float, default=DEFAULT_ATOL, help="parity tolerance (default %(default)g)"
    )
    parser.add_argument(
        "--target", choices=("nano", "desktop"), default="nano", help="TensorRT check target"
    )
    return parser


def _resolve_source(args) -> tuple[Path, Path, str, dict, dict]:
    """(model folder, out path, name, export settings, source record) from --run / --model."""
    if args.run:
        run = Path(args.run)
        summary_path = run / "summary.json"
        if not summary_path.is_file():
            raise SystemExit(
                f"{summary_path}: missing; is {run} a run folder (python -m compress pipeline)?"
            )
        summary = _read_json(summary_path)
        final = summary.get("final_model")
        if not final:
            raise SystemExit(
                f"{summary_path}: has no 'final_model' (did the pipeline's prune stage finish?)"
            )
        model_dir = (
            run / final if not Path(final).is_absolute() and (run / final).exists() else Path(final)
        )
        recipe = _read_json(run / "recipe.json") if (run / "recipe.json").is_file() else {}
        settings = recipe.get("export") or {}
        name = args.name or summary.get("recipe") or run.name
        out = Path(args.out) if args.out else run / "export" / f"{name}.onnx"
        source = {"run": str(run), "summary_sha256": sha256_file(summary_path)}
    else:
        model_dir, settings, source = Path(args.model), {}, {}
        name = args.name or bundle_name(model_dir)
        out = Path(args.out) if args.out else model_dir / "model.onnx"
    if not (model_dir / "model.json").is_file():
        raise SystemExit(f"{model_dir}: no model.json (a model folder is written by save_detector)")
    source["model"] = str(model_dir)
    source["files"] = {
        p.name: sha256_file(p)
        for p in sorted(model_dir.iterdir())
        if p.is_file() and p.suffix != ".onnx"
    }
    return model_dir, out, str(name), settings, source


def bundle_name(model_dir: Path) -> str:
    """The name a model folder's bundle gets (the MJPEG page's title, the benchmark rows):
    `<recipe>-<stage>` inside a run folder (runs/yolov3-tiny-person/base/model ->
    yolov3-tiny-person-base), else the folder's own name, or its parent's when it is the
    generic `model`."""
    folder = model_dir.resolve()
    for parent in [folder, *folder.parents][:4]:
        recipe_path = parent / "recipe.json"
        if recipe_path.is_file():
            recipe = _read_json(recipe_path).get("name") or parent.name
            parts = folder.relative_to(parent).parts
            return f"{recipe}-{parts[0]}" if parts else str(recipe)
    return folder.parent.name if folder.name == "model" else folder.name


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise SystemExit(f"{path}: not JSON ({exc})") from exc


def _parity_images(args, settings: dict):
    count = args.parity_count or settings.get("parity_images")
    count = count if isinstance(count, int) else None
    if args.parity_images:
        return load_images(args.parity_images, count)
    if not (assets_root() / "images").is_dir():
        print(
            f"note: {assets_root() / 'images'} is absent; parity runs on synthetic frames",
            file=sys.stderr,
        )
    return load_images(count or 4)


def main(args: argparse.Namespace) -> int:
    from compress.models.load import load_detector_dir

    model_dir, out, name, settings, source = _resolve_source(args)
    detector = load_detector_dir(model_dir)
    report_path = out.with_suffix(".report.json")  # never the pipeline stage's report.json
    try:
        report = export_bundle(
            detector,
            out,
            name,
            opset=args.opset or int(settings.get("opset", 13)),
            simplify=not args.no_simplify and bool(settings.get("simplify", True)),
            parity_images=_parity_images(args, settings),
            dynamic_batch=args.dynamic_batch,
            extra_meta={"source": source},
            parity_atol=args.atol,
            check_target=args.target,
        )
    except ParityError as exc:
        write_json(report_path, {"onnx": None, "error": str(exc), "parity": exc.report})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_json(report_path, report)
    p = report["parity"]
    print(
        f"{out}: {report['bytes'] / 1e6:.1f} MB, opset {report['opset']}, {report['nodes']} nodes; parity on "
        f"{len(p['images'])} image(s): max |diff| boxes {p['max_abs_diff_boxes']:.2e}, scores "
        f"{p['max_abs_diff_scores']:.2e}; TensorRT {args.target} check: "
        + ("OK" if report["trt_check"]["ok"] else "FAILED")
    )
    for line in report["trt_check"]["problems"]:
        print("  " + line)
    return 0 if report["trt_check"]["ok"] else 1

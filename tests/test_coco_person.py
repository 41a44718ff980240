"""coco-person-val2017: built from local val2017 / label-pack archives (file:// URLs), and the
split rule against the shared development copy."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from compress import assets_cli, coco_person
from compress.assets import KNOWN_ASSETS, AssetError, fetch, require, status
from compress.coco_person import SplitRule
from tests.conftest import need

NAME = "coco-person-val2017"
# 12 val2017 images: ten with at least one person (some beside other classes), two without.
LABELS = {
    f"{i:012d}": text
    for i, text in {
        139: "0 0.5 0.5 0.2 0.4\n56 0.1 0.1 0.05 0.05\n",
        285: "23 0.5 0.5 0.9 0.9\n",  # a bear: no person
        632: "0 0.3 0.3 0.1 0.2\n0 0.6 0.6 0.1 0.2\n",
        724: "",  # empty label file
        776: "2 0.2 0.2 0.1 0.1\n0 0.7 0.7 0.2 0.3\n10 0.1 0.9 0.1 0.1\n",
        785: "0 0.5 0.5 0.3 0.6\n",
        802: "60 0.5 0.5 0.5 0.5\n0 0.4 0.4 0.1 0.1\n",
        872: "0 0.5 0.5 0.2 0.2\n0 0.2 0.2 0.1 0.1\n0 0.8 0.8 0.1 0.1\n",
        885: "0 0.5 0.5 0.2 0.2\n38 0.5 0.5 0.1 0.1",  # no final newline
        1000: "0 0.5 0.5 0.2 0.2\n",
        1268: "0 0.4 0.4 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        1296: "0 0.5 0.5 0.2 0.2\n",
    }.items()
}
PERSONS = {s for s, t in LABELS.items() if any(line.startswith("0 ") for line in t.splitlines())}
SMALL = SplitRule(skip_lowest=1, seed=3, held_back=2, val=3, train=4)  # 10 images: 1+2+3+4


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 20 % 256, 80, 160)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _registry(tmp_path: Path, rule: SplitRule = SMALL, missing_image: str = "") -> dict:
    """The real registry entries, served from local archives of the official layouts."""
    server = tmp_path / "server"
    server.mkdir(exist_ok=True)
    with zipfile.ZipFile(server / "labels.zip", "w") as zf:  # Ultralytics' layout: coco/...
        for stem, text in LABELS.items():
            zf.writestr(f"coco/labels/val2017/{stem}.txt", text)
        zf.writestr("coco/labels/train2017/000000000009.txt", "0 0.5 0.5 0.1 0.1\n")
        zf.writestr("coco/val2017.txt", "".join(f"./images/val2017/{s}.jpg\n" for s in LABELS))
    with zipfile.ZipFile(server / "val.zip", "w") as zf:  # cocodataset.org's: val2017/...
        for n, stem in enumerate([*LABELS, "000000001353"]):  # one image without a label file
            if stem != missing_image:
                zf.writestr(f"val2017/{stem}.jpg", _jpeg(n))
    return {
        "coco2017-labels": replace(
            KNOWN_ASSETS["coco2017-labels"], url=(server / "labels.zip").as_uri()
        ),
        "coco2017-val": replace(KNOWN_ASSETS["coco2017-val"], url=(server / "val.zip").as_uri()),
        NAME: replace(KNOWN_ASSETS[NAME], build=partial(coco_person.build, rule=rule)),
    }


def _members(root: Path) -> dict[str, list[str]]:
    return {
        split: sorted(p.stem for p in (root / NAME / "images" / split).glob("*.jpg"))
        for split in ("val", "train")
    }


def test_fetch_downloads_both_archives_and_builds_the_person_layout(tmp_path):
    root = tmp_path / "assets"
    registry = _registry(tmp_path)
    assert status(registry[NAME], root)[0] == "missing"
    assert fetch(NAME, root, progress=False, registry=registry) == root / NAME
    members = _members(root)
    assert [len(members["val"]), len(members["train"])] == [3, 4]
    assert not set(members["val"]) & set(members["train"])
    kept = set(members["val"]) | set(members["train"])
    assert kept <= PERSONS  # images without a person (bear only, empty file, no file) left out
    assert min(PERSONS, key=int) not in kept  # skip_lowest
    for split, stems in members.items():
        labels = sorted(p.stem for p in (root / NAME / "labels" / split).glob("*.txt"))
        assert labels == stems
        for stem in stems:
            text = (root / NAME / "labels" / split / f"{stem}.txt").read_text()
            source = [line for line in LABELS[stem].splitlines() if line.startswith("0 ")]
            assert text.splitlines() == source and text.endswith("\n")  # non-person lines dropped
            # the originals are kept (boxes are normalised, so any size is right)
            assert (root / NAME / "images" / split / f"{stem}.jpg").read_bytes() == (
                root / "coco/images/val2017" / f"{stem}.jpg"
            ).read_bytes()
    assert status(registry[NAME], root) == ("present", "val 3 images, train 4 images")
    assert not list(root.glob(f".{NAME}.*"))  # staging removed


def test_the_built_layout_reads_as_a_person_dataset(tmp_path):
    from compress.data.readers import read_yolo

    root = tmp_path / "assets"
    fetch(NAME, root, progress=False, registry=_registry(tmp_path))
    records, problems = read_yolo({"root": str(root / NAME), "split": "val", "classes": ["person"]})
    assert len(records) == 3 and not problems
    expected = sum(
        line.startswith("0 ") for r in records for line in LABELS[r.path.stem].splitlines()
    )
    assert sum(len(r.boxes) for r in records) == expected > 0
    assert all(set(r.labels.tolist()) == {0} and (r.width, r.height) == (64, 48) for r in records)


def test_split_is_deterministic_and_reuses_present_sources(tmp_path):
    registry = _registry(tmp_path)
    first, second = tmp_path / "a", tmp_path / "b"
    fetch(NAME, first, progress=False, registry=registry)
    (tmp_path / "server/val.zip").unlink()  # the second root already holds the images
    fetch("coco2017-labels", second, progress=False, registry=registry)
    (second / "coco/images").mkdir(parents=True)
    (first / "coco/images/val2017").rename(second / "coco/images/val2017")
    fetch(NAME, second, progress=False, registry=registry)
    assert _members(first) == _members(second)
    assert SMALL.split(PERSONS) == SMALL.split(sorted(PERSONS, reverse=True))  # order-free
    other = SplitRule(skip_lowest=1, seed=4, held_back=2, val=3, train=4).split(PERSONS)
    assert other != SMALL.split(PERSONS)  # the seed is what decides


def test_a_refetch_deletes_nothing(tmp_path):
    root = tmp_path / "assets"
    registry = _registry(tmp_path)
    fetch(NAME, root, progress=False, registry=registry)
    before = _members(root)
    mine = root / NAME / "images/val/my_own.jpg"
    mine.write_bytes(b"mine")
    fetch(NAME, root, progress=False, registry=registry)  # present: nothing to do
    fetch(NAME, root, force=True, progress=False, registry=registry)  # rebuilt, merged
    assert mine.read_bytes() == b"mine"
    after = _members(root)
    after["val"].remove("my_own")
    assert after == before
    assert len(list((root / "coco/images/val2017").glob("*.jpg"))) == len(LABELS) + 1
    assert len(list((root / "coco/labels/val2017").glob("*.txt"))) == len(LABELS)


def test_sources_that_cannot_make_it_fail_with_one_line_and_write_nothing(tmp_path):
    root = tmp_path / "assets"
    too_big = SplitRule(skip_lowest=1, seed=3, held_back=2, val=3, train=5)
    with pytest.raises(AssetError) as err:
        fetch(NAME, root, progress=False, registry=_registry(tmp_path, too_big))
    assert "\n" not in str(err.value) and "10 images hold a person; the split needs 11" in str(
        err.value
    )
    assert not (root / NAME).exists() and (root / "coco/images/val2017").is_dir()
    stem = sorted(PERSONS, key=int)[-1]
    (root / "coco/images/val2017" / f"{stem}.jpg").unlink()
    with pytest.raises(AssetError, match=f"{stem}.txt has persons but .*{stem}.jpg is missing"):
        fetch(NAME, root, progress=False, registry=_registry(tmp_path, SMALL))
    assert not (root / NAME).exists()


def test_quick_recipe_fetches_it_and_a_missing_root_says_how(tmp_path, monkeypatch, capsys):
    from compress.data.readers import DataError, _root

    quick = assets_cli.recipe_assets("configs/yolov3-tiny-person.yaml", "quick")
    assert NAME in quick and "coco2017-val" not in quick  # the build fetches its sources
    monkeypatch.setenv("NANOPRUNE_ASSETS", str(tmp_path))
    with pytest.raises(DataError, match=f"fetch it with `python -m compress assets fetch {NAME}`"):
        _root({"root": NAME})
    with pytest.raises(AssetError, match="from coco2017-labels, coco2017-val"):
        require(f"{NAME}")
    parse = assets_cli.get_args_parser().parse_args
    assert assets_cli.main(parse(["--root", str(tmp_path), "list"])) == 0
    assert f"missing   {NAME}" in capsys.readouterr().out


def test_cli_fetch_for_the_recipe_builds_it(tmp_path, monkeypatch, capsys):
    registry = _registry(tmp_path)
    monkeypatch.setattr("compress.assets.KNOWN_ASSETS", registry)
    monkeypatch.setattr(assets_cli, "KNOWN_ASSETS", registry)
    monkeypatch.setattr(assets_cli, "recipe_assets", lambda *a: [NAME])
    args = assets_cli.get_args_parser().parse_args(
        ["fetch", "--quiet", "--recipe", "configs/yolov3-tiny-person.yaml", "--profile", "quick"]
    )
    assert assets_cli.fetch_assets(args, tmp_path / "assets") == 0
    out = capsys.readouterr().out
    assert f"fetching {NAME}: COCO val2017 images with a person" in out
    assert f"present   {NAME} -> {tmp_path / 'assets' / NAME}" in out


def test_the_rule_reproduces_the_shared_split(assets):
    need(assets, f"{NAME}/images/val", f"{NAME}/images/train")
    ids = Path(__file__).parent / "data/coco_val2017_person_ids.txt"
    population = [
        f"{int(line):012d}" for line in ids.read_text().splitlines() if not line.startswith("#")
    ]
    assert len(population) == 2693
    split = SplitRule().split(population)
    assert split == {
        s: sorted(p.stem for p in (assets / NAME / "images" / s).glob("*.jpg"))
        for s in ("val", "train")
    }
    assert [len(split["val"]), len(split["train"])] == [1000, 1120]
    assert status(KNOWN_ASSETS[NAME], assets) == ("present", "val 1000 images, train 1120 images")


def test_build_reports_images_and_person_boxes_per_split(tmp_path):
    root = tmp_path / "assets"
    registry = _registry(tmp_path)
    for name in ("coco2017-labels", "coco2017-val"):
        fetch(name, root, progress=False, registry=registry)
    counts = coco_person.build(root, tmp_path / "out", SMALL)
    for split, stems in SMALL.split(PERSONS).items():
        boxes = sum(line.startswith("0 ") for s in stems for line in LABELS[s].splitlines())
        assert counts[split] == (len(stems), boxes)

"""Assets: registry digests, require() messages, fetch (offline through file:// URLs)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from compress import assets_cli
from compress.assets import HASH_RECORD, KNOWN_ASSETS, Asset, AssetError, fetch, require, status
from tests.conftest import need


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source(tmp_path: Path, name: str, data: bytes) -> str:
    src = tmp_path / "server" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    return src.as_uri()


def test_registry_verifies_the_shared_assets(assets):
    need(assets, "darknet/yolov3-tiny.weights")
    for name in (
        "yolov3-tiny.weights",
        "yolov3-tiny.cfg",
        "yolov3.cfg",
        "yolov3-spp.cfg",
        "coco.names",
        "vtest.avi",
        "person.jpg",
        "pedestrian-ssdlite.pb",
    ):
        asset = KNOWN_ASSETS[name]
        need(assets, asset.relpath)
        assert status(asset, assets)[0] == "verified", name
    assert KNOWN_ASSETS["yolov3.weights"].url == "https://pjreddie.com/media/files/yolov3.weights"
    assert KNOWN_ASSETS["yolov3.weights"].sha256 is None  # honest: recorded on first fetch


def test_require_names_file_place_and_command(tmp_path):
    (tmp_path / "darknet").mkdir()
    (tmp_path / "darknet/yolov3.cfg").write_text("[net]\n")
    assert require("darknet/yolov3.cfg", tmp_path) == tmp_path / "darknet/yolov3.cfg"
    with pytest.raises(AssetError) as err:
        require("darknet/yolov3.weights", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "darknet/yolov3.weights") in msg
    assert "python -m compress assets fetch yolov3.weights" in msg and "pjreddie.com" in msg
    with pytest.raises(AssetError, match="missing asset mine/x.bin: expected at"):
        require("mine/x.bin", tmp_path)


def test_require_uses_the_env_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOPRUNE_ASSETS", str(tmp_path))
    (tmp_path / "a.txt").write_text("x")
    assert require("a.txt") == tmp_path / "a.txt"


def test_fetch_verifies_and_writes_atomically(tmp_path):
    data = b"weights" * 1000
    root = tmp_path / "assets"
    good = Asset("w", "darknet/w.weights", _source(tmp_path, "w.weights", data), _sha(data))
    bad = Asset("w", "darknet/w.weights", good.url, _sha(b"other"))
    with pytest.raises(AssetError, match="is not the expected"):
        fetch("w", root, progress=False, registry={"w": bad})
    assert list((root / "darknet").iterdir()) == []  # no half file, no temp file left
    path = fetch("w", root, progress=False, registry={"w": good})
    assert path.read_bytes() == data and status(good, root)[0] == "verified"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only mode
    path.write_bytes(b"corrupt")
    assert status(good, root)[0] == "mismatch"
    fetch("w", root, progress=False, registry={"w": good})  # a mismatched file is fetched again
    assert path.read_bytes() == data


def test_unknown_digest_is_recorded_on_first_fetch(tmp_path):
    data = b"big weights"
    root = tmp_path / "assets"
    asset = Asset("big", "big.weights", _source(tmp_path, "big.weights", data))
    fetch("big", root, progress=False, registry={"big": asset})
    assert (root / HASH_RECORD).read_text().count(_sha(data)) == 1
    assert status(asset, root)[0] == "recorded"
    (root / "big.weights").write_bytes(b"changed")
    assert status(asset, root)[0] == "mismatch"


def test_zip_dataset_and_zip_member(tmp_path):
    archive = tmp_path / "server" / "ds.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ds/images/train/a.jpg", b"jpg")
        zf.writestr("ds/labels/train/a.txt", "0 0.5 0.5 0.1 0.1\n")
        zf.writestr("pkg/model.pb", b"graph")
    root = tmp_path / "assets"
    ds = Asset(
        "ds", "ds", archive.as_uri(), kind="zip", check=("ds/images/train", "ds/labels/train")
    )
    assert status(ds, root)[0] == "missing"
    fetch("ds", root, progress=False, registry={"ds": ds})
    assert (root / "ds/labels/train/a.txt").read_text().startswith("0 ")
    assert status(ds, root)[0] == "recorded"
    assert not [
        p for p in root.iterdir() if p.name.startswith(".ds")
    ]  # staging and download removed
    wrong = Asset("wrong", "other", archive.as_uri(), kind="zip", check=("other/images",))
    with pytest.raises(AssetError, match="did not hold other/images"):
        fetch("wrong", root, progress=False, registry={"wrong": wrong})
    member = Asset(
        "pb",
        "tf/model.pb",
        archive.as_uri(),
        _sha(archive.read_bytes()),
        kind="zip-member",
        member="pkg/model.pb",
        member_sha256=_sha(b"graph"),
    )
    fetch("pb", root, progress=False, registry={"pb": member})
    assert (root / "tf/model.pb").read_bytes() == b"graph" and status(member, root)[0] == "verified"


def test_zip_with_unsafe_paths_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.txt", "x")
    evil = Asset("evil", "evil", archive.as_uri(), kind="zip", check=("evil",))
    with pytest.raises(AssetError, match="unsafe path"):
        fetch("evil", tmp_path / "assets", progress=False, registry={"evil": evil})
    assert not (tmp_path / "outside.txt").exists()


def test_offline_fetch_fails_with_one_line(tmp_path):
    asset = Asset("w", "darknet/w.weights", "http://127.0.0.1:9/w.weights", "0" * 64)
    with pytest.raises(AssetError) as err:
        fetch("w", tmp_path, progress=False, registry={"w": asset})
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "cannot download w" in msg
        and str(tmp_path / "darknet/w.weights") in msg
    )
    assert not list((tmp_path / "darknet").iterdir())


def test_cli_list_and_fetch_errors(tmp_path, capsys):
    parse = assets_cli.get_args_parser().parse_args
    assert assets_cli.main(parse(["--root", str(tmp_path), "list"])) == 0
    out = capsys.readouterr().out
    assert "missing   yolov3-tiny.weights" in out and "assets fetch NAME" in out
    assert assets_cli.main(parse(["--root", str(tmp_path), "fetch"])) == 2
    assert assets_cli.main(parse(["--root", str(tmp_path), "fetch", "no-such-thing"])) == 1
    assert "unknown asset 'no-such-thing'" in capsys.readouterr().err


def test_cli_lists_shared_assets_verified(assets, capsys):
    need(assets, "darknet/yolov3-tiny.weights", "coco128/images/train2017")
    assert (
        assets_cli.main(assets_cli.get_args_parser().parse_args(["--root", str(assets), "list"]))
        == 0
    )
    out = capsys.readouterr().out
    assert "verified  yolov3-tiny.weights" in out and "present   coco128" in out


def test_fetch_for_a_recipe_names_what_the_recipe_reads():
    from compress.assets_cli import recipe_assets

    names = set(recipe_assets("configs/yolov3-tiny-person.yaml", "quick"))
    assert {"yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names", "coco-person-val2017"} <= names
    assert "yolov3.weights" not in names and "person.jpg" in names  # parity images
    assert "yolov3.weights" in recipe_assets("configs/yolov3-person.yaml")
    assert "pedestrian-ssdlite.pb" in recipe_assets("configs/ssdlite-pedestrian-tf.yaml")


def test_coco_archives_land_in_one_dataset_root_without_deleting_each_other(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "labels.zip", "w") as zf:  # Ultralytics' layout: coco/...
        zf.writestr("coco/labels/val2017/a.txt", "0 0.5 0.5 0.1 0.1\n")
        zf.writestr("coco/val2017.txt", "./images/val2017/a.jpg\n")
    with zipfile.ZipFile(server / "val.zip", "w") as zf:  # cocodataset.org's: val2017/...
        zf.writestr("val2017/a.jpg", b"jpg")
    root = tmp_path / "assets"
    # The real registry entries, served from local archives of the same layout.
    labels = replace(KNOWN_ASSETS["coco2017-labels"], url=(server / "labels.zip").as_uri())
    labels = replace(labels, check=("coco/labels/val2017",))
    images = replace(KNOWN_ASSETS["coco2017-val"], url=(server / "val.zip").as_uri())
    registry = {"labels": labels, "val": images}
    fetch("val", root, progress=False, registry=registry)
    fetch("labels", root, progress=False, registry=registry)
    fetch("labels", root, force=True, progress=False, registry=registry)  # a re-fetch merges
    assert (root / "coco/images/val2017/a.jpg").read_bytes() == b"jpg"
    assert (root / "coco/labels/val2017/a.txt").is_file() and (root / "coco/val2017.txt").is_file()
    assert sorted(p.name for p in (root / "coco").iterdir()) == ["images", "labels", "val2017.txt"]


def test_full_profile_fetches_coco_and_a_missing_root_says_how(tmp_path, monkeypatch):
    from compress.assets_cli import recipe_assets
    from compress.data.readers import DataError, _root

    full = recipe_assets("configs/yolov3-tiny-person.yaml", "full")
    coco = [n for n in full if n.startswith("coco2017")]
    assert coco == ["coco2017-labels", "coco2017-val", "coco2017-train"]  # labels first
    assert "coco128" not in full and "coco2017-train" not in recipe_assets(
        "configs/yolov3-tiny-person.yaml", "quick"
    )
    monkeypatch.setenv("NANOPRUNE_ASSETS", str(tmp_path))
    with pytest.raises(DataError, match="assets fetch coco2017-labels coco2017-val coco2017-train"):
        _root({"root": "coco"})


def test_fetch_all_leaves_out_the_coco_dataset(tmp_path, capsys, monkeypatch):

    fetched = []
    monkeypatch.setattr(assets_cli, "fetch", lambda name, *a, **k: fetched.append(name))
    monkeypatch.setattr(assets_cli, "status", lambda *a: ("present", ""))
    args = assets_cli.get_args_parser().parse_args(["fetch", "--all", "--quiet"])
    assets_cli.fetch_assets(args, tmp_path)
    assert "coco128" in fetched and not [n for n in fetched if n.startswith("coco2017")]
    assert "coco-person-val2017" not in fetched  # built from the 0.8 GB val2017 images


def test_fetch_takes_an_asset_path_as_well_as_its_name(tmp_path, monkeypatch):

    fetched = []
    monkeypatch.setattr(assets_cli, "fetch", lambda name, *a, **k: fetched.append(name))
    monkeypatch.setattr(assets_cli, "status", lambda *a: ("present", ""))
    args = assets_cli.get_args_parser().parse_args(
        ["fetch", "darknet/yolov3.weights", "yolov3.cfg"]
    )
    assert assets_cli.fetch_assets(args, tmp_path) == 0
    assert fetched == ["yolov3.weights", "yolov3.cfg"]

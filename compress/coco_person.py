"""`coco-person-val2017`: the COCO val2017 images that hold a person, split into val and train.

Built from two downloads the registry already knows: the official val2017 images
(`coco/images/val2017`) and the Ultralytics YOLO-txt label pack (`coco/labels/val2017`).
An image belongs to the subset when its label file holds at least one class-0 (person) box;
its labels keep only those lines, byte for byte. The pack has no crowd boxes (its converter
skips `iscrowd` annotations), so every kept box is a single person.

The split (`SplitRule`) reproduces the shared development copy exactly: of the 2,693 images
with a person, in ascending id order, the 73 lowest ids are left out; the other 2,620 are
shuffled by `random.Random(2026)`; the first 500 of that order are held back (a spare
evaluation set), the next 1,000 are val and the next 1,120 are train. `random.shuffle` gives
the same order on every Python 3 release since 3.2, so the split does not drift.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PERSON = "0"
IMAGES = "coco/images/val2017"
LABELS = "coco/labels/val2017"
SPLITS = ("val", "train")


class SourceError(ValueError):
    """The downloaded sources cannot make the subset; the message names the file."""


@dataclass(frozen=True)
class SplitRule:
    """Which person images become val and train (see the module docstring)."""

    skip_lowest: int = 73
    seed: int = 2026
    held_back: int = 500
    val: int = 1000
    train: int = 1120

    def split(self, stems: Iterable[str]) -> dict[str, list[str]]:
        """{"val": stems, "train": stems}, each sorted; stems are the 12-digit image ids."""
        order = sorted(stems, key=int)
        needed = self.skip_lowest + self.held_back + self.val + self.train
        if len(order) < needed:
            raise SourceError(
                f"{len(order)} images hold a person; the split needs {needed} "
                f"({self.skip_lowest} + {self.held_back} left out, {self.val} val, {self.train} train)"
            )
        order = order[self.skip_lowest :]
        random.Random(self.seed).shuffle(order)
        start = self.held_back
        return {
            "val": sorted(order[start : start + self.val], key=int),
            "train": sorted(order[start + self.val : start + self.val + self.train], key=int),
        }


def person_lines(label: Path) -> str:
    """The label file's class-0 lines (each newline-terminated); "" when it holds none."""
    kept = []
    for line in label.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and fields[0] == PERSON:
            kept.append(line + "\n")
    return "".join(kept)


def person_labels(label_dir: Path) -> dict[str, str]:
    """stem -> class-0 lines, for every label file in label_dir that holds a person."""
    if not label_dir.is_dir():
        raise SourceError(f"no label folder {label_dir}")
    found = {p.stem: person_lines(p) for p in sorted(label_dir.glob("*.txt"))}
    return {stem: text for stem, text in found.items() if text}


def _link_or_copy(src: Path, dest: Path) -> None:
    # A hard link costs no space beside the val2017 images it comes from; across
    # filesystems (or where links are refused) the file is copied.
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def build(base: Path, out: Path, rule: SplitRule = SplitRule()) -> dict[str, tuple[int, int]]:
    """Write images/{val,train} and labels/{val,train} under `out` from the val2017 images and
    labels under `base`; returns {split: (images, person boxes)}."""
    labels = person_labels(base / LABELS)
    images = base / IMAGES
    counts = {}
    for split, stems in rule.split(labels).items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            src = images / f"{stem}.jpg"
            if not src.is_file():
                raise SourceError(f"{base / LABELS / stem}.txt has persons but {src} is missing")
            _link_or_copy(src, out / "images" / split / src.name)
            (out / "labels" / split / f"{stem}.txt").write_text(labels[stem], encoding="utf-8")
        counts[split] = (len(stems), sum(labels[s].count("\n") for s in stems))
    return counts


def describe(root: Path) -> str:
    """`assets list` detail: images per split of a present subset."""
    return ", ".join(
        f"{split} {sum(1 for _ in (root / 'images' / split).glob('*.jpg'))} images"
        for split in SPLITS
    )

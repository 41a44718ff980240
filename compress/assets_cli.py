"""`python -m compress assets list|fetch`: what is present and verified, and how to get the rest.

python -m compress assets list
python -m compress assets fetch yolov3.weights
python -m compress assets fetch --all
python -m compress assets fetch --recipe configs/yolov3-tiny-person.yaml   # what a recipe reads
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compress.assets import BY_RELPATH, KNOWN_ASSETS, AssetError, assets_under, fetch, status
from compress.paths import ENV_VAR, assets_root


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    p.add_argument("--root", help=f"assets folder (default: ${ENV_VAR} or ./assets)")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser(
        "list", help="each known asset: verified / recorded / present / mismatch / missing"
    )
    f = sub.add_parser("fetch", help="download, verify (sha256) and store atomically")
    f.add_argument(
        "names", nargs="*", metavar="NAME", help=f"one or more of: {', '.join(KNOWN_ASSETS)}"
    )
    f.add_argument(
        "--all",
        action="store_true",
        help="every known asset but the COCO 2017 dataset (19 GB) and the person data built from it",
    )
    f.add_argument("--recipe", help="the assets this recipe reads (model files, dataset, images)")
    f.add_argument("--profile", help="with --recipe: its profile")
    f.add_argument("--force", action="store_true", help="download again even when present")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def list_assets(root) -> int:
    print(f"assets root: {root}")
    bad = 0
    for asset in KNOWN_ASSETS.values():
        state, detail = status(asset, root)
        bad += state in ("missing", "mismatch")
        print(f"  {state:9s} {asset.name:22s} {asset.relpath:48s} {detail}")
    if bad:
        print(f"{bad} missing or mismatched: `python -m compress assets fetch NAME` (or --all)")
    return 0


def recipe_assets(path: str, profile: str | None = None) -> list[str]:
    """Known assets a recipe reads: its model and data paths, plus the sample images the
    export's parity check uses. Paths outside the assets root are the user's own."""
    from compress.recipe import load_recipe

    recipe = load_recipe(path, profile)
    wanted = {
        str(v)
        for section in ("model", "data")
        for v in (recipe.get(section) or {}).values()
        if isinstance(v, str)
    }
    names = assets_under(wanted)
    if recipe.get("export"):
        names += [a.name for a in KNOWN_ASSETS.values() if a.relpath.startswith("images/")]
    return names


def fetch_assets(args, root) -> int:
    if sum(map(bool, (args.names, args.all, args.recipe))) != 1:
        print("assets fetch: name one or more assets, or pass --all or --recipe", file=sys.stderr)
        return 2
    if args.recipe:
        names = recipe_assets(args.recipe, args.profile)
    elif args.all:
        names = [n for n, a in KNOWN_ASSETS.items() if not a.large]
    else:  # a name, or the asset's path under the root
        names = [BY_RELPATH[n].name if n in BY_RELPATH else n for n in args.names]
    failed = 0
    for name in names:
        asset = KNOWN_ASSETS.get(name)
        if args.quiet and asset and not (Path(root) / asset.relpath).exists():
            print(f"fetching {name}: {asset.note or asset.url}")  # an 18 GB download says so
        try:
            path = fetch(name, root, force=args.force, progress=not args.quiet)
        except AssetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{status(KNOWN_ASSETS[name], root)[0]:9s} {name} -> {path}")
    return 1 if failed else 0


def main(args: argparse.Namespace) -> int:
    root = args.root or assets_root()
    if args.action == "list":
        return list_assets(root)
    return fetch_assets(args, root)

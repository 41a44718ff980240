"""Recipes: one YAML file = one reproducible pipeline run.

A recipe has top-level sections (model, data, train, sparsity, prune, recover, export, bench)
and an optional `profiles:` mapping (`smoke`, `quick`, `full`, ...), each a partial recipe that
is deep-merged over the base when that profile is chosen.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.user_errors import UserError


class RecipeError(UserError, ValueError):
    pass


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(
    path: str | os.PathLike, profile: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RecipeError(f"recipe not found: {path}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(raw).__name__}")
    profiles = raw.pop("profiles", {}) or {}
    recipe = raw
    if profile:
        if profile not in profiles:
            raise RecipeError(
                f"{path}: no profile {profile!r}; this recipe has: {', '.join(profiles) or 'none'}"
            )
        recipe = deep_merge(recipe, profiles[profile])
    if overrides:
        recipe = deep_merge(recipe, overrides)
    recipe.setdefault("name", path.stem)
    recipe["_source"] = {"path": str(path), "profile": profile}
    return recipe


def load_inputs(
    recipe: dict[str, Any], model_dir: str | os.PathLike | None = None, need_val: bool = True
):
    """(detector, train_ds, val_ds) for a recipe: the `model:` section (or the saved model folder
    `model_dir`), and its `data:` split as that model sees images, training augmentation from
    `train.augment`. Every verb that trains, prunes or recovers starts here; all but plain
    training need held-out images (`need_val`)."""
    from compress.data.build import datasets_for
    from compress.models.load import load_detector, load_detector_dir

    source = recipe.get("_source", {}).get("path", "recipe")
    if "data" not in recipe:
        raise RecipeError(f"{source}: the recipe has no `data:` section")
    if model_dir is not None:
        detector = load_detector_dir(model_dir)
    elif "model" in recipe:
        detector = load_detector(recipe["model"])
    else:
        raise RecipeError(f"{source}: no `model:` section and no model folder given")
    augment = (recipe.get("train") or {}).get("augment")
    train_ds, val_ds = datasets_for(detector, recipe["data"], augment)
    if need_val and len(val_ds) == 0:
        raise RecipeError(
            f"{source}: data gives no held-out images (val_fraction: {recipe['data'].get('val_fraction')})"
        )
    return detector, train_ds, val_ds

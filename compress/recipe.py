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

from export.user_errors import UserError


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

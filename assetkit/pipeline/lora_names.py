"""The base's modules in the other naming, for LoRA coverage: through the converter's key maps.

A LoRA names the modules it adapts in one scheme (kohya SD1.5 files use diffusers names, kohya
SDXL files the original ``input_blocks`` names, text encoders transformers or open_clip names);
the base is a single file (original names) or a diffusers folder. When the two differ, the base's
weights are renamed with the same rules :mod:`assetkit.convert` converts with
(:func:`~assetkit.convert.plan_single_file_to_diffusers` for a single file, the component's
key-map rules ``to_original`` for a folder), from headers only, so coverage is checked in the
LoRA's own naming rather than through a second hand-written name table. Light: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import AssetkitError

#: component -> flattened module name -> weight shape (what ``compat.base_modules`` returns)
ModuleTable = dict[str, dict[str, tuple[int, ...]]]
#: (component, the LoRA's naming scheme) -> that component's modules in the scheme, or None
Renamer = Callable[[str, str], "dict[str, tuple[int, ...]] | None"]


def weight_table(names_and_shapes: Iterable[tuple[str, tuple[int, ...]]], flat: Callable[[str], str]
                 ) -> dict[str, tuple[int, ...]]:
    """flattened module -> shape for every weight of rank >= 2."""
    return {flat(n.removesuffix(".weight")): tuple(s) for n, s in names_and_shapes
            if n.endswith(".weight") and len(s) >= 2}


def renamer(base_path: Path, parts: Any, flat: Callable[[str], str]) -> Renamer:
    """A lazy, memoised renamer for the base at ``base_path`` (``parts``: its ``compat.Parts``).

    Nothing is computed until a LoRA's naming differs from the base's; then the conversion plan
    (single file) or one component's rules (folder) is built once and reused for every LoRA."""
    cache: dict[str, ModuleTable | None] = {}

    def diffusers_names() -> ModuleTable | None:
        if "plan" not in cache:
            cache["plan"] = _planned_modules(base_path, flat)
        return cache["plan"]

    def rename(component: str, scheme: str) -> dict[str, tuple[int, ...]] | None:
        if parts.layout == "original" and scheme in ("diffusers", "hf"):
            return (diffusers_names() or {}).get(component)
        if parts.layout == "diffusers" and scheme in ("ldm", "openclip"):
            key = f"{component}:{scheme}"
            if key not in cache:
                cache[key] = {component: _original_modules(component, scheme, parts, flat)}
            return (cache[key] or {}).get(component)
        return None

    return rename


def _planned_modules(base_path: Path, flat: Callable[[str], str]) -> ModuleTable | None:
    from ..convert import plan_single_file_to_diffusers
    from ..formats import open_asset

    try:
        with open_asset(base_path) as asset:
            plan = plan_single_file_to_diffusers(asset)
    except AssetkitError:
        return None  # no conversion for this base: coverage stays "not checked"
    return {name: weight_table(((t.name, t.shape) for t in comp.tensors), flat)
            for name, comp in plan.components.items() if comp.tensors}


def _original_modules(component: str, scheme: str, parts: Any, flat: Callable[[str], str]
                      ) -> dict[str, tuple[int, ...]] | None:
    from ..convert.keymap import map_names
    from ..convert.layout_convert import component_rules

    config = parts.configs.get(component)
    tensors = parts.tensors.get(component)
    if not config or not tensors:
        return None
    kind = "unet" if scheme == "ldm" else "open_clip"
    if kind == "unet" and component != "unet":
        return None
    source = {n: (i.dtype, i.shape) for n, i in tensors.items()}
    try:
        mapped = map_names(component_rules(kind, config, source), source, "to_original")
    except (AssetkitError, KeyError, TypeError, ValueError):
        return None
    prefix = "model." if kind == "open_clip" else ""
    return weight_table(((t.name.removeprefix(prefix), t.shape) for t in mapped.targets), flat)

"""Key layouts: ordered ``tensor name -> (shape, dtype)`` tables, and the shared layouts on disk.

A layout is the full-size truth about a checkpoint: every tensor name with its real shape and
dtype. The writers (:mod:`assetkit.factory.writers`) turn a layout into a tiny file (shapes shrunk
by a documented rule) or a full-size zero-filled sparse file.

The shared layouts (``../shared/layouts/*.json`` beside the repository) were generated from the
original reference implementations of released checkpoints; they are read at runtime, never copied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: Environment variable that overrides where the shared layouts live.
LAYOUTS_ENV = "ASSETKIT_SHARED_LAYOUTS"

#: The shared layout files that exist (``<name>.json``).
SHARED_LAYOUT_NAMES = ("sd15", "sd21_768v", "sdxl_base", "controlnet_sd15", "vae_sd", "lora_sd15_kohya")


@dataclass(frozen=True)
class TensorDecl:
    """One tensor of a layout: its real (full-size) shape and its safetensors dtype id."""

    shape: tuple[int, ...]
    dtype: str = "F32"

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


#: name -> declaration, in the order a real file lists them.
Layout = dict[str, TensorDecl]


def default_layouts_dir() -> Path:
    """``$ASSETKIT_SHARED_LAYOUTS``, else ``<repo>/../shared/layouts``."""
    env = os.environ.get(LAYOUTS_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "layouts"


@lru_cache(maxsize=32)
def _read_layout_document(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_shared_layout(name: str, layouts_dir: str | Path | None = None, *,
                       include_optional: bool = False) -> Layout:
    """Read ``<layouts_dir>/<name>.json`` into a :data:`Layout` (a fresh dict each call).

    ``include_optional`` adds the ``optional_keys`` (e.g. ``model_ema.decay``) after the keys.
    """
    directory = Path(layouts_dir) if layouts_dir is not None else default_layouts_dir()
    path = directory / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"shared layout {name!r} not found at {path}")
    document = _read_layout_document(str(path))
    sections: list[Mapping] = [document["keys"]]
    if include_optional:
        sections.append(document.get("optional_keys") or {})
    layout: Layout = {}
    for section in sections:
        for key, entry in section.items():
            layout[key] = TensorDecl(tuple(int(d) for d in entry["shape"]), str(entry["dtype"]))
    return layout


def available_shared_layouts(layouts_dir: str | Path | None = None) -> list[str]:
    """Names of the shared layout files present on disk."""
    directory = Path(layouts_dir) if layouts_dir is not None else default_layouts_dir()
    return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []


# --- small helpers to compose layouts -------------------------------------------------------------


def with_prefix(layout: Mapping[str, TensorDecl], prefix: str) -> Layout:
    """Every name prefixed with ``prefix``."""
    return {prefix + name: decl for name, decl in layout.items()}


def strip_prefix(layout: Mapping[str, TensorDecl], prefix: str) -> Layout:
    """Only the names under ``prefix``, with the prefix removed."""
    return {name[len(prefix):]: decl for name, decl in layout.items() if name.startswith(prefix)}


def select(layout: Mapping[str, TensorDecl], prefixes: Iterable[str]) -> Layout:
    """Only the names that start with one of ``prefixes`` (names unchanged)."""
    wanted = tuple(prefixes)
    return {name: decl for name, decl in layout.items() if name.startswith(wanted)}


def with_dtype(layout: Mapping[str, TensorDecl], dtype: str) -> Layout:
    """Floating tensors recast to ``dtype``; integer buffers (``position_ids``) keep theirs."""
    floats = {"F16", "BF16", "F32", "F64"}
    return {name: TensorDecl(decl.shape, dtype if decl.dtype in floats else decl.dtype)
            for name, decl in layout.items()}


def replace_shape(layout: Layout, name: str, shape: tuple[int, ...]) -> Layout:
    """A copy of ``layout`` with one tensor's shape changed (the name must exist)."""
    if name not in layout:
        raise KeyError(f"{name!r} is not in the layout")
    copy = dict(layout)
    copy[name] = TensorDecl(tuple(shape), layout[name].dtype)
    return copy


def parameters(layout: Mapping[str, TensorDecl]) -> int:
    """Total element count of a layout."""
    return sum(decl.numel for decl in layout.values())

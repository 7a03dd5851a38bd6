"""SD3/SD3.5 and Flux.1 transformers alone between the original layout and a diffusers component
folder: which rule module, which catalogue config (by the model the probe names), the shapes and
block names that tell a file and a config apart, and the ModelSpec of the way back.

The rows live in ``registry/layouts.json``: ``configs`` rows of kind ``transformer`` (with the
``model`` and ``in_channels`` they serve and their ModelSpec ``architecture``) and the
``single_file`` layouts ``sd3-transformer`` / ``flux-transformer`` (one component,
``transformer``). :mod:`assetkit.convert.layout_convert` drives the conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import catalogue
from ..errors import AssetkitError
from .keymap import Rule
from .layouts.flux import flux_decisive_shapes, flux_transformer_rules
from .layouts.sd3 import sd3_decisive_shapes, sd3_transformer_rules

#: family -> the single_file layout of its transformer alone
LAYOUTS = {"sd3": "sd3-transformer", "flux": "flux-transformer"}
#: diffusers class -> layout (a folder without a sidecar)
CLASS_LAYOUTS = {"SD3Transformer2DModel": "sd3-transformer", "FluxTransformer2DModel": "flux-transformer"}
#: rule-module kind (second column of single_file) -> rules, decisive shapes, original top-level names
RULES: dict[str, tuple[Callable[[dict], list[Rule]], Callable[[dict], dict[str, tuple[int, ...]]], tuple[str, ...]]] = {
    "sd3_transformer": (sd3_transformer_rules, sd3_decisive_shapes,
                        ("pos_embed", "x_embedder", "t_embedder", "y_embedder", "context_embedder", "joint_blocks",
                         "final_layer")),
    "flux_transformer": (flux_transformer_rules, flux_decisive_shapes,
                         ("img_in", "txt_in", "time_in", "vector_in", "guidance_in", "double_blocks", "single_blocks",
                          "final_layer")),
}
_IMPLEMENTATION = {"sd3": "https://github.com/Stability-AI/sd3.5", "flux": "https://github.com/black-forest-labs/flux"}
_GENERIC_ARCHITECTURE = {"sd3": "stable-diffusion-3", "flux": "flux-1"}
#: config entries that decide which released model a config is
_COMMON_KEYS = ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size",
                "joint_attention_dim", "pooled_projection_dim")
_WEIGHT_KEYS = {"sd3": (*_COMMON_KEYS, "caption_projection_dim", "qk_norm", "dual_attention_layers", "pos_embed_max_size"),
                "flux": (*_COMMON_KEYS, "num_single_layers", "guidance_embeds")}


class TransformerLayoutError(AssetkitError):
    """A transformer file that no catalogue config serves, or that does not fit the given config."""


def _rows() -> list[dict[str, Any]]:
    return [r for r in catalogue.load("layouts.json")["configs"] if r["kind"] == "transformer"]


def choose_config(family: str | None, details: Mapping[str, Any], where: str) -> str:
    """The catalogue config id for a transformer the probe described (``details``: its ``model``
    and ``in_channels``); a one-line error naming what is known when none fits."""
    rows = [r for r in _rows() if r["family"] == family]
    fits = [r for r in rows if r["model"] == details.get("model") and r["in_channels"] == details.get("in_channels")]
    if fits:
        return fits[0]["id"]
    seen = f"{details.get('model') or 'an unreleased size'} (width {details.get('hidden_size')}, " \
           f"{details.get('depth')} blocks, {details.get('in_channels')} input channels)"
    raise TransformerLayoutError(f"no catalogue config for this {family or 'unknown'} transformer: {seen}; known: "
                                 f"{', '.join(r['id'] for r in rows) or 'none'}; pass --config DIR", where=where)


def leftovers(kind: str, unmatched: Iterable[str], prefix: str) -> list[str]:
    """Source names under the transformer's own top-level modules that the config's rules do not
    claim: more blocks, or a guidance embedder, than the config has (a file/config mismatch)."""
    heads = RULES[kind][2]
    return [n for n in unmatched if n.startswith(prefix) and n[len(prefix):].split(".", 1)[0] in heads]


def _architecture(family: str, config: Mapping[str, Any]) -> str:
    """The ModelSpec architecture of the catalogue config equal to ``config`` (weights-wise), else
    the family's generic one (a tiny or custom model)."""
    mine = _normalised(family, config)
    for row in _rows():
        if row["family"] != family:
            continue
        if _normalised(family, catalogue.load(f"configs/{row['id']}/transformer/config.json")) == mine:
            return row["architecture"]
    return _GENERIC_ARCHITECTURE[family]


def _normalised(family: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The entries that shape the weights, tuples as lists; unset ones (None, empty) dropped, since a
    config diffusers saved spells out every default and a Hub one often leaves them out."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()
            if k in _WEIGHT_KEYS[family] and v is not None and v != [] and v != ()}


def modelspec(layout: str, config: Mapping[str, Any], title: str, digest: str) -> dict[str, str]:
    """ModelSpec metadata for a transformer alone (no prediction type: both are flow-matching models)."""
    family = next(f for f, name in LAYOUTS.items() if name == layout)
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": _architecture(family, config),
            "modelspec.implementation": _IMPLEMENTATION[family], "modelspec.title": Path(title).name,
            "modelspec.resolution": "1024x1024", "modelspec.hash_sha256": "0x" + digest}

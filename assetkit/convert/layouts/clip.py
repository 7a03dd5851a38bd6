"""CLIP text encoders: transformers' ``CLIPTextModel(WithProjection)`` <-> the original namings.

* OpenAI CLIP-L as the LDM/SGM files hold it: transformers names under ``transformer.``, with or
  without ``text_model.`` (both namings transformers has used); identity rules.
* open_clip (OpenCLIP-H for SD2, bigG for SDXL) under ``model.``: ``resblocks`` and the fused
  attention ``in_proj`` (split into q/k/v), ``text_projection`` stored transposed. Blocks beyond
  the config's ``num_hidden_layers`` (SD2's 24th), ``logit_scale`` and, without a projection in
  the target class, ``text_projection`` have no place in diffusers: they stay unmatched (extras).
"""

from __future__ import annotations

from typing import Any

from ..keymap import Rule, params, rename


def _hf_names(config: dict[str, Any]) -> list[str]:
    names = ["embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
             "final_layer_norm.weight", "final_layer_norm.bias"]
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layers.{i}."
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                  "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            names += [f"{p}{m}.weight", f"{p}{m}.bias"]
    return names


def _has_projection(config: dict[str, Any]) -> bool:
    return "CLIPTextModelWithProjection" in (config.get("architectures") or [])


def diffusers_prefix(config: dict[str, Any], names: Any = None) -> str:
    """The prefix of the transformer weights in a transformers text-encoder folder: transformers 5
    saves ``CLIPTextModel`` without ``text_model.`` and ``CLIPTextModelWithProjection`` with it;
    given the folder's tensor ``names``, whichever naming they use."""
    if names is not None:
        names = list(names)
        if names:
            return "text_model." if any(n.startswith("text_model.") for n in names) else ""
    return "text_model." if _has_projection(config) else ""


def clip_text_rules(config: dict[str, Any], *, text_model_prefix: bool = True, target_prefix: str | None = None
                    ) -> list[Rule]:
    """transformers naming on both sides (``transformer.text_model.X`` <-> ``[text_model.]X``)."""
    src = "transformer.text_model." if text_model_prefix else "transformer."
    t = diffusers_prefix(config) if target_prefix is None else target_prefix
    rules = [rename(src + n, t + n) for n in _hf_names(config)]
    if _has_projection(config):
        rules.append(rename("transformer.text_projection.weight", "text_projection.weight"))
    return rules


def open_clip_text_rules(config: dict[str, Any], *, target_prefix: str | None = None) -> list[Rule]:
    """open_clip naming (``model.transformer.resblocks.N...``) <-> transformers naming."""
    t = diffusers_prefix(config) if target_prefix is None else target_prefix
    rules = [rename("model.token_embedding.weight", t + "embeddings.token_embedding.weight"),
             rename("model.positional_embedding", t + "embeddings.position_embedding.weight"),
             *params("model.ln_final", t + "final_layer_norm")]
    for i in range(config["num_hidden_layers"]):
        o, d = f"model.transformer.resblocks.{i}", f"{t}encoder.layers.{i}"
        for kind in ("weight", "bias"):
            rules.append(Rule((f"{o}.attn.in_proj_{kind}",),
                              tuple(f"{d}.self_attn.{q}_proj.{kind}" for q in ("q", "k", "v")), "split"))
        rules += [*params(f"{o}.attn.out_proj", f"{d}.self_attn.out_proj"), *params(f"{o}.ln_1", f"{d}.layer_norm1"),
                  *params(f"{o}.ln_2", f"{d}.layer_norm2"), *params(f"{o}.mlp.c_fc", f"{d}.mlp.fc1"),
                  *params(f"{o}.mlp.c_proj", f"{d}.mlp.fc2")]
    if _has_projection(config):
        rules.append(Rule(("model.text_projection",), ("text_projection.weight",), "transpose"))
    return rules

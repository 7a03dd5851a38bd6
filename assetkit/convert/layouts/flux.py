"""FluxTransformer2DModel <-> Black Forest Labs' original ``Flux`` (``flux1-dev.safetensors``,
``model.diffusion_model.*`` in a ComfyUI checkpoint), driven by the diffusers config: double and
single block counts, width, the guidance embedder (dev, not schnell).

Double blocks split each stream's fused ``qkv``; a single block's ``linear1`` is q, k, v and the
MLP input in one tensor (three widths and four widths: unequal parts). The final layer's
modulation holds (shift, scale) where diffusers wants (scale, shift): a ``swap``.
"""

from __future__ import annotations

from typing import Any

from ..keymap import Rule, params, rename, split

#: diffusers' FluxSingleTransformerBlock hard-codes its MLP ratio (not in the config)
MLP_RATIO = 4


def _width(config: dict[str, Any]) -> int:
    return int(config.get("num_attention_heads", 24)) * int(config.get("attention_head_dim", 128))


def _qkv(original: str, diffusers: str, names: tuple[str, ...], sizes: tuple[int, ...] = ()) -> list[Rule]:
    return [split(f"{original}.{p}", [f"{diffusers}{n}.{p}" for n in names], sizes) for p in ("weight", "bias")]


def _double(i: int) -> list[Rule]:
    o, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
    rules = [*params(f"{o}.img_mod.lin", f"{d}.norm1.linear"), *params(f"{o}.txt_mod.lin", f"{d}.norm1_context.linear"),
             *_qkv(f"{o}.img_attn.qkv", f"{d}.attn.", ("to_q", "to_k", "to_v")),
             *_qkv(f"{o}.txt_attn.qkv", f"{d}.attn.", ("add_q_proj", "add_k_proj", "add_v_proj")),
             rename(f"{o}.img_attn.norm.query_norm.scale", f"{d}.attn.norm_q.weight"),
             rename(f"{o}.img_attn.norm.key_norm.scale", f"{d}.attn.norm_k.weight"),
             rename(f"{o}.txt_attn.norm.query_norm.scale", f"{d}.attn.norm_added_q.weight"),
             rename(f"{o}.txt_attn.norm.key_norm.scale", f"{d}.attn.norm_added_k.weight"),
             *params(f"{o}.img_attn.proj", f"{d}.attn.to_out.0"), *params(f"{o}.txt_attn.proj", f"{d}.attn.to_add_out"),
             *params(f"{o}.img_mlp.0", f"{d}.ff.net.0.proj"), *params(f"{o}.img_mlp.2", f"{d}.ff.net.2"),
             *params(f"{o}.txt_mlp.0", f"{d}.ff_context.net.0.proj"), *params(f"{o}.txt_mlp.2", f"{d}.ff_context.net.2")]
    return rules


def _single(i: int, width: int) -> list[Rule]:
    o, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
    sizes = (width, width, width, MLP_RATIO * width)
    return [*params(f"{o}.modulation.lin", f"{d}.norm.linear"),
            *_qkv(f"{o}.linear1", f"{d}.", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), sizes),
            rename(f"{o}.norm.query_norm.scale", f"{d}.attn.norm_q.weight"),
            rename(f"{o}.norm.key_norm.scale", f"{d}.attn.norm_k.weight"),
            *params(f"{o}.linear2", f"{d}.proj_out")]


def flux_transformer_rules(config: dict[str, Any]) -> list[Rule]:
    """Every tensor of a FluxTransformer2DModel with this config, original <-> diffusers names."""
    width = _width(config)
    rules = [*params("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
             *params("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
             *params("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
             *params("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")]
    if config.get("guidance_embeds", False):
        rules += [*params("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                  *params("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")]
    rules += [*params("txt_in", "context_embedder"), *params("img_in", "x_embedder")]
    for i in range(int(config.get("num_layers", 19))):
        rules += _double(i)
    for i in range(int(config.get("num_single_layers", 38))):
        rules += _single(i, width)
    rules += [*params("final_layer.linear", "proj_out"),
              *(Rule((f"final_layer.adaLN_modulation.1.{p}",), (f"norm_out.linear.{p}",), "swap")
                for p in ("weight", "bias"))]
    return rules


def flux_decisive_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Diffusers tensor shapes the config fixes (width, input channels, context width)."""
    width = _width(config)
    patch = int(config.get("patch_size", 1))
    channels = int(config.get("in_channels", 64))
    return {"x_embedder.weight": (width, channels * patch * patch),
            "context_embedder.weight": (width, int(config.get("joint_attention_dim", 4096))),
            "proj_out.weight": (int(config.get("out_channels") or channels) * patch * patch, width)}

"""SD3Transformer2DModel <-> the original SD3/SD3.5 ``MMDiT`` (Stability's sd3 reference code,
``model.diffusion_model.*`` in a full checkpoint, bare in a transformer file), driven by the
diffusers config: depth, qk RMS norm (SD3.5), MMDiT-X dual-attention blocks (SD3.5 medium).

The fused ``attn.qkv`` of each stream splits into q/k/v. The last joint block's context stream is
"pre-only" (no output projection, no MLP), and its modulation, like the final layer's, holds
(shift, scale) where diffusers' ``AdaLayerNormContinuous`` wants (scale, shift): a ``swap``.
"""

from __future__ import annotations

from typing import Any

from ..keymap import Rule, params, rename, split

_QKV = ("to_q", "to_k", "to_v")
_ADDED_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")


def _qkv(original: str, diffusers: str, names: tuple[str, ...]) -> list[Rule]:
    return [split(f"{original}.{p}", [f"{diffusers}.{n}.{p}" for n in names]) for p in ("weight", "bias")]


def _swap(original: str, diffusers: str) -> list[Rule]:
    return [Rule((f"{original}.{p}",), (f"{diffusers}.{p}",), "swap") for p in ("weight", "bias")]


def _block(i: int, last: bool, dual: bool, qk_norm: bool) -> list[Rule]:
    o, d = f"joint_blocks.{i}", f"transformer_blocks.{i}"
    x, c = f"{o}.x_block", f"{o}.context_block"
    rules = [*_qkv(f"{x}.attn.qkv", f"{d}.attn", _QKV), *_qkv(f"{c}.attn.qkv", f"{d}.attn", _ADDED_QKV),
             *params(f"{x}.attn.proj", f"{d}.attn.to_out.0"), *params(f"{x}.adaLN_modulation.1", f"{d}.norm1.linear"),
             *params(f"{x}.mlp.fc1", f"{d}.ff.net.0.proj"), *params(f"{x}.mlp.fc2", f"{d}.ff.net.2")]
    if qk_norm:
        rules += [rename(f"{x}.attn.ln_q.weight", f"{d}.attn.norm_q.weight"),
                  rename(f"{x}.attn.ln_k.weight", f"{d}.attn.norm_k.weight"),
                  rename(f"{c}.attn.ln_q.weight", f"{d}.attn.norm_added_q.weight"),
                  rename(f"{c}.attn.ln_k.weight", f"{d}.attn.norm_added_k.weight")]
    if last:  # context pre-only: AdaLayerNormContinuous, nothing after the attention
        rules += _swap(f"{c}.adaLN_modulation.1", f"{d}.norm1_context.linear")
    else:
        rules += [*params(f"{c}.attn.proj", f"{d}.attn.to_add_out"),
                  *params(f"{c}.adaLN_modulation.1", f"{d}.norm1_context.linear"),
                  *params(f"{c}.mlp.fc1", f"{d}.ff_context.net.0.proj"), *params(f"{c}.mlp.fc2", f"{d}.ff_context.net.2")]
    if dual:  # MMDiT-X: a second self-attention on the image stream
        rules += [*_qkv(f"{x}.attn2.qkv", f"{d}.attn2", _QKV), *params(f"{x}.attn2.proj", f"{d}.attn2.to_out.0")]
        if qk_norm:
            rules += [rename(f"{x}.attn2.ln_q.weight", f"{d}.attn2.norm_q.weight"),
                      rename(f"{x}.attn2.ln_k.weight", f"{d}.attn2.norm_k.weight")]
    return rules


def sd3_transformer_rules(config: dict[str, Any]) -> list[Rule]:
    """Every tensor of an SD3Transformer2DModel with this config, original <-> diffusers names."""
    layers = int(config.get("num_layers", 18))
    dual = set(config.get("dual_attention_layers") or ())
    qk_norm = config.get("qk_norm") is not None
    rules = [rename("pos_embed", "pos_embed.pos_embed"), *params("x_embedder.proj", "pos_embed.proj"),
             *params("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
             *params("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
             *params("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
             *params("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
             *params("context_embedder")]
    for i in range(layers):
        rules += _block(i, i == layers - 1, i in dual, qk_norm)
    rules += [*params("final_layer.linear", "proj_out"), *_swap("final_layer.adaLN_modulation.1", "norm_out.linear")]
    return rules


def sd3_decisive_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Diffusers tensor shapes the config fixes (width, latent channels, patch, context width)."""
    width = int(config.get("num_attention_heads", 18)) * int(config.get("attention_head_dim", 64))
    patch = int(config.get("patch_size", 2))
    return {"pos_embed.proj.weight": (width, int(config.get("in_channels", 16)), patch, patch),
            "context_embedder.weight": (int(config.get("caption_projection_dim", 1152)),
                                        int(config.get("joint_attention_dim", 4096))),
            "proj_out.weight": (patch * patch * int(config.get("out_channels") or config.get("in_channels", 16)), width)}

"""UNet2DConditionModel <-> the original LDM/SGM ``UNetModel`` (``model.diffusion_model.*``),
driven by the diffusers config: block counts, channels, attention blocks, transformer depths,
SDXL's added time/text embedding. Transformer internals have the same names on both sides."""

from __future__ import annotations

from typing import Any

from ..keymap import Rule, params


def _per_block(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value] * n


def _at(depth: Any, j: int) -> int:
    """A block's transformer depth for its ``j``-th layer: one number for the block, or one per
    layer (SSD-1B/Vega-style configs: ``transformer_layers_per_block: [1, [2, 1]]``)."""
    return int(depth[j]) if isinstance(depth, list | tuple) else int(depth)


def resnet_rules(original: str, diffusers: str, shortcut: bool, time_embedding: bool = True) -> list[Rule]:
    """A ResBlock: LDM ``in_layers/emb_layers/out_layers/skip_connection`` <-> diffusers names."""
    rules = [*params(f"{original}.in_layers.0", f"{diffusers}.norm1"), *params(f"{original}.in_layers.2", f"{diffusers}.conv1"),
             *params(f"{original}.out_layers.0", f"{diffusers}.norm2"), *params(f"{original}.out_layers.3", f"{diffusers}.conv2")]
    if time_embedding:
        rules += params(f"{original}.emb_layers.1", f"{diffusers}.time_emb_proj")
    if shortcut:
        rules += params(f"{original}.skip_connection", f"{diffusers}.conv_shortcut")
    return rules


def transformer_rules(original: str, diffusers: str, depth: int) -> list[Rule]:
    """A SpatialTransformer / Transformer2DModel (identical names on both sides)."""
    names = ["norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias"]
    for t in range(depth):
        b = f"transformer_blocks.{t}."
        for attn in ("attn1", "attn2"):
            names += [f"{b}{attn}.to_q.weight", f"{b}{attn}.to_k.weight", f"{b}{attn}.to_v.weight",
                      f"{b}{attn}.to_out.0.weight", f"{b}{attn}.to_out.0.bias"]
        for norm in ("norm1", "norm2", "norm3"):
            names += [f"{b}{norm}.weight", f"{b}{norm}.bias"]
        names += [f"{b}ff.net.0.proj.weight", f"{b}ff.net.0.proj.bias", f"{b}ff.net.2.weight", f"{b}ff.net.2.bias"]
    return [Rule((f"{original}.{n}",), (f"{diffusers}.{n}",)) for n in names]


def encoder_rules(config: dict[str, Any]) -> tuple[list[Rule], list[tuple[int, int]]]:
    """Embeddings, ``conv_in``, the down blocks and the middle block (what a ControlNet shares).
    Also returns each ``input_blocks`` output's (block index, channels), for ControlNet zero convs."""
    channels = list(config["block_out_channels"])
    n = len(channels)
    layers = _per_block(config.get("layers_per_block", 2), n)
    depth = _per_block(config.get("transformer_layers_per_block", 1), n)
    down_types = list(config["down_block_types"])
    rules = [*params("time_embed.0", "time_embedding.linear_1"), *params("time_embed.2", "time_embedding.linear_2"),
             *params("input_blocks.0.0", "conv_in")]
    if config.get("addition_embed_type") == "text_time":
        rules += [*params("label_emb.0.0", "add_embedding.linear_1"), *params("label_emb.0.2", "add_embedding.linear_2")]
    elif config.get("addition_embed_type") is not None or config.get("class_embed_type") is not None:
        raise NotImplementedError("UNets with class or other added embeddings have no key map yet")
    outputs = [(0, channels[0])]
    k = 1
    prev = channels[0]
    for i, ch in enumerate(channels):
        attn = down_types[i].startswith("CrossAttn")
        for j in range(layers[i]):
            rules += resnet_rules(f"input_blocks.{k}.0", f"down_blocks.{i}.resnets.{j}", shortcut=prev != ch)
            if attn:
                rules += transformer_rules(f"input_blocks.{k}.1", f"down_blocks.{i}.attentions.{j}", _at(depth[i], j))
            outputs.append((k, ch))
            prev = ch
            k += 1
        if i < n - 1:
            rules += params(f"input_blocks.{k}.0.op", f"down_blocks.{i}.downsamplers.0.conv")
            outputs.append((k, ch))
            k += 1
    mid_depth = _at(depth[-1], 0)  # as diffusers' UNetMidBlock2DCrossAttn reads the last block's entry
    rules += resnet_rules("middle_block.0", "mid_block.resnets.0", shortcut=False)
    rules += transformer_rules("middle_block.1", "mid_block.attentions.0", mid_depth)
    rules += resnet_rules("middle_block.2", "mid_block.resnets.1", shortcut=False)
    return rules, outputs


def unet_rules(config: dict[str, Any]) -> list[Rule]:
    """Every tensor of a UNet2DConditionModel with this config, original <-> diffusers names."""
    rules, _ = encoder_rules(config)
    channels = list(config["block_out_channels"])
    n = len(channels)
    layers = _per_block(config.get("layers_per_block", 2), n)
    rev_layers = list(reversed(layers))
    depth = _per_block(config.get("transformer_layers_per_block", 1), n)
    reverse = config.get("reverse_transformer_layers_per_block")
    if reverse is None and any(isinstance(d, list | tuple) for d in depth):
        raise ValueError("transformer_layers_per_block has per-layer lists but the config has no "
                         "reverse_transformer_layers_per_block (diffusers needs it for such a UNet too)")
    rev_depth = list(reverse) if reverse is not None else list(reversed(depth))
    up_types = list(config["up_block_types"])
    k = 0
    for i in range(n):
        attn = up_types[i].startswith("CrossAttn")
        for j in range(rev_layers[i] + 1):
            rules += resnet_rules(f"output_blocks.{k}.0", f"up_blocks.{i}.resnets.{j}", shortcut=True)
            if attn:
                rules += transformer_rules(f"output_blocks.{k}.1", f"up_blocks.{i}.attentions.{j}", _at(rev_depth[i], j))
            if j == rev_layers[i] and i < n - 1:
                rules += params(f"output_blocks.{k}.{2 if attn else 1}.conv", f"up_blocks.{i}.upsamplers.0.conv")
            k += 1
    rules += [*params("out.0", "conv_norm_out"), *params("out.2", "conv_out")]
    return rules

"""AutoencoderKL <-> the original LDM ``AutoencoderKL`` (``first_stage_model.*`` or a bare VAE
file), driven by the diffusers config. The mid-block attention is 1x1 convolutions in the
original and linear layers in diffusers (``squeeze``)."""

from __future__ import annotations

from typing import Any

from ..keymap import Rule, params


def _resnet(original: str, diffusers: str, shortcut: bool) -> list[Rule]:
    rules = [*params(f"{original}.norm1", f"{diffusers}.norm1"), *params(f"{original}.conv1", f"{diffusers}.conv1"),
             *params(f"{original}.norm2", f"{diffusers}.norm2"), *params(f"{original}.conv2", f"{diffusers}.conv2")]
    if shortcut:
        rules += params(f"{original}.nin_shortcut", f"{diffusers}.conv_shortcut")
    return rules


def _mid(original: str, diffusers: str, channels: int) -> list[Rule]:
    rules = _resnet(f"{original}.block_1", f"{diffusers}.resnets.0", False)
    a, d = f"{original}.attn_1", f"{diffusers}.attentions.0"
    rules += params(f"{a}.norm", f"{d}.group_norm")
    for o, t in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        rules += [Rule((f"{a}.{o}.weight",), (f"{d}.{t}.weight",), "squeeze"),
                  Rule((f"{a}.{o}.bias",), (f"{d}.{t}.bias",))]
    rules += _resnet(f"{original}.block_2", f"{diffusers}.resnets.1", False)
    del channels
    return rules


def vae_rules(config: dict[str, Any]) -> list[Rule]:
    """Every tensor of an AutoencoderKL with this config, original <-> diffusers names."""
    channels = list(config["block_out_channels"])
    n = len(channels)
    layers = config.get("layers_per_block", 2)
    rules = [*params("encoder.conv_in"), *params("encoder.norm_out", "encoder.conv_norm_out"), *params("encoder.conv_out")]
    prev = channels[0]
    for i, ch in enumerate(channels):
        for j in range(layers):
            rules += _resnet(f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", prev != ch)
            prev = ch
        if i < n - 1:
            rules += params(f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv")
    rules += _mid("encoder.mid", "encoder.mid_block", channels[-1])
    rules += [*params("decoder.conv_in"), *params("decoder.norm_out", "decoder.conv_norm_out"), *params("decoder.conv_out")]
    rules += _mid("decoder.mid", "decoder.mid_block", channels[-1])
    rev = list(reversed(channels))
    prev = rev[0]
    for i, ch in enumerate(rev):
        level = n - 1 - i
        for j in range(layers + 1):
            rules += _resnet(f"decoder.up.{level}.block.{j}", f"decoder.up_blocks.{i}.resnets.{j}", prev != ch)
            prev = ch
        if i < n - 1:
            rules += params(f"decoder.up.{level}.upsample.conv", f"decoder.up_blocks.{i}.upsamplers.0.conv")
    if config.get("use_quant_conv", True):
        rules += params("quant_conv")
    if config.get("use_post_quant_conv", True):
        rules += params("post_quant_conv")
    return rules
